"""The norm variants and the backward pass through the front door: CLI flags, run_sweep, list, results.

CPU, tiny shapes: the torch subjects and ours (under TRITON_INTERPRET=1, which the CLI and
run_sweep set on CPU themselves).
"""
from __future__ import annotations

import pytest

from cli_helpers import run_cli as _cli

TINY = dict(device="cpu", hidden=[64], tokens=[3], modes=["eager"], budget_ms=1.0, progress=False,
            copy_ceiling=False)
CLI_TINY = ["--device", "cpu", "--hidden-size", "64", "--batch-size", "1", "--seq-len", "3", "--timing", "eager",
            "--no-plots"]


def _has_fp8() -> bool:
    import torch
    return hasattr(torch, "float8_e4m3fn")




def _ok_rows(df, impls):
    ok = df[df["status"] == "ok"]
    assert set(impls) <= set(ok["impl"]), df[["impl", "status", "error"]].to_string()
    assert (ok["correct"] == True).all(), ok[["impl", "error"]].to_string()  # noqa: E712
    return ok


# ---------------------------------------------------------------- run_sweep

@pytest.mark.parametrize("variant,extra", [
    ("gemma", {}),
    ("qk-norm", {"head_dim": 32}),
    pytest.param("fp8-static", {}, marks=pytest.mark.skipif(not _has_fp8(), reason="torch has no float8_e4m3fn")),
    pytest.param("fp8-per-token", {}, marks=pytest.mark.skipif(not _has_fp8(), reason="torch has no float8_e4m3fn")),
])
def test_sweep_runs_a_variant(variant, extra):
    from rmsnorm_lab.sweep import run_sweep
    df = run_sweep(variant=variant, impls=["torch", "ours"], **TINY, **extra)
    ok = _ok_rows(df, ["torch", "ours"])
    assert set(df["variant"]) == {variant} and set(df["pass"]) == {"fwd"}
    assert (ok["us_median"] > 0).all() and (ok["bytes"] > 0).all()
    # speedups against the variant's baseline (eager torch), whatever the order of impls
    assert (ok["speedup_vs_hf"] > 0).all()
    if variant == "qk-norm":
        assert set(df["residual"]) == {False} and set(df["head_dim"]) == {32}
    if variant.startswith("fp8"):
        assert (ok["fp8_frac_off"] <= 1e-3).all()
    if variant == "fp8-per-token":
        assert (ok["scale_err"] < 1e-2).all()


@pytest.mark.parametrize("pass_", ["bwd", "fwd+bwd"])
def test_sweep_runs_the_backward(pass_):
    from rmsnorm_lab.sweep import run_sweep
    df = run_sweep(passes=pass_, impls=["huggingface", "triton"], **TINY)
    ok = _ok_rows(df, ["huggingface", "triton"])
    assert set(df["variant"]) == {"plain"} and set(df["pass"]) == {pass_}
    assert ok["err_out"].notna().all() and ok["err_dw"].notna().all()
    assert ok.loc[ok["residual"] == True, "err_residual"].notna().all()  # noqa: E712
    from rmsnorm_lab.backward import pass_bytes
    row = ok[(ok["impl"] == "triton") & (ok["residual"] == False)].iloc[0]  # noqa: E712
    assert row["bytes"] == pass_bytes(pass_, 3, 64, 2, False, w_itemsize=2, partial_rows=0)


def test_sweep_forward_and_backward_in_one_run():
    from rmsnorm_lab.sweep import run_sweep, summarize
    df = run_sweep(passes=["fwd", "bwd"], impls=["huggingface"], residual=[False], **TINY)
    assert sorted(df["pass"]) == ["bwd", "fwd"] and (df["status"] == "ok").all()
    assert "pass" in summarize(df, "eager").index.names


def test_plain_rows_say_plain_fwd():
    from rmsnorm_lab.sweep import run_sweep
    df = run_sweep(impls=["huggingface"], residual=[False], **TINY)
    assert list(df["variant"]) == ["plain"] and list(df["pass"]) == ["fwd"]


def test_failing_and_unavailable_subjects_become_rows(monkeypatch):
    from rmsnorm_lab import variants
    from rmsnorm_lab.sweep import run_sweep

    def broken(x, w, r, eps):
        raise RuntimeError("broken on purpose")
    monkeypatch.setitem(variants.TORCH_FNS, "gemma", broken)
    df = run_sweep(variant="gemma", impls=["torch", "flashinfer", "torch-compile"], residual=[False], **TINY)
    by = df.set_index("impl")
    assert by.loc["torch", "status"] == "error" and "broken on purpose" in by.loc["torch", "error"]
    assert by.loc["torch-compile", "status"] == "skip" and by.loc["torch-compile", "error"]
    assert by.loc["flashinfer", "status"] == "skip" and by.loc["flashinfer", "error"]


def test_a_wrong_subject_is_flagged(monkeypatch):
    from rmsnorm_lab import variants
    from rmsnorm_lab.sweep import run_sweep
    good = variants.TORCH_FNS["gemma"]
    monkeypatch.setitem(variants.TORCH_FNS, "gemma", lambda x, w, r, eps: good(x, w, r, eps) * 1.5)
    df = run_sweep(variant="gemma", impls=["torch"], residual=[False], **TINY)
    row = df.iloc[0]
    assert row["correct"] == False and "rel. L2 error" in row["error"]  # noqa: E712


@pytest.mark.parametrize("kwargs,exc,words", [
    (dict(variant="gema"), ValueError, ["variant", "gema", "gemma"]),
    (dict(passes="backward"), ValueError, ["passes", "backward", "bwd"]),
    (dict(variant="gemma", passes="bwd"), ValueError, ["passes", "plain variant only"]),
    (dict(variant="qk-norm", hidden=[100], head_dim=64), ValueError, ["head_dim", "64", "100"]),
    (dict(variant="qk-norm", head_dim=32, residual=[True]), ValueError, ["residual", "qk-norm"]),
    (dict(variant="gemma", dtypes=["float64"]), ValueError, ["dtypes", "float64"]),
    (dict(variant="gemma", impls=["triton"]), KeyError, ["impls", "triton", "ours"]),
    (dict(head_dim=0), ValueError, ["head_dim"]),
])
def test_api_refusals_name_the_parameter(kwargs, exc, words):
    from rmsnorm_lab.sweep import SweepConfig
    with pytest.raises(exc) as e:
        SweepConfig(**{**dict(device="cpu", hidden=[64], tokens=[3]), **kwargs}).validate()
    for w in words:
        assert w in str(e.value), str(e.value)


def test_results_folder_holds_one_variant_and_resumes(tmp_path):
    from rmsnorm_lab.results import load_results
    from rmsnorm_lab.sweep import run_sweep
    kw = dict(TINY, impls=["torch"], residual=[False], save_path=str(tmp_path))
    run_sweep(variant="gemma", **kw)
    first = load_results(tmp_path)
    run_sweep(variant="gemma", **kw)                      # the same configuration: nothing measured again
    again = load_results(tmp_path)
    assert list(again["timestamp"]) == list(first["timestamp"]) and len(again) == 1
    with pytest.raises(ValueError, match="save_path: .* another configuration .*variant"):
        run_sweep(variant="fp8-static", **kw)


def test_old_results_read_as_plain_forward(tmp_path):
    from rmsnorm_lab.results import COLUMNS, KEY, ResultStore, check_same_run, load_results, run_identity
    old_cols = [c for c in COLUMNS if c not in ("variant", "pass", "head_dim", "err_dw", "fp8_frac_off",
                                                "scale_err")]
    row = dict.fromkeys(old_cols, "")
    row.update(impl="huggingface", gpu_name="g", dtype="bfloat16", hidden=64, batch=1, seq=3, residual=False,
               mode="eager", status="ok", us_median=1.0)
    (tmp_path / "results.csv").write_text(",".join(old_cols) + "\n" + ",".join(str(row[c]) for c in old_cols) + "\n")
    df = load_results(tmp_path)
    assert list(df["variant"]) == ["plain"] and list(df["pass"]) == ["fwd"] and set(KEY) <= set(df.columns)
    store = ResultStore(tmp_path)
    assert store.done({**row, "variant": "plain", "pass": "fwd"})
    # an env.json recorded before the variant fields existed is the plain forward's configuration
    import json
    cfg = dict(hidden=[64], batch=[1], seq=[3], tokens=None, dtypes=["bfloat16"], residual=[False],
               impls=["huggingface"], modes=["eager"], device="cpu", seed=0, eps=1e-6)
    old_run = run_identity(cfg, "g")
    for k in ("variant", "passes", "head_dim"):
        old_run.pop(k, None)
    (tmp_path / "env.json").write_text(json.dumps({"run": old_run}))
    check_same_run(tmp_path, run_identity({**cfg, "variant": "plain", "passes": ["fwd"], "head_dim": 128}, "g"))
    with pytest.raises(ValueError, match="variant"):
        check_same_run(tmp_path, run_identity({**cfg, "variant": "gemma", "passes": ["fwd"], "head_dim": 128}, "g"))


# ---------------------------------------------------------------- command line

@pytest.mark.parametrize("argv,part", [
    (["--variant", "gema"], "argument --variant: invalid choice: 'gema'"),
    (["--pass", "backward"], "argument --pass: invalid choice: 'backward'"),
    (["--variant", "qk-norm", "--hidden-size", "200"], "--head-dim: 128 does not divide hidden size 200"),
    (["--variant", "qk-norm", "--head-dim", "0"], "argument --head-dim: expected a positive integer, got 0"),
    (["--variant", "gemma", "--timing", "graph"], "--timing: graph timing needs CUDA"),
    (["--variant", "gemma", "--pass", "bwd"], "--pass: the backward pass is measured for the plain variant only"),
    (["--variant", "qk-norm", "--residual", "with"], "--residual: the qk-norm variant has no fused residual form"),
    (["--variant", "gemma", "--impls", "triton"], "--impls: unknown implementation 'triton' for variant gemma"),
    (["--pass", "bwd", "--dtype", "float64"], "--dtype: float64 is not measured for the backward pass"),
    (["--variant", "gemma", "--impls", "flashinfer"], "--impls: nothing can run on cpu"),
])
def test_cli_refusals_are_one_line_exit_2(argv, part, capsys, tmp_path):
    code, _, err = _cli(["--device", "cpu", *argv, "--save-path", str(tmp_path / "r")], capsys)
    assert code == 2, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert part in err, err


def test_cli_runs_a_variant_and_the_backward(capsys, tmp_path):
    import pandas as pd
    code, out, err = _cli([*CLI_TINY, "--variant", "gemma", "--impls", "torch,ours", "--residual", "without",
                           "--save-path", str(tmp_path / "g")], capsys)
    assert code == 0, err
    df = pd.read_csv(tmp_path / "g" / "results.csv")
    assert set(df["variant"]) == {"gemma"} and (df["status"] == "ok").all() and set(df["impl"]) == {"torch", "ours"}
    code, out, err = _cli([*CLI_TINY, "--pass", "fwd", "bwd", "--impls", "huggingface", "--residual", "without",
                           "--save-path", str(tmp_path / "b")], capsys)
    assert code == 0, err
    df = pd.read_csv(tmp_path / "b" / "results.csv")
    assert sorted(df["pass"]) == ["bwd", "fwd"] and (df["status"] == "ok").all()


def test_cli_default_folder_is_per_variant(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, _, err = _cli([*CLI_TINY, "--variant", "gemma", "--impls", "torch", "--residual", "without", "--no-check"],
                        capsys)
    assert code == 0, err
    assert (tmp_path / "configs" / "rmsnorm-gemma" / "results.csv").exists()


def test_list_variant_and_backward(capsys):
    code, out, err = _cli(["list", "--device", "cpu", "--variant", "fp8-per-token"], capsys)
    assert code == 0, err
    lines = {tuple(line.split()[:2]) for line in out.splitlines() if line and not line.startswith("#")}
    assert ("torch", "yes") in lines and ("ours", "yes") in lines
    assert any(line.startswith("vllm") and " no " in line and "not installed" in line for line in out.splitlines())
    code, out, err = _cli(["list", "--device", "cpu", "--pass", "bwd"], capsys)
    assert code == 0, err
    assert "forward only" in out and any(line.startswith("triton") and "yes" in line for line in out.splitlines())
    code, out, err = _cli(["--list", "--device", "cpu", "--variant", "qk-norm"], capsys)
    assert code == 0 and "ours" in out and "torch-compile" in out, err
    code, _, err = _cli(["list", "--device", "cpu", "--variant", "gemma", "--pass", "bwd"], capsys)
    assert code == 2 and "--pass" in err


def test_notebook_parameters_validate():
    from rmsnorm_lab.params import validate_params
    assert validate_params(dict(variant="qk-norm", pass_="fwd", head_dim=64, hidden_sizes=[256]))["head_dim"] == 64
    for bad, words in [(dict(variant="gema"), ["'variant'", "gema"]),
                       (dict(pass_=["bwd"]), ["'pass_'", "['bwd']"]),
                       (dict(variant="qk-norm", head_dim=128, hidden_sizes=[256, 1000]), ["'head_dim'", "1000"]),
                       (dict(variant="gemma", pass_="bwd"), ["'pass_'", "plain variant only"]),
                       (dict(variant="gemma", impls=["triton"]), ["'impls'", "triton"])]:
        with pytest.raises((TypeError, ValueError)) as e:
            validate_params(bad)
        for w in words:
            assert w in str(e.value), str(e.value)
