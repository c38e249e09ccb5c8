"""The fast and thorough timing harnesses on CPU: the stopping rule, the switch, and the side-by-side
agreement experiment's smoke mode (2 tiny shapes)."""
from __future__ import annotations

import csv
import importlib.util
import math
import os
import time
from pathlib import Path

import pytest
import torch

from rmsnorm_lab.impls.torch_impls import hf_rmsnorm
from rmsnorm_lab.sweep import SweepConfig, run_sweep
from rmsnorm_lab.timing import HARNESSES, STOP, Runner, StopRule, _enough, median_rel_ci, time_runner

ROOT = Path(__file__).resolve().parents[1]


def test_median_ci_shrinks_with_samples_and_ignores_outliers():
    assert median_rel_ci([1.0, 1.0]) == math.inf
    tight = [100.0 + 0.1 * (i % 7) for i in range(40)]
    assert median_rel_ci(tight) < 0.005
    spiky = tight[:-4] + [1e4] * 4               # 10% outliers leave the median's interval alone
    assert median_rel_ci(spiky) < 0.005
    wide = [100.0 * (1 + (i % 10) / 10) for i in range(10)]
    assert median_rel_ci(wide) > 0.1


def test_stop_rule_minimum_precision_and_budget():
    rule = StopRule(rel_ci=0.01, min_samples=5, max_samples=50, batch=5)
    t0 = time.perf_counter()
    assert not _enough([1.0] * 4, rule, t0, 1e9)                      # under the minimum
    assert _enough([1.0] * 5, rule, t0, 1e9)                          # precise enough
    noisy = [float(i % 10 + 1) for i in range(20)]
    assert not _enough(noisy, rule, t0, 1e9)                          # not yet: keep sampling
    assert _enough(noisy, rule, t0 - 10, 1.0)                         # the budget is spent
    assert _enough(noisy * 3, rule, t0, 1e9)                          # max_samples
    assert _enough([2e4, 3e4, 2.5e4], rule, t0, 5.0)                  # each call outlasts the budget
    assert not _enough([2e4, 3e4], rule, t0, 5.0)
    for mode, r in STOP.items():
        assert r.min_samples >= 5 and r.max_samples > r.min_samples, mode


@pytest.mark.parametrize("harness", HARNESSES)
@pytest.mark.parametrize("mode", ["cold", "eager"])
def test_both_harnesses_time_on_cpu(harness, mode):
    x = torch.randn(4, 64)
    w = torch.randn(64)
    t = time_runner(Runner(hf_rmsnorm, x, w, None, 1e-6, False), mode, "cpu", budget_ms=5, harness=harness)
    assert t.mode == mode and t.n >= 5 and 0 < t.p20_us <= t.median_us <= t.p80_us


@pytest.mark.parametrize("mode", ["cold", "eager"])
def test_a_call_slower_than_the_budget_is_sampled_three_times(mode):
    """The fast harness on a call that outlasts the whole budget (the Triton interpreter on CPU):
    the median of three samples, not the mode's minimum; a fast call still gets that minimum."""
    def slow(x, w, r, eps):
        time.sleep(0.012)
        return hf_rmsnorm(x, w, r, eps)
    x, w = torch.randn(2, 16), torch.randn(16)
    t = time_runner(Runner(slow, x, w, None, 1e-6, False), mode, "cpu", budget_ms=5)
    assert t.n == 3 and t.median_us >= 12_000
    fast = time_runner(Runner(hf_rmsnorm, x, w, None, 1e-6, False), mode, "cpu", budget_ms=5)
    assert fast.n >= 5


def test_harness_is_validated():
    runner = Runner(hf_rmsnorm, torch.randn(2, 8), torch.randn(8), None, 1e-6, False)
    with pytest.raises(ValueError, match="harness"):
        time_runner(runner, "cold", "cpu", harness="quick")
    with pytest.raises(ValueError, match="harness: expected one of fast, thorough.*'fast'"):
        SweepConfig(harness="fats", device="cpu").validate()
    with pytest.raises(TypeError, match="prewarm"):
        SweepConfig(prewarm=True, device="cpu").validate()
    assert SweepConfig().harness == "fast"


def test_sweep_records_its_phases():
    df = run_sweep(hidden=[32], batch=[1], seq=[2], dtypes=["float32"], residual=[False], impls=["torch"],
                   device="cpu", modes=["cold"], budget_ms=2, progress=False)
    phases = df.attrs["env"]["phases"]
    assert {"copy_bandwidth", "check:torch", "time_cold:torch", "copy_ceiling"} <= set(phases)
    assert all(v >= 0 for v in phases.values())


def test_harness_agreement_smoke(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("harness_agreement", ROOT / "experiments" / "harness_agreement.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert mod.main(["--smoke", "--device", "cpu", "--out", str(tmp_path)]) == 0
    rows = list(csv.DictReader(open(tmp_path / "harness_agreement.csv")))
    assert len(rows) == 2 * 2                     # 2 shapes x (cold, eager), torch
    assert all(r["status"] == "ok" and float(r["ratio"]) > 0 and int(r["new_n"]) >= 10 for r in rows)
    out = capsys.readouterr().out
    assert "max |ratio-1|" in out and "cold:" in out and "eager:" in out


def test_drop_graph_keeps_a_copy_outside_the_pool():
    """Before a CUDA graph is deleted, the runner's last output (allocated in the graph's private memory
    pool) is replaced by a copy (the finite check reads it) or dropped, so the pool can be released."""
    import torch

    from rmsnorm_lab.timing import Runner, _drop_graph
    x = torch.ones(4, 8)
    r = Runner(lambda x, w, r, eps: (x * 2, x + 1), x, None, None, 1e-6, False)
    out = r()
    _drop_graph(r, keep_output=True)
    assert isinstance(r.last, tuple) and all(a.data_ptr() != b.data_ptr() for a, b in zip(r.last, out))
    assert all(torch.equal(a, b) for a, b in zip(r.last, out)) and r.outputs_finite()
    r()
    _drop_graph(r, keep_output=False)
    assert r.last is None


def test_capture_gives_cached_blocks_back_first(monkeypatch):
    """Each CUDA-graph capture starts with the general pool's cached blocks given back to the driver: while a
    capture is under way the caching allocator does not release them itself, so a large point's capture
    would fail with most of the GPU cached but unused; and all captures share one pool (CUDA calls faked:
    this machine may have no GPU)."""
    import contextlib

    import torch

    from rmsnorm_lab import timing
    calls = []

    class Graph:
        def replay(self):
            calls.append("replay")

    pools = []

    @contextlib.contextmanager
    def graph(g, pool=None):
        calls.append("capture")
        pools.append(pool)
        yield

    @contextlib.contextmanager
    def on_stream(s):
        yield

    class Stream:
        def wait_stream(self, other):
            pass

    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: calls.append("empty_cache"))
    monkeypatch.setattr(torch.cuda, "CUDAGraph", Graph)
    monkeypatch.setattr(torch.cuda, "graph", graph)
    monkeypatch.setattr(torch.cuda, "Stream", Stream)
    monkeypatch.setattr(torch.cuda, "stream", on_stream)
    monkeypatch.setattr(torch.cuda, "current_stream", Stream)
    monkeypatch.setattr(torch.cuda, "synchronize", lambda: None)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    handles = iter(range(100))
    monkeypatch.setattr(torch.cuda, "graph_pool_handle", lambda: (next(handles), 0))
    monkeypatch.setattr(timing, "_GRAPH_POOLS", {})
    x = torch.ones(2, 4)
    runner = timing.Runner(lambda x, w, r, eps: calls.append("call"), x, None, None, 1e-6, False)
    zeros = torch.zeros
    monkeypatch.setattr(torch, "zeros", lambda *shape, device=None: zeros(*shape))   # no GPU here
    capture = timing._graph_capturer(runner)
    calls.clear()
    capture(2)                 # the first capture on a device makes the shared pool and its anchor graph
    assert calls == ["empty_cache", "capture", "capture", "call", "call", "replay"]
    calls.clear()
    capture(1)                 # every capture shares one pool (a failed capture's pool is then reused)
    assert calls == ["empty_cache", "capture", "call", "replay"]
    assert len(pools) == 3 and pools[0] is not None and pools[0] == pools[1] == pools[2]
    handle, anchor, scratch = timing._GRAPH_POOLS[0]
    assert handle == pools[0] and isinstance(anchor, Graph)   # the anchor graph keeps the pool alive
    assert scratch.tolist() == [1.0]                         # its one kernel ran while it was captured


def test_sweeps_use_expandable_segments_unless_the_user_chose(monkeypatch):
    """The lab's processes ask for expandable segments before CUDA starts (large points after many others
    otherwise ran out of memory with 100+ GiB reserved but unallocated); a user's allocator setting wins."""
    from rmsnorm_lab import device as D
    for var in D._ALLOC_VARS:          # set first, so that monkeypatch restores the state before the test
        monkeypatch.setenv(var, "x")
        monkeypatch.delenv(var)
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    got = D.use_expandable_segments()
    assert os.environ["PYTORCH_CUDA_ALLOC_CONF"] == D.ALLOC_CONF and got == f"PYTORCH_CUDA_ALLOC_CONF={D.ALLOC_CONF}"
    monkeypatch.setenv("PYTORCH_CUDA_ALLOC_CONF", "max_split_size_mb:512")
    assert D.use_expandable_segments() == "PYTORCH_CUDA_ALLOC_CONF=max_split_size_mb:512"
    monkeypatch.delenv("PYTORCH_CUDA_ALLOC_CONF")
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    assert "CUDA had started" in D.use_expandable_segments()
    assert "PYTORCH_CUDA_ALLOC_CONF" not in os.environ
