"""The notebooks as stored (no outputs, python3 kernel, typed parameters), their presets and helpers,
and the papermill report runner on the ci preset.

The notebooks themselves run under ``pytest --nbval-lax --nbval-current-env notebooks/``.
"""
from __future__ import annotations

import ast
import json
import os
from pathlib import Path

import pytest

from rmsnorm_lab.paths import notebooks_dir, repo_root

ROOT = repo_root()
EXPECTED = ["01_correctness", "02_performance_sweep", "03_compare_runs"]
SKIP_DIRS = {"reports", "configs", "build", "dist", "node_modules"}


def _stored_notebooks() -> list[Path]:
    out = []
    for p in ROOT.rglob("*.ipynb"):
        rel = p.relative_to(ROOT)
        if any(part.startswith(".") or part in SKIP_DIRS for part in rel.parts[:-1]):
            continue
        out.append(p)
    return sorted(out)


NOTEBOOKS = _stored_notebooks()


def _load(p: Path) -> dict:
    return json.loads(p.read_text(encoding="utf-8"))


def test_the_three_notebooks_exist():
    names = {p.stem for p in NOTEBOOKS if p.parent == notebooks_dir()}
    assert set(EXPECTED) <= names


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: str(p.relative_to(ROOT)))
def test_stored_without_outputs(path):
    nb = _load(path)
    for i, cell in enumerate(nb["cells"]):
        if cell["cell_type"] == "code":
            assert cell.get("outputs") == [], f"{path.name}: cell {i} has outputs (strip them before committing)"
            assert cell.get("execution_count") is None, f"{path.name}: cell {i} has an execution count"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_cell_has_a_unique_id(path):
    """nbformat 4.5 cell ids (a cell without one makes nbformat warn and papermill invent one)."""
    import re
    nb = _load(path)
    ids = [c.get("id") for c in nb["cells"]]
    assert (nb["nbformat"], nb["nbformat_minor"]) >= (4, 5), path.name
    assert all(isinstance(i, str) and re.fullmatch(r"[a-zA-Z0-9_-]{1,64}", i) for i in ids), (path.name, ids)
    assert len(set(ids)) == len(ids), (path.name, ids)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: str(p.relative_to(ROOT)))
def test_kernelspec_python3(path):
    assert _load(path)["metadata"]["kernelspec"]["name"] == "python3"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: str(p.relative_to(ROOT)))
def test_parameters_cell_typed_and_documented(path):
    import papermill as pm

    nb = _load(path)
    tagged = [c for c in nb["cells"] if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(tagged) == 1, f"{path.name}: expected one cell tagged 'parameters', found {len(tagged)}"
    params = pm.inspect_notebook(str(path))
    src = "".join(tagged[0]["source"])
    n_assign = sum(1 for line in src.splitlines() if line and not line.startswith("#"))
    assert len(params) == n_assign, f"{path.name}: papermill --help-notebook sees {sorted(params)} only"
    for name, p in params.items():
        assert p["inferred_type_name"] not in ("None", ""), f"{path.name}: {name} has no type annotation"
        assert p["help"], f"{path.name}: {name} has no comment (papermill --help-notebook shows it)"


@pytest.mark.parametrize("path", [notebooks_dir() / f"{n}.ipynb" for n in EXPECTED], ids=EXPECTED)
def test_defaults_are_the_ci_preset_and_validate(path):
    import papermill as pm

    from rmsnorm_lab.cases import load_preset
    from rmsnorm_lab.params import validate_params

    defaults = {k: ast.literal_eval(v["default"]) for k, v in pm.inspect_notebook(str(path)).items()}
    ci = load_preset("ci")
    norm = validate_params(defaults)
    for k, v in ci.items():
        if k in defaults:
            assert norm[k] == validate_params({k: v})[k], f"{path.name}: default of {k} differs from ci.yaml"
    # the notebook validates its parameters right after the parameters cell
    cells = [c for c in _load(path)["cells"] if c["cell_type"] == "code"]
    i = next(j for j, c in enumerate(cells) if "parameters" in c.get("metadata", {}).get("tags", []))
    assert "validate_params(" in "".join(cells[i + 1]["source"])


def test_presets_validate_and_full_is_the_seed_grid():
    from rmsnorm_lab.cases import PRESET_DIR, SEED_BATCH, SEED_HIDDEN, SEED_SEQ, load_preset
    from rmsnorm_lab.params import validate_params

    assert {"ci", "full"} <= {p.stem for p in PRESET_DIR.glob("*.yaml")}
    for name in ("ci", "full"):
        validate_params(load_preset(name))
    full = validate_params(load_preset("full"))
    assert (full["hidden_sizes"], full["batch_sizes"], full["seq_lens"]) == (SEED_HIDDEN, SEED_BATCH, SEED_SEQ)
    assert full["residual"] == [False, True] and full["impls"] == "all"
    assert full["modes"] == ["cold", "graph"] and full["dtype"] == "bfloat16"


@pytest.mark.parametrize("name,value,exc,words", [
    ("hidden_sizes", "4096", TypeError, ["'hidden_sizes'", "'4096'", "list of positive integers", "-y"]),
    ("hidden_sizes", [4096, -1], ValueError, ["'hidden_sizes'", "-1", "positive"]),
    ("residual", "True", TypeError, ["'residual'", "'True'", "booleans"]),
    ("dtype", "int8", ValueError, ["'dtype'", "'int8'", "bfloat16"]),
    ("impls", ["hf"], ValueError, ["'impls'", "'hf'", "huggingface"]),
    ("modes", ["warm"], ValueError, ["'modes'", "'warm'", "cold"]),
    ("budget_ms", "40", TypeError, ["'budget_ms'", "'40'", "positive number"]),
    ("run_dirs", "reports/a", TypeError, ["'run_dirs'", "'reports/a'", "list of strings"]),
    ("no_such", 1, ValueError, ["'no_such'", "unknown parameter"]),
])
def test_validate_params_names_parameter_value_and_expectation(name, value, exc, words):
    from rmsnorm_lab.params import validate_params

    with pytest.raises(exc) as e:
        validate_params({name: value})
    for w in words:
        assert w in str(e.value), f"{w!r} not in {e.value}"


def test_paths_do_not_depend_on_the_working_directory(tmp_path, monkeypatch):
    from rmsnorm_lab import paths

    before = (paths.repo_root(), paths.notebooks_dir(), paths.resolve("reports"))
    monkeypatch.chdir(tmp_path)
    assert (paths.repo_root(), paths.notebooks_dir(), paths.resolve("reports")) == before
    assert (paths.notebooks_dir() / "01_correctness.ipynb").exists()
    assert paths.resolve(tmp_path) == tmp_path


def _fake_run(scale: float, noise: float = 0.02):
    import pandas as pd

    rows = []
    for impl, base in (("huggingface", 10.0), ("triton", 5.0)):
        for tokens in (64, 1024):
            us = base * tokens / 64 * (scale if impl == "triton" else 1.0)
            rows.append(dict(impl=impl, dtype="bfloat16", hidden=4096, batch=1, seq=tokens, tokens=tokens,
                             residual=False, mode="cold", status="ok", us_median=us, us_p20=us * (1 - noise),
                             us_p80=us * (1 + noise), pct_copy=50.0, speedup_vs_hf=10.0 / us, gpu_name="X"))
    return pd.DataFrame(rows)


def test_compare_runs_gives_verdicts_only_beyond_the_noise():
    from rmsnorm_lab.analysis import compare_runs, comparison_reading, fastest_per_shape

    base, other = _fake_run(1.0), _fake_run(0.5)         # triton twice as fast, HF unchanged
    cmp = compare_runs(base, other)
    v = dict(zip(zip(cmp["impl"], cmp["tokens"]), cmp["verdict"]))
    assert v[("triton", 64)] == v[("triton", 1024)] == "faster"
    assert v[("huggingface", 64)] == "same (within noise)"
    tri = cmp[cmp["impl"] == "triton"]
    assert (tri["ratio"].round(3) == 0.5).all() and (tri["ratio_lo"] < tri["ratio"]).all()
    assert "faster on 2" in comparison_reading(cmp, "a", "b")
    noisy = compare_runs(_fake_run(1.0, 0.5), _fake_run(0.8, 0.5))   # 20% change, 50% noise: no verdict
    assert (noisy["verdict"] == "same (within noise)").all()
    fp = fastest_per_shape(base, "cold")
    assert list(fp["fastest"]) == ["triton", "triton"] and fp["clear"].all()


def test_a_saved_figure_is_shown_from_its_png_and_closed(tmp_path, monkeypatch):
    """nb.figure: the notebooks show each plot once (the PNG the plot function saved, no second
    drawing) and close it."""
    import IPython.display
    import matplotlib.pyplot as plt
    from rmsnorm_lab import nb
    from rmsnorm_lab.cases import make_cases
    from rmsnorm_lab.check import check_all
    from rmsnorm_lab.plots import plot_errors

    shown = []
    monkeypatch.setattr(IPython.display, "display", lambda obj: shown.append(obj))
    chk = check_all(make_cases([64], [1], [2], ["float32"]), ["torch"], "cpu", isolated=False)
    png = tmp_path / "errors.png"
    fig = plot_errors(chk, png)
    nb.figure(fig)
    assert isinstance(shown[-1], IPython.display.Image) and shown[-1].data == png.read_bytes()
    assert not plt.fignum_exists(fig.number)
    fig2 = plot_errors(chk, None)                # not saved: the figure itself
    nb.figure(fig2)
    assert shown[-1] is fig2 and not plt.fignum_exists(fig2.number)
    nb.figure(None)                              # nothing to draw
    assert len(shown) == 2


@pytest.mark.slow
def test_report_runner_ci_preset_writes_the_report(tmp_path):
    """python -m rmsnorm_lab.report --preset ci (about a minute on 2 CPU cores)."""
    from rmsnorm_lab.device import device_name, resolve_device, slug
    from rmsnorm_lab.report import main

    if resolve_device("auto").startswith("cuda"):
        pytest.skip("on a GPU the ci preset is still tiny, but this test is about the CPU report")
    assert main(["--preset", "ci", "--out", str(tmp_path), "--run-name", "ci-test"]) == 0
    run = tmp_path / slug(device_name("cpu")) / "ci-test"
    for n in EXPECTED:
        nb = _load(run / f"{n}.ipynb")
        assert nb["metadata"]["papermill"]["exception"] in (None, False), n
        assert (run / f"{n}.html").stat().st_size > 10_000
    for f in ("results.csv", "env.json", "correctness.csv", "support.csv", "errors.png", "reading.md",
              "parameters.yaml", "latency-cold.png", "roofline-cold.png", "bandwidth-cold.png",
              "speedup-cold.png", "fastest-cold.csv", "summary-cold.csv"):
        assert (run / f).exists(), f"missing {f}"
    # no progress-bar noise in the executed notebooks
    streams = "".join("".join(o.get("text", "")) for c in _load(run / "02_performance_sweep.ipynb")["cells"]
                      for o in c.get("outputs", []) if o.get("output_type") == "stream")
    assert "pt/s" not in streams and "IProgress" not in streams and "\r" not in streams
    # 03 found nothing else to compare with, and said so
    assert "Nothing to compare" in (run / "03_compare_runs.ipynb").read_text()
    assert os.environ.get("RMSNORM_LAB_BATCH") == "1"      # restored to the conftest's value
