"""analysis / plots: run discovery by device and preset, the one status vocabulary, nothing named by hand."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]


def _save(d: Path, gpu: str, hidden, time: str, us: float = 5.0):
    d.mkdir(parents=True)
    rows = [dict(impl="vllm", dtype="bfloat16", hidden=h, batch=1, seq=4, tokens=4, residual=False, mode="cold",
                 status="ok", us_median=us, us_p20=us * 0.99, us_p80=us * 1.01, gpu_name=gpu) for h in hidden]
    pd.DataFrame(rows).to_csv(d / "results.csv", index=False)
    (d / "env.json").write_text(json.dumps({"gpu_name": gpu, "time": time, "config": {
        "hidden": hidden, "batch": [1], "seq": [4], "tokens": None, "dtypes": ["bfloat16"], "residual": [False]}}))


def test_discover_runs_of_the_same_device_and_preset(tmp_path):
    from rmsnorm_lab import analysis
    _save(tmp_path / "a" / "r1", "GPU-A", [64], "2026-01-01")
    _save(tmp_path / "a" / "r2", "GPU-A", [64], "2026-01-03")
    _save(tmp_path / "a" / "other-grid", "GPU-A", [128], "2026-01-04")
    _save(tmp_path / "b" / "r1", "GPU-B", [64], "2026-01-05")
    assert len(analysis.discover_runs(tmp_path)) == 4
    like = analysis.discover_runs(tmp_path, like=tmp_path / "a" / "r2")
    assert [p.name for p in like] == ["r1", "r2"]
    assert analysis.discover_runs(tmp_path, like=tmp_path / "b" / "r1") == [tmp_path / "b" / "r1"]
    assert analysis.latest_run(analysis.discover_runs(tmp_path)) == tmp_path / "b" / "r1"
    assert analysis.latest_run([]) is None
    assert analysis.discover_runs(tmp_path / "nowhere") == []


def test_compare_runs_same_device_only(tmp_path):
    from rmsnorm_lab.analysis import compare_runs
    from rmsnorm_lab.results import load_results
    _save(tmp_path / "a", "GPU-A", [64], "t")
    _save(tmp_path / "b", "GPU-B", [64], "t", us=2.0)
    a, b = load_results(tmp_path / "a"), load_results(tmp_path / "b")
    assert len(compare_runs(a, b)) == 1 and compare_runs(a, b)["verdict"].iloc[0] == "faster"
    assert compare_runs(a, b, same_device=True).empty


def test_plot_colours_come_from_the_registry_or_the_name():
    from rmsnorm_lab.plots import color
    assert color("an-old-run-impl") == color("an-old-run-impl") and color("an-old-run-impl").startswith("#")


@pytest.mark.parametrize("module", ["analysis.py", "plots.py", "ab.py"])
def test_no_implementation_named_by_hand(module):
    from rmsnorm_lab.impls import registry
    src = (ROOT / "rmsnorm_lab" / module).read_text()
    for name in registry():
        assert not re.search(rf"[\"']{name}[\"']", src), f"{module} names {name!r}"
