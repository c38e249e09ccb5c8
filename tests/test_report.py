"""The report runner's own records: timings.json (per notebook, per cell, the sweep's phases) and an
HTML export whose formulas show without network access."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from rmsnorm_lab.report import export_html, format_timings, run_report

ROOT = Path(__file__).resolve().parents[1]


def test_formulas_are_rendered_into_the_html(tmp_path):
    nb = tmp_path / "01_correctness.ipynb"
    shutil.copy(ROOT / "notebooks" / "01_correctness.ipynb", nb)
    html = export_html(nb).read_text()
    assert "data:image/svg+xml;base64," in html
    assert r"\odot w$$" not in html          # the raw TeX is gone (it stays as the alt text)


@pytest.mark.slow
def test_report_records_wall_times(tmp_path, capsys):
    """One notebook (03, seconds): timings.json holds its wall time, kernel start, cells and HTML export."""
    from rmsnorm_lab.device import device_name, slug
    from rmsnorm_lab.sweep import run_sweep
    run_sweep(hidden=[32], batch=[1], seq=[2], dtypes=["float32"], residual=[False], impls=["torch"], device="cpu",
              modes=["cold"], budget_ms=1, progress=False, save_path=str(tmp_path / slug(device_name("cpu")) / "t"))
    run = run_report("ci", "t", tmp_path, "cpu", ["03_compare_runs"], html=True)
    t = json.loads((run / "timings.json").read_text())
    nb = t["notebooks"]["03_compare_runs"]
    assert t["total_s"] >= nb["wall_s"] >= nb["cells_s"] > 0 and nb["html_s"] >= 0 and nb["overhead_s"] >= 0
    assert nb["cells"] and all({"cell", "s", "code"} <= set(c) for c in nb["cells"])
    assert "wall time:" in capsys.readouterr().out
    text = format_timings({**t, "sweep": {"phases": {"check:torch": 1.0, "time_cold:torch": 2.0,
                                                     "time_cold:triton": 3.0}}})
    assert "time_cold 5.0 s, check 1.0 s" in text


def test_ahead_prewarm_reports_and_never_fails_the_report():
    import multiprocessing as mp

    from rmsnorm_lab.prewarm import warm_job
    from rmsnorm_lab.report import AheadPrewarm

    assert AheadPrewarm.start({"hidden_sizes": [64]}, "cpu") is None       # CUDA only
    assert AheadPrewarm.start({}, "cuda") is None                          # a preset it cannot read: no prewarm
    assert AheadPrewarm.applies({"variant": "plain", "pass_": "fwd"}, "cuda") and AheadPrewarm.applies({}, "cuda:1")
    for other in ({"variant": "gemma"}, {"pass_": "fwd+bwd"}):             # the jobs are the plain forward's
        assert not AheadPrewarm.applies(other, "cuda")
    assert not AheadPrewarm.applies({}, "cpu")
    pool = mp.get_context("spawn").Pool(1)
    got = AheadPrewarm(pool, pool.map_async(warm_job, [("_no_such_impl", 1)]), 1).wait()
    assert got["jobs"] == 1 and got["failed"] == 1 and "_no_such_impl" in got["first_error"]


def test_build_ahead_reports_and_never_fails_the_report():
    """Entries that build on load start building as the report starts (CUDA only); what they report."""
    import multiprocessing as mp

    from rmsnorm_lab.report import BuildAhead, _build_entry

    assert BuildAhead.start({"impls": ["all"]}, "cpu") is None             # CUDA only
    assert BuildAhead.start({"impls": ["_no_such_impl"]}, "cuda") is None  # a name it cannot read: nothing
    end, err = _build_entry("_no_such_impl")
    assert end > 0 and "_no_such_impl" in err
    pool = mp.get_context("spawn").Pool(1)
    b = BuildAhead(pool, {"torch": pool.apply_async(_build_entry, ("torch",)),
                          "_x": pool.apply_async(_build_entry, ("_no_such_impl",))}, 0.0)
    b.results["torch"].wait(60)
    b.results["_x"].wait(60)
    got = b.done()
    assert got["torch"]["error"] == "" and got["torch"]["ready_s"] > 0
    assert "_no_such_impl" in got["_x"]["error"]
    text = format_timings({"total_s": 1.0, "device": "d", "preset": "p", "notebooks": {}, "build_ahead": got})
    assert "built ahead: torch by" in text


def test_host_cpu_busy_and_cores():
    from rmsnorm_lab.device import physical_cores
    from rmsnorm_lab.report import busy_between

    assert busy_between((10, 100), (40, 200)) == 0.3
    assert busy_between(None, (1, 2)) is None and busy_between((1, 2), (1, 2)) is None
    info = "processor: 0\nphysical id: 0\ncore id: 0\n\nprocessor: 1\nphysical id: 0\ncore id: 0\n\n" \
           "processor: 2\nphysical id: 0\ncore id: 1\n"
    p = Path(__import__("tempfile").mkdtemp()) / "cpuinfo"
    p.write_text(info)
    assert physical_cores(str(p)) == 2                       # three logical CPUs on two cores
    assert physical_cores(str(p) + ".missing") is None
