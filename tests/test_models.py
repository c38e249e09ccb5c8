"""Real models' shapes (rmsnorm_lab.models): the table, its tune / validate split, run_sweep and the
results' ``models`` column, the CLI's --models / --tokens / list --models, tune --models and the
notebook parameters, on CPU with tiny shapes."""
from __future__ import annotations

import pytest

from cli_helpers import assert_one_line_exit_2 as _one_line_exit_2
from cli_helpers import run_cli as _cli
from rmsnorm_lab import models as M






# ---------------------------------------------------------------- the table

def test_table_sizes_names_and_sources():
    names = [m.name for m in M.MODELS]
    assert len(names) == len(set(names)) and len({n.lower() for n in names}) == len(names)
    for m in M.MODELS:
        assert isinstance(m.hidden, int) and m.hidden > 0 and m.hidden % 64 == 0, m
        assert m.qk_head_dim in (0, 64, 128, 256), m
        assert m.source, m
    by = M.by_name()
    assert by["Llama-3.1-405B"].hidden == 16384 and by["DeepSeek-V3"].hidden == 7168
    assert by["Qwen3-8B"].qk_head_dim == 128 and by["Gemma-3-1B"].qk_head_dim == 256


def test_splits_are_disjoint_cover_and_span_decode_to_prefill():
    tune, val = set(M.SPLIT_TOKENS["tune"]), set(M.SPLIT_TOKENS["validate"])
    assert not tune & val and tune | val == set(M.TOKENS) == set(M.SPLIT_TOKENS["all"])
    for s in (tune, val):
        assert min(s) < 10 and max(s) > 10000                # decode and prefill batches in each
        assert any(t & (t - 1) for t in s)                   # not only powers of two
    h_tune, t_tune = M.shapes("all", "tune")
    h_val, t_val = M.shapes("all", "validate")
    assert h_tune == h_val == sorted({m.hidden for m in M.MODELS})
    assert set(t_tune) == tune and set(t_val) == val


def test_check_models_names_any_case_all_and_refusals():
    assert M.check_models("all") == M.check_models(["all"]) == [m.name for m in M.MODELS]
    assert M.check_models(["qwen3-8b", "Llama-3.1-8B"]) == ["Llama-3.1-8B", "Qwen3-8B"]   # table order
    with pytest.raises(ValueError, match=r"models: unknown model 'Llama-8B'.*did you mean"):
        M.check_models(["Llama-8B"])
    with pytest.raises(ValueError, match="models"):
        M.check_models([])
    with pytest.raises(TypeError, match="models"):
        M.check_models([4096])
    with pytest.raises(ValueError, match="models_split.*tune, validate, all"):
        M.check_split("train")
    assert M.names_by_hidden(["Llama-3.1-8B", "Qwen3-8B", "Mistral-7B", "Phi-4"]) == {
        4096: "Llama-3.1-8B, Qwen3-8B, Mistral-7B", 5120: "Phi-4"}


# ---------------------------------------------------------------- the sweep and the results

def test_run_sweep_with_two_models_names_them_in_each_row(tmp_path, monkeypatch):
    from rmsnorm_lab import analysis
    from rmsnorm_lab.results import load_results, stored_run
    from rmsnorm_lab.sweep import SweepConfig, run_sweep

    monkeypatch.setitem(M.SPLIT_TOKENS, "tune", (1, 3))     # tiny token counts: seconds on CPU
    cfg = SweepConfig(models=["Qwen2.5-0.5B", "Qwen3-0.6B"], models_split="tune", impls=["torch"],
                      device="cpu", modes=["eager"], residual=[False], budget_ms=1.0, progress=False,
                      copy_ceiling=False, save_path=str(tmp_path))
    df = run_sweep(cfg)
    assert (cfg.hidden, cfg.tokens) == ([896, 1024], [1, 3])
    assert set(df["status"]) == {"ok"} and len(df) == 4
    assert dict(zip(df["hidden"], df["models"])) == {896: "Qwen2.5-0.5B", 1024: "Qwen3-0.6B"}
    assert set(load_results(tmp_path)["models"]) == {"Qwen2.5-0.5B", "Qwen3-0.6B"}
    fp = analysis.fastest_per_shape(df, "eager")
    assert set(fp["models"]) == {"Qwen2.5-0.5B", "Qwen3-0.6B"}
    assert "Qwen3-0.6B" in analysis.written_reading(df)
    run = stored_run(tmp_path)
    assert run["models"] == ["Qwen2.5-0.5B", "Qwen3-0.6B"] and run["models_split"] == "tune"
    # another split is another configuration: refused in the same folder
    with pytest.raises(ValueError, match="save_path.*models_split"):
        run_sweep(cfg, models_split="all")


def test_plain_rows_leave_models_empty_and_old_csvs_read(tmp_path):
    import csv

    from rmsnorm_lab import analysis
    from rmsnorm_lab.results import COLUMNS, load_results
    from rmsnorm_lab.sweep import run_sweep

    assert COLUMNS[-1] == "models"
    df = run_sweep(hidden=[64], tokens=[2], impls=["torch"], device="cpu", modes=["eager"], residual=[False],
                   budget_ms=1.0, progress=False, copy_ceiling=False)
    assert list(df["models"]) == [""] and "models" not in analysis.fastest_per_shape(df, "eager")
    old = [c for c in COLUMNS if c != "models"]                # a CSV written before the column existed
    with open(tmp_path / "results.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=old)
        w.writeheader()
        w.writerow({"impl": "torch", "status": "ok", "hidden": 64, "tokens": 2, "mode": "eager"})
    assert list(load_results(tmp_path)["models"]) == [""]


def test_run_identity_of_a_plain_run_is_unchanged():
    from rmsnorm_lab.results import RUN_DEFAULTS, run_identity
    ident = run_identity({"hidden": [64], "models": None, "models_split": "tune"}, "cpu")
    assert ident["models"] is None and ident["models_split"] == RUN_DEFAULTS["models_split"]


# ---------------------------------------------------------------- the command line

def test_list_models_prints_the_table(capsys):
    code, out, err = _cli(["list", "--models"], capsys)
    assert code == 0, err
    assert "Llama-3.1-8B" in out and "16384" in out and "gpt-oss-120b" in out
    assert "tokens (tune): 1 17 333 1500 12345" in out and "tokens (validate): 3 100 777 5000 40000" in out


@pytest.mark.parametrize("argv,part", [
    (["--models", "Qwen3-8"], "--models: unknown model 'Qwen3-8'"),
    (["--models", "all", "--hidden-size", "64"], "--models: the models give the hidden sizes"),
    (["--models", "all", "--tokens", "3"], "drop --tokens"),
    (["--models", "all", "--models-split", "train"], "--models-split"),
    (["--tokens", "3", "--seq-len", "2"], "--tokens: token counts replace --batch-size x --seq-len"),
    (["--tokens", "0"], "argument --tokens: expected a positive integer, got 0"),
])
def test_cli_refusals_are_one_line(argv, part, capsys, tmp_path):
    code, _, err = _cli([*argv, "--device", "cpu", "--save-path", str(tmp_path)], capsys)
    _one_line_exit_2(code, err)
    assert part in err
    if "unknown model" in part:
        assert "did you mean 'Qwen3-8B'" in err


def test_cli_runs_models_and_tokens(capsys, tmp_path, monkeypatch):
    from rmsnorm_lab.results import load_results

    monkeypatch.setitem(M.SPLIT_TOKENS, "validate", (2,))
    tiny = ["--device", "cpu", "--impls", "torch", "--timing", "eager", "--residual", "without", "--no-check",
            "--no-plots", "--no-copy-ceiling"]
    code, out, err = _cli(["run", "--models", "qwen2.5-0.5b", *tiny, "--save-path", str(tmp_path / "m")], capsys)
    assert code == 0, err
    df = load_results(tmp_path / "m")
    assert list(df["models"]) == ["Qwen2.5-0.5B"] and list(df["hidden"]) == [896] and list(df["tokens"]) == [2]
    code, out, err = _cli(["--tokens", "3", "--hidden-size", "64", *tiny, "--save-path", str(tmp_path / "t")], capsys)
    assert code == 0, err
    df = load_results(tmp_path / "t")
    assert list(df["tokens"]) == [3] and list(df["models"]) == [""]


def test_tune_models_use_the_tune_split_only(capsys):
    from rmsnorm_lab import tune

    ap = tune.parser()
    args = tune.use_models(ap, ap.parse_args(["--models", "Qwen3-8B", "Gemma-3-1B", "--out", "x"]))
    assert (args.hidden, args.tokens) == ([1152, 4096], list(M.SPLIT_TOKENS["tune"]))
    for argv, part in ((["tune", "--models", "Llama-8B", "--out", "x"], "--models: unknown model"),
                       (["tune", "--models", "all", "--tokens", "3", "--out", "x"], "drop --hidden/--tokens")):
        code, _, err = _cli(argv, capsys)
        _one_line_exit_2(code, err)
        assert part in err


# ---------------------------------------------------------------- notebook parameters and the preset

@pytest.mark.parametrize("params,exc,words", [
    ({"models": ["Qwen3-8"]}, ValueError, ["'models'", "Qwen3-8", "did you mean 'Qwen3-8B'"]),
    ({"models": "all"}, TypeError, ["'models'", "-y"]),
    ({"models_split": "train"}, ValueError, ["'models_split'", "validate"]),
    ({"tokens": "3"}, TypeError, ["'tokens'", "list of positive integers"]),
    ({"tokens": [0]}, ValueError, ["'tokens'"]),
    ({"models": ["all"], "tokens": [3]}, ValueError, ["'tokens'", "models_split"]),
])
def test_notebook_parameters_name_the_parameter(params, exc, words):
    from rmsnorm_lab.params import validate_params
    with pytest.raises(exc) as e:
        validate_params(params)
    for w in words:
        assert w in str(e.value), (w, str(e.value))


def test_sweep_config_refuses_tokens_with_models():
    from rmsnorm_lab.sweep import SweepConfig
    with pytest.raises(ValueError, match=r"tokens: got \[5\] with models.*models_split"):
        SweepConfig(models=["all"], tokens=[5], device="cpu").validate()
    cfg = SweepConfig(models=["Qwen3-0.6B"], device="cpu").validate()     # validated twice: its split's tokens pass
    assert cfg.validate().tokens == list(M.SPLIT_TOKENS["validate"]) and cfg.hidden == [1024]


def test_models_preset_validates_and_drives_the_models_sweep():
    from rmsnorm_lab.cases import load_preset
    from rmsnorm_lab.params import validate_params
    from rmsnorm_lab.report import resolve_preset

    name, params = resolve_preset("models", "cpu")
    p = validate_params(params)
    assert name == "models" and p["models"] == M.check_models("all") and p["models_split"] == "validate"
    assert p["tokens"] == [] and p["modes"] == ["cold", "graph"]
    assert set(load_preset("models")["check_hidden_sizes"]) == {m.hidden for m in M.MODELS}
    assert validate_params({"models": [], "tokens": []}) == {"models": [], "tokens": []}
