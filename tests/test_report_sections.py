"""Report sections: ``report --set KEY=VALUE`` overrides a preset (checked like it, recorded in parameters.yaml
and the run's folder name), the variants and training presets validate, and runs of different norm variants
or passes are never compared with each other."""
from __future__ import annotations

import json
import re
import shlex

import pandas as pd
import pytest
import yaml

from cli_helpers import assert_one_line_exit_2, run_cli
from rmsnorm_lab import analysis, report
from rmsnorm_lab.cases import PRESET_DIR, load_preset
from rmsnorm_lab.params import validate_params


# ---------------------------------------------------------------------------------------------- --set

@pytest.mark.parametrize("text,key,value", [
    ("variant=fp8-static", "variant", "fp8-static"),
    ("hidden_sizes=[4096, 8192]", "hidden_sizes", [4096, 8192]),
    ("pass_=fwd+bwd", "pass_", "fwd+bwd"),
    ("check=false", "check", False),
    ("eps=1e-6", "eps", 1e-6),             # YAML 1.1 reads 1e-6 as text
    ("budget_ms=10", "budget_ms", 10),
    ("mode=", "mode", ""),
    ("impls=[triton, vllm]", "impls", ["triton", "vllm"]),
])
def test_set_reads_the_value_as_yaml(text, key, value):
    assert report.parse_override(text) == (key, value)


@pytest.mark.parametrize("args,words", [
    (["--set", "hiden_sizes=[64]"], ["--set hiden_sizes", "unknown parameter", "did you mean 'hidden_sizes'"]),
    (["--set", "variant=fp9"], ["'variant'", "fp9", "fp8-static"]),
    (["--set", "hidden_sizes=[4096, -1]"], ["'hidden_sizes'", "-1", "positive"]),
    (["--set", "budget_ms=fast"], ["'budget_ms'", "'fast'", "positive number"]),
    (["--set", "pass_=fwd+bwd", "--set", "variant=gemma"], ["'pass_'", "plain variant only"]),
    (["--set", "variant=qk-norm", "--set", "head_dim=96", "--set", "hidden_sizes=[256]"],
     ["'head_dim'", "96", "256"]),
    (["--set", "save_dir=/tmp/x"], ["--set save_dir", "report runner", "--out"]),
    (["--set", "variant"], ["argument --set", "KEY=VALUE", "'variant'"]),
    (["--set", "=gemma"], ["argument --set", "KEY=VALUE"]),
    (["--set", "hidden_sizes=[1,"], ["argument --set", "hidden_sizes", "not YAML"]),
])
def test_bad_set_is_one_line_exit_2_naming_the_key_before_anything_runs(args, words, tmp_path, capsys,
                                                                         monkeypatch):
    import papermill
    monkeypatch.setattr(papermill, "execute_notebook", lambda *a, **k: pytest.fail("a notebook ran"))
    code, _, err = run_cli(["report", "--preset", "ci", "--device", "cpu", "--out", str(tmp_path), *args], capsys)
    assert_one_line_exit_2(code, err)
    for w in words:
        assert w in err, f"{w!r} not in {err}"
    assert not any(tmp_path.iterdir())                       # no run folder was made


def test_set_reaches_the_runner_through_the_front_door(tmp_path, capsys, monkeypatch):
    seen = {}

    def fake_run_report(*args, overrides=None, **kw):
        seen.update(args=args, overrides=overrides)
        return tmp_path
    monkeypatch.setattr(report, "run_report", fake_run_report)
    code, _, err = run_cli(["report", "--preset", "variants", "--set", "variant=gemma",
                            "--set", "hidden_sizes=[4096,8192]", "--set", "variant=fp8-per-token",
                            "--notebooks", "02_performance_sweep", "03_compare_runs"], capsys)
    assert code == 0, err
    assert seen["args"][0] == "variants" and seen["args"][4] == ["02_performance_sweep", "03_compare_runs"]
    assert seen["overrides"] == [("variant", "gemma"), ("hidden_sizes", [4096, 8192]), ("variant", "fp8-per-token")]
    assert report.check_overrides(seen["overrides"]) == {"variant": "fp8-per-token", "hidden_sizes": [4096, 8192]}


def test_overrides_are_recorded_in_parameters_yaml_and_the_run_name(tmp_path):
    """No notebook runs: what the runner writes for any run (parameters.yaml, timings.json, the folder)."""
    run = report.run_report("ci", None, tmp_path, "cpu", notebooks=[], html=False, log=lambda *a: None,
                            overrides=[("variant", "gemma"), ("hidden_sizes", [64, 128])])
    assert re.fullmatch(r"\d{8}-\d{6}-ci-gemma-hidden-sizes", run.name), run.name
    text = (run / "parameters.yaml").read_text()
    assert "# overrides of the preset: --set variant=gemma --set hidden_sizes=[64, 128]" in text
    params = yaml.safe_load(text)
    assert params["variant"] == "gemma" and params["hidden_sizes"] == [64, 128]
    assert params["seq_lens"] == load_preset("ci")["seq_lens"]          # the rest is the preset's
    validate_params(params)                                           # usable again as papermill -f
    assert json.loads((run / "timings.json").read_text())["overrides"] == {"variant": "gemma",
                                                                          "hidden_sizes": [64, 128]}
    plain = report.run_report("ci", None, tmp_path / "b", "cpu", notebooks=[], html=False, log=lambda *a: None)
    assert re.fullmatch(r"\d{8}-\d{6}-ci", plain.name) and "overrides" not in (plain / "parameters.yaml").read_text()


def test_default_run_name_says_the_variant_pass_and_keys_set():
    import datetime as dt
    now = dt.datetime(2026, 1, 2, 3, 4, 5)
    assert report.default_run_name("training", {"pass_": "fwd+bwd"}, {}, now) == "20260102-030405-training-fwd-bwd"
    assert report.default_run_name("variants", {"variant": "qk-norm", "head_dim": 256},
                                   {"variant": "qk-norm", "head_dim": 256, "tokens": [1]}, now) == \
        "20260102-030405-variants-qk-norm-hd256-tokens"
    assert report.default_run_name("full", {"variant": "plain"}, {}, now) == "20260102-030405-full"


# ---------------------------------------------------------------------------------------------- presets

def _documented_commands(name):
    """The report commands a preset's header comment gives."""
    lines = [ln.lstrip("# ").strip() for ln in (PRESET_DIR / f"{name}.yaml").read_text().splitlines()]
    return [shlex.split(ln)[4:] for ln in lines if ln.startswith("python -m rmsnorm_lab report ")]


@pytest.mark.parametrize("name,variants,passes", [
    ("variants", ["fp8-static", "fp8-per-token", "gemma", "qk-norm"], ["fwd"]),
    ("training", ["plain"], ["fwd+bwd", "bwd"]),
])
def test_section_presets_validate_and_their_commands_too(name, variants, passes):
    from rmsnorm_lab.sweep import SweepConfig

    params = validate_params(load_preset(name))
    assert params["dtype"] == "bfloat16" and params["modes"] == ["cold", "graph"]
    assert params["residual"] == [False, True] and params["check"] is True
    cmds = _documented_commands(name)
    seen = set()
    for argv in cmds:
        args = report.build_parser().parse_args(argv)
        assert args.preset == name and args.notebooks == ["02_performance_sweep", "03_compare_runs"]
        over = report.check_overrides(args.overrides)
        p = validate_params({**load_preset(name), **over})
        cfg = SweepConfig(hidden=p["hidden_sizes"], tokens=p["tokens"], dtypes=[p["dtype"]],
                          residual=p["residual"], variant=p["variant"], passes=[p["pass_"]],
                          head_dim=p.get("head_dim", 128), modes=["cold"], device="cpu").validate()
        assert 16 <= len(cfg.cases()) <= 48, argv                   # minutes on a GPU, not hours
        seen.add((p["variant"], p["pass_"]))
    assert seen == {(v, ps) for v in variants for ps in passes}      # one command per section


def test_qk_norm_widths_are_whole_heads():
    for argv in _documented_commands("variants"):
        p = validate_params({**load_preset("variants"), **report.check_overrides(
            report.build_parser().parse_args(argv).overrides)})
        if p["variant"] == "qk-norm":
            assert all(h % p["head_dim"] == 0 and h // p["head_dim"] >= 8 for h in p["hidden_sizes"])


# ---------------------------------------------------------------------------------------------- comparing

def _save(d, variant=None, passes=None, head_dim=128, us=5.0, time="t"):
    d.mkdir(parents=True)
    row = dict(impl="ours", dtype="bfloat16", hidden=64, batch=1, seq=4, tokens=4, residual=False, mode="cold",
               status="ok", us_median=us, us_p20=us * 0.99, us_p80=us * 1.01, gpu_name="GPU-A")
    cfg = {"hidden": [64], "batch": [1], "seq": [4], "tokens": None, "dtypes": ["bfloat16"], "residual": [False]}
    if variant is not None:
        row.update(variant=variant, **{"pass": passes[0]}, head_dim=head_dim if variant == "qk-norm" else "")
        cfg.update(variant=variant, passes=passes, head_dim=head_dim)
    pd.DataFrame([row]).to_csv(d / "results.csv", index=False)
    (d / "env.json").write_text(json.dumps({"gpu_name": "GPU-A", "time": time, "config": cfg}))
    return d


def test_runs_of_another_variant_or_pass_are_not_discovered_as_comparable(tmp_path):
    old = _save(tmp_path / "old")                                  # written before variants: plain fwd
    plain = _save(tmp_path / "plain", "plain", ["fwd"], head_dim=256)   # head_dim: qk-norm's only
    gemma = _save(tmp_path / "gemma", "gemma", ["fwd"])
    gemma2 = _save(tmp_path / "gemma2", "gemma", ["fwd"])
    train = _save(tmp_path / "train", "plain", ["fwd+bwd"])
    qk128 = _save(tmp_path / "qk128", "qk-norm", ["fwd"])
    qk256 = _save(tmp_path / "qk256", "qk-norm", ["fwd"], head_dim=256)
    assert len(analysis.discover_runs(tmp_path)) == 7
    assert analysis.discover_runs(tmp_path, like=plain) == [old, plain]
    assert analysis.discover_runs(tmp_path, like=gemma) == [gemma, gemma2]
    for only in (train, qk128, qk256):
        assert analysis.discover_runs(tmp_path, like=only) == [only]
    assert analysis.run_identity(gemma)[:2] == analysis.run_identity(plain)[:2]    # same device and grid


def test_compare_runs_matches_points_of_the_same_variant_pass_and_head_size(tmp_path):
    from rmsnorm_lab.results import load_results
    old = load_results(_save(tmp_path / "old"))
    plain = load_results(_save(tmp_path / "plain", "plain", ["fwd"], us=2.0))
    assert len(analysis.compare_runs(old, plain)) == 1                    # no columns: plain fwd
    for other in (_save(tmp_path / "g", "gemma", ["fwd"]), _save(tmp_path / "t", "plain", ["fwd+bwd"]),
                  _save(tmp_path / "q", "qk-norm", ["fwd"])):
        assert analysis.compare_runs(plain, load_results(other)).empty
    q256 = load_results(_save(tmp_path / "q256", "qk-norm", ["fwd"], head_dim=256))
    q128 = load_results(tmp_path / "q")
    assert analysis.compare_runs(q128, q256).empty
    assert len(analysis.compare_runs(q256, q256)) == 1
    raw = pd.DataFrame([dict(impl="ours", dtype="bfloat16", hidden=64, batch=1, seq=4, tokens=4, residual=False,
                             mode="cold", status="ok", us_median=1.0, us_p20=1.0, us_p80=1.0)])
    assert len(analysis.compare_runs(raw, raw)) == 1                      # frames without the columns


# ---------------------------------------------------------------------------------------------- end to end

@pytest.mark.slow
def test_a_gemma_section_on_cpu_is_not_compared_with_a_plain_run(tmp_path, capsys):
    """report --set variant=gemma, 02 and 03 on a tiny CPU grid (about 20 s): the rows are gemma's, and 03
    does not compare them with a plain run of the same device and grid found beside it."""
    from rmsnorm_lab.device import device_name, resolve_device, slug
    from rmsnorm_lab.results import load_results
    from rmsnorm_lab.sweep import run_sweep

    if resolve_device("auto").startswith("cuda"):
        pytest.skip("this test is about the CPU report (the GPU sections are the presets')")
    ci = load_preset("ci")
    runs = tmp_path / slug(device_name("cpu"))
    run_sweep(hidden=[64], batch=ci["batch_sizes"], seq=ci["seq_lens"], tokens=[2], dtypes=["bfloat16"],
              residual=[False, True], impls=["torch"], device="cpu", modes=["cold"], budget_ms=1, progress=False,
              save_path=str(runs / "plain"))
    code, out, err = run_cli(["report", "--preset", "ci", "--device", "cpu", "--out", str(tmp_path), "--no-html",
                              "--set", "variant=gemma", "--set", "hidden_sizes=[64]", "--set", "tokens=[2]",
                              "--set", "impls=[torch]", "--set", "modes=[cold]", "--set", "budget_ms=1",
                              "--run-name", "gemma", "--notebooks", "02_performance_sweep", "03_compare_runs"],
                             capsys)
    assert code == 0, err
    run = runs / "gemma"
    df = load_results(run)
    assert set(df["variant"]) == {"gemma"} and set(df["status"]) == {"ok"} and len(df) == 2
    assert analysis.run_identity(run)[:2] == analysis.run_identity(runs / "plain")[:2]
    assert analysis.run_identity(run) != analysis.run_identity(runs / "plain")
    assert "Nothing to compare" in (run / "03_compare_runs.ipynb").read_text()
    assert "variant=gemma" in (run / "parameters.yaml").read_text()
