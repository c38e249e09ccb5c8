"""Timing: three labelled modes, nothing but the kernel call in the timed region.

- ``cold``:  L2 flushed before every call; CUDA events around the call alone
             (the HBM-bound figure); a GPU spin after the flush keeps host launch
             cost out, however slow the Python wrapper. On CPU: host timer per call after a 64 MB sweep.
- ``graph``: CUDA-graph replay of back-to-back calls, events around each replay
             (the GPU spinning while the host submits it), divided by the calls per
             replay (device time without host launch cost, warm L2). Not available on CPU.
- ``eager``: wall clock per call over many back-to-back calls, then
             synchronize (what a caller without graphs pays, host included).

In-place implementations get their inputs restored from a pristine copy
outside the timed region before each timed call (cold) or replay (graph).
"""
from __future__ import annotations

import statistics
import time
from dataclasses import dataclass

MODES = ("cold", "graph", "eager")


@dataclass
class Timing:
    median_us: float
    p20_us: float
    p80_us: float
    n: int
    mode: str
    note: str = ""


def _quantiles(samples_us, mode, note="") -> Timing:
    s = sorted(samples_us)
    if not s:
        raise RuntimeError("no timing samples")

    def q(p):
        if len(s) == 1:
            return s[0]
        k = p * (len(s) - 1)
        lo = int(k)
        hi = min(lo + 1, len(s) - 1)
        return s[lo] + (s[hi] - s[lo]) * (k - lo)
    return Timing(statistics.median(s), q(0.2), q(0.8), len(s), mode, note)


class Runner:
    """A prepared call: working buffers, their pristine copies and a restore step."""

    def __init__(self, fn, x, w, r, eps, inplace: bool):
        self.fn, self.w, self.eps = fn, w, eps
        self.x0, self.r0 = x, r
        self.inplace = inplace and r is not None
        self.x = x.clone() if self.inplace else x
        self.r = r.clone() if (self.inplace and r is not None) else r
        self.last = None

    def __call__(self):
        self.last = self.fn(self.x, self.w, self.r, self.eps)
        return self.last

    def restore(self):
        if self.inplace:
            self.x.copy_(self.x0)
            self.r.copy_(self.r0)

    def outputs_finite(self) -> bool:
        import torch
        out = self.last
        outs = out if isinstance(out, tuple) else (out,)
        return all(bool(torch.isfinite(t).all()) for t in outs if t is not None)


def time_runner(runner: Runner, mode: str, device: str, *, budget_ms: float = 60.0,
                min_reps: int = 20, max_reps: int = 1000) -> Timing:
    if mode not in MODES:
        raise ValueError(f"timing: unknown mode {mode!r}; expected one of {', '.join(MODES)}")
    if device.startswith("cuda"):
        return {"cold": _cuda_cold, "graph": _cuda_graph, "eager": _eager}[mode](
            runner, device, budget_ms, min_reps, max_reps)
    if mode == "graph":
        raise NotImplementedError("graph mode needs CUDA (CUDA-graph replay)")
    return {"cold": _cpu_cold, "eager": _eager}[mode](runner, device, budget_ms, min_reps, max_reps)


def _sync(device):
    if device.startswith("cuda"):
        import torch
        torch.cuda.synchronize()


_FLUSH: dict = {}


def _flush_buffer(device):
    import torch
    if device not in _FLUSH:
        # 256 MB: several times any current GPU's L2 (H100: 50 MB)
        _FLUSH[device] = torch.empty(256 * 1024 * 1024, dtype=torch.int8, device=device)
    return _FLUSH[device]


def _estimate_us(runner, device, n=5) -> float:
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(n):
        runner.restore()
        runner()
    _sync(device)
    return (time.perf_counter() - t0) / n * 1e6


def _cold_spin_us(est_us: float) -> float:
    """How long the GPU idles (spins) between the flush and a cold call: 3x the host estimate, 300-2000 us."""
    return min(2000.0, max(300.0, 3.0 * est_us))


def _cuda_cold(runner, device, budget_ms, min_reps, max_reps) -> Timing:
    import torch
    flush = _flush_buffer(device)
    for _ in range(3):          # warm-up: module load, JIT, handles
        runner.restore()
        runner()
    est = _estimate_us(runner, device)
    # After the flush the GPU idles on a short spin while the host enqueues the start
    # event and the call, so host launch cost (Python wrappers) stays out of the figure.
    # A 50 us floor let ~1 in 300 samples (more inside long sweeps) include a host stall on an
    # H100; 300 us removed them (reports/nvidia-h100-80gb-hbm3/tune/cold_outliers.log).
    spin_cycles = int(_cold_spin_us(est) * 2000)   # ~2 GHz: a lower bound is enough
    reps = int(max(min_reps, min(max_reps, budget_ms * 1000 / (est + 100.0))))
    starts = [torch.cuda.Event(enable_timing=True) for _ in range(reps)]
    ends = [torch.cuda.Event(enable_timing=True) for _ in range(reps)]
    for i in range(reps):
        runner.restore()
        flush.zero_()
        torch.cuda._sleep(spin_cycles)
        starts[i].record()
        runner()
        ends[i].record()
    torch.cuda.synchronize()
    return _quantiles([s.elapsed_time(e) * 1000 for s, e in zip(starts, ends)], "cold")


def _cuda_graph(runner, device, budget_ms, min_reps, max_reps) -> Timing:
    import torch
    for _ in range(3):
        runner.restore()
        runner()
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):                 # warm the side stream before capture
        for _ in range(2):
            runner()
    torch.cuda.current_stream().wait_stream(stream)

    def capture(n):
        runner.restore()
        g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g):
            for _ in range(n):
                runner()
        g.replay()
        torch.cuda.synchronize()
        return g

    # Before each timed replay the GPU spins while the host submits the replay and the end event:
    # without it, an idle GPU records the start event at once and then waits for the submission,
    # so host launch latency (and any host stall) was timed too: in a small trial graph that gave
    # 50-70 us "per call" and 7-8 calls per replay (H100, 2026-11-25: ours and FlashInfer at
    # 6144 x 256 + res), and jitter at 1-64 tokens.
    spin_cycles = 400_000                           # >= 200 us at <= 2 GHz

    def replay_us(g, n):
        runner.restore()
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        torch.cuda._sleep(spin_cycles)
        s.record()
        g.replay()
        e.record()
        e.synchronize()
        return s.elapsed_time(e) * 1000 / n

    # Calls per replay from the device time of a trial graph, not from a host-timed estimate:
    # a host stall during that estimate once left 1 call per replay, and the figure then measured
    # the replay's launch latency (~50 us) instead of the kernel (H100, 2026-11-25, every impl).
    trial = 4
    g = capture(trial)
    per_call = max(min(replay_us(g, trial) for _ in range(3)), 0.5)
    del g
    calls = int(max(1, min(100, 500.0 / per_call)))  # ~0.5 ms of work per replay for small kernels
    g = capture(calls)
    reps = int(max(min_reps, min(200, budget_ms * 1000 / max(per_call * calls, 1.0))))
    starts = [torch.cuda.Event(enable_timing=True) for _ in range(reps)]
    ends = [torch.cuda.Event(enable_timing=True) for _ in range(reps)]
    for i in range(reps):
        runner.restore()
        torch.cuda._sleep(spin_cycles)
        starts[i].record()
        g.replay()
        ends[i].record()
    torch.cuda.synchronize()
    del g
    return _quantiles([s.elapsed_time(e) * 1000 / calls for s, e in zip(starts, ends)], "graph",
                      note=f"{calls} calls per replay")


def _eager(runner, device, budget_ms, min_reps, max_reps) -> Timing:
    for _ in range(3):
        runner.restore()
        runner()
    _sync(device)
    est = max(_estimate_us(runner, device), 1.0)
    calls = int(max(10, min(2000, 5000.0 / est)))    # ~5 ms of back-to-back calls per sample
    samples = []
    rounds = int(max(5, min(25, budget_ms * 1000 / (est * calls))))
    for _ in range(rounds):
        runner.restore()
        _sync(device)
        t0 = time.perf_counter()
        for _ in range(calls):
            runner()
        _sync(device)
        samples.append((time.perf_counter() - t0) / calls * 1e6)
    return _quantiles(samples, "eager", note=f"{calls} back-to-back calls per sample")


def _cpu_cold(runner, device, budget_ms, min_reps, max_reps) -> Timing:
    import torch
    sweep = _FLUSH.setdefault("cpu", torch.empty(64 * 1024 * 1024, dtype=torch.int8))
    for _ in range(2):
        runner.restore()
        runner()
    est = _estimate_us(runner, device, 3)
    reps = int(max(5, min(max_reps, budget_ms * 1000 / (est + 2000))))
    samples = []
    for _ in range(reps):
        runner.restore()
        sweep.add_(1)                      # evict the caches
        t0 = time.perf_counter()
        runner()
        samples.append((time.perf_counter() - t0) * 1e6)
    return _quantiles(samples, "cold", note="host timer (CPU)")
