"""The same-size copy ceiling (cold rows of a sweep), its plots, and analysis.summarize_targets over several runs."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_sweep_times_a_same_size_copy_in_cold_rows_only():
    from rmsnorm_lab.sweep import run_sweep
    df = run_sweep(hidden=[64], tokens=[4], residual=[False, True], impls=["torch"], device="cpu",
                   modes=["cold", "eager"], budget_ms=1, progress=False)
    cold = df[df["mode"] == "cold"]
    assert len(cold) == 2 and (cold["copy_same_us"] > 0).all()
    for _, r in cold.iterrows():
        assert r["pct_copy_same"] == pytest.approx(100 * r["copy_same_us"] / r["us_median"], abs=0.06)
    eager = df[df["mode"] == "eager"]
    assert eager["copy_same_us"].isna().all() if "copy_same_us" in eager else True


def test_copy_ceiling_can_be_switched_off_and_is_validated():
    from rmsnorm_lab.sweep import SweepConfig, run_sweep
    df = run_sweep(hidden=[64], tokens=[4], residual=[False], impls=["torch"], device="cpu", modes=["cold"],
                   budget_ms=1, progress=False, copy_ceiling=False)
    assert "copy_same_us" not in df or df["copy_same_us"].isna().all()
    with pytest.raises(TypeError, match="copy_ceiling"):
        SweepConfig(copy_ceiling="yes").validate()


def test_same_size_copy_runner_moves_the_cases_bytes():
    import torch

    from rmsnorm_lab.bandwidth import same_size_copy_runner
    r = same_size_copy_runner(1000, "cpu")
    out = r()
    assert out.numel() == 500 and out.dtype == torch.uint8 and torch.equal(out, r.x)


def _sweep_like(with_hf: bool, with_ceiling: bool) -> pd.DataFrame:
    rows = []
    for impl in (["huggingface"] if with_hf else []) + ["triton", "vllm"]:
        for t in (16, 256):
            for mode in ("cold", "graph"):
                us = {"huggingface": 50.0, "triton": 10.0, "vllm": 11.0}[impl] * t / 16
                r = dict(impl=impl, dtype="bfloat16", residual=False, hidden=1024, tokens=t, mode=mode, status="ok",
                         us_median=us, us_p20=us * 0.98, us_p80=us * 1.02, pct_copy=50.0, gpu_name="X",
                         speedup_vs_hf=50.0 / us if with_hf else float("nan"))
                if with_ceiling and mode == "cold":
                    r.update(copy_same_us=9.0 * t / 16, pct_copy_same=100 * 9.0 / us * t / 16)
                rows.append(r)
    return pd.DataFrame(rows)


def test_plots_skip_metrics_without_data(tmp_path):
    from rmsnorm_lab import plots
    names = {Path(p).name for p in plots.save_all(_sweep_like(with_hf=False, with_ceiling=True), tmp_path)}
    assert {"latency-cold.png", "ceiling-cold.png", "latency-graph.png"} <= names
    assert not any(n.startswith("speedup") for n in names)      # no HuggingFace row: no speedup, no crash
    assert "ceiling-graph.png" not in names
    names = {Path(p).name for p in plots.save_all(_sweep_like(with_hf=True, with_ceiling=False), tmp_path / "b")}
    assert "speedup-cold.png" in names and not any(n.startswith("ceiling") for n in names)


def _run(ratio_16: float, ratio_256: float, tie_16=False) -> pd.DataFrame:
    rows = []
    for t, ratio in ((16, ratio_16), (256, ratio_256)):
        for impl, us in (("triton", 10.0 * ratio), ("vllm", 10.0), ("flashinfer", 12.0), ("huggingface", 40.0)):
            band = 0.2 if (tie_16 and t == 16) else 0.01
            rows.append(dict(impl=impl, dtype="bfloat16", residual=True, hidden=4096, tokens=t, mode="cold",
                             status="ok", us_median=us, us_p20=us * (1 - band), us_p80=us * (1 + band),
                             bytes=1e8, pct_copy=90.0, copy_same_us=10.0, pct_copy_same=100 * 10.0 / us,
                             gpu_name="X"))
    return pd.DataFrame(rows)


def test_runs_combine_into_misses_in_every_run_or_some():
    from rmsnorm_lab.analysis import combine_ratios, target_ratios
    a = target_ratios(_run(1.10, 1.05)).assign(run="1:a")
    b = target_ratios(_run(1.10, 1.00)).assign(run="2:b")
    assert set(a["best_peer"]) == {"vllm"}                          # the baseline is not raced
    c = combine_ratios(pd.concat([a, b], ignore_index=True)).set_index("tokens")
    assert c.loc[16, "miss_runs"] == 2 and c.loc[256, "miss_runs"] == 1 and (c["runs"] == 2).all()
    assert c.loc[256, "ratio"] == pytest.approx(1.025) and c.loc[256, "ratio_max"] == pytest.approx(1.05)
    assert c.loc[16, "ours_pct_copy_same"] == pytest.approx(100 / 1.1, rel=1e-6)
    assert not a.set_index("tokens").loc[16, "tie"]
    tied = target_ratios(_run(1.10, 1.0, tie_16=True)).set_index("tokens")
    assert bool(tied.loc[16, "tie"]) and tied.loc[16, "ratio"] == pytest.approx(1.1)
    c = combine_ratios(tied.reset_index().assign(run="1:t")).set_index("tokens")
    assert c.loc[16, "miss_runs"] == 0                              # a tie is no miss


def test_summarize_targets_over_two_runs_and_its_plot(tmp_path):
    from rmsnorm_lab.analysis import summarize_targets
    from rmsnorm_lab.plots import plot_target_ratios
    s = summarize_targets([_run(1.10, 0.95), _run(1.00, 0.95)])
    md = s["markdown"]
    assert "2 runs" in md and "0 in every run, 1 more in some runs" in md
    assert "same-size copy" in md and "| 1.05+ |" in md and "best single peer: vllm" in md
    assert len(s["combined"]) == 2 and set(s["combined"]["runs"]) == {2} and len(s["ratios"]) == 4
    assert plot_target_ratios(s["combined"], "t", tmp_path / "r.png") is not None and (tmp_path / "r.png").exists()
    with pytest.raises(ValueError, match="runs"):
        summarize_targets([])
    with pytest.raises(ValueError, match="no shape"):
        summarize_targets([_run(1.0, 1.0)[lambda d: d["impl"] != "triton"]])


def test_cli_no_copy_ceiling(tmp_path):
    """--no-copy-ceiling: the CLI's cold rows carry no same-size copy; without it they do."""
    import os
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    for flag, expect in (([], True), (["--no-copy-ceiling"], False)):
        out = tmp_path / ("off" if flag else "on")
        p = subprocess.run([sys.executable, "-m", "rmsnorm_lab", "--device", "cpu", "--impls", "torch",
                            "--batch-size", "1", "--seq-len", "4", "--hidden-size", "64", "--timing", "cold",
                            "--no-check", "--no-plots", "--save-path", str(out), *flag],
                           capture_output=True, text=True, timeout=300, env=env, cwd=ROOT)
        assert p.returncode == 0, p.stderr[-2000:]
        df = pd.read_csv(out / "results.csv")
        has = "copy_same_us" in df and df["copy_same_us"].notna().any()
        assert has == expect, (flag, df.columns.tolist())
