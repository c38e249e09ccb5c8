"""Timing: three labelled modes, nothing but the kernel call in the timed region.

- ``cold``:  L2 flushed before every call; CUDA events around the call alone
             (the HBM-bound figure); a GPU spin after the flush keeps host launch
             cost out, however slow the Python wrapper. On CPU: host timer per call after a
             sweep of a buffer that evicts the caches (fast: 2x the last-level cache, 8-64 MB;
             thorough: 64 MB).
- ``graph``: CUDA-graph replay of back-to-back calls, events around each replay
             (the GPU spinning while the host submits it), divided by the calls per
             replay (device time without host launch cost, warm L2). Not available on CPU.
- ``eager``: wall clock per call over many back-to-back calls, then
             synchronize (what a caller without graphs pays, host included).

In-place implementations get their inputs restored from a pristine copy
outside the timed region before each timed call (cold) or replay (graph).

Two harnesses measure the same modes the same way and differ in when they stop:

- ``fast`` (the default): samples in small batches (one synchronization per batch) and stops
  as soon as the median is known to ``StopRule.rel_ci`` (the 95% confidence interval of the
  median, from order statistics, relative to it; nvbench's stdrel idea, made robust to outliers),
  after a minimum sample count, or at ``budget_ms`` of wall time. The cold flush is sized from
  the device's L2 (``FLUSH_L2_FACTOR`` times it) and the GPU spin that keeps host launch cost out
  of a cold sample from the host's launch time, not the call's synchronous time. A call slower
  than the whole budget (the Triton interpreter on CPU) gets three samples (``SLOW_MIN_SAMPLES``).
- ``thorough``: a fixed budget (``budget_ms`` of samples per point and mode), a fixed 256 MB
  flush, the spin from the synchronous call time: more samples than the median needs.
"""
from __future__ import annotations

import statistics
import time
from dataclasses import dataclass

MODES = ("cold", "graph", "eager")
HARNESSES = ("fast", "thorough")
FLUSH_L2_FACTOR = 3          # fast cold flush: 3x the device's L2 (H100/H200: 150 MB), at least 32 MB


@dataclass(frozen=True)
class StopRule:
    """When the fast harness stops sampling one point: the median's 95% confidence interval
    (half-width) below ``rel_ci`` of the median, once ``min_samples`` are in; never more than
    ``max_samples``; samples are taken ``batch`` at a time between synchronizations."""
    rel_ci: float = 0.01
    min_samples: int = 20
    max_samples: int = 400
    batch: int = 10


SLOW_MIN_SAMPLES = 3         # fast harness: samples of a point whose one call outlasts the budget
STOP = {"cold": StopRule(0.01, 20, 400, 10), "graph": StopRule(0.01, 10, 200, 5),
        "eager": StopRule(0.02, 5, 25, 5)}


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
        outs = out if isinstance(out, (tuple, list)) else (out,)
        # 1-byte floats (FP8 outputs) are widened first: torch has no isfinite for them
        return all(bool(torch.isfinite(t.float() if t.is_floating_point() and t.element_size() == 1 else t).all())
                   for t in outs if isinstance(t, torch.Tensor))


def median_rel_ci(samples) -> float:
    """Half-width of the median's ~95% confidence interval (order statistics n/2 +- 0.98 sqrt(n)),
    relative to the median; inf with fewer than 3 samples."""
    import math
    s = sorted(samples)
    n = len(s)
    if n < 3:
        return float("inf")
    med = statistics.median(s)
    half = 0.98 * math.sqrt(n)
    lo, hi = max(0, math.floor(n / 2 - half)), min(n - 1, math.ceil(n / 2 + half))
    return (s[hi] - s[lo]) / 2 / med if med > 0 else float("inf")


def _enough(samples, rule: StopRule, t0: float, budget_ms: float) -> bool:
    n = len(samples)
    if n >= rule.max_samples:
        return True
    if n >= SLOW_MIN_SAMPLES and statistics.median(samples) / 1e3 > budget_ms:
        return True              # one call outlasts the whole budget: the median of three
    if n < rule.min_samples:
        return False
    return median_rel_ci(samples) <= rule.rel_ci or (time.perf_counter() - t0) * 1e3 >= budget_ms


def time_runner(runner: Runner, mode: str, device: str, *, budget_ms: float = 60.0,
                min_reps: int = 20, max_reps: int = 1000, harness: str = "fast") -> Timing:
    """Time one prepared call in one mode. ``harness``: ``fast`` (stop when the median is known to
    1%, ``budget_ms`` at most) or ``thorough`` (``budget_ms`` of samples); see the module doc."""
    if mode not in MODES:
        raise ValueError(f"timing: unknown mode {mode!r}; expected one of {', '.join(MODES)}")
    if harness not in HARNESSES:
        raise ValueError(f"harness: expected one of {', '.join(HARNESSES)}, got {harness!r}")
    if harness == "fast":
        if device.startswith("cuda"):
            return {"cold": _fast_cuda_cold, "graph": _fast_cuda_graph, "eager": _fast_eager}[mode](
                runner, device, budget_ms)
        if mode == "graph":
            raise NotImplementedError("graph mode needs CUDA (CUDA-graph replay)")
        return {"cold": _fast_cpu_cold, "eager": _fast_eager}[mode](runner, device, budget_ms)
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
    # H100; 300 us removed them (experiments/INDEX.md, "cold outliers").
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


_GRAPH_POOLS: dict = {}


def _graph_pool():
    """The memory pool every timing capture on this device shares (``torch.cuda.graph(pool=...)``).

    A graph's private pool goes back to the driver only when the graph is destroyed after a capture
    that completed; a capture that fails (out of memory, say) leaves its pool reserved for the rest of
    the process in torch 2.11 (pytorch/pytorch#190348), and every later capture then starts short of
    that memory. On an H200 one failed capture at 16384 x 65536 + residual (fwd+bwd) was followed by a
    failed capture at every later point, with 120-133 GiB "reserved but unallocated", as such a leak
    would do. With one shared pool a later capture reuses the free blocks of earlier ones, a leaked
    one's included. Sharing is safe here: the harness destroys each graph before it captures the next
    one, and never replays an old one.

    A pool lives only while some graph captured into it does: once the last one is destroyed, the next
    capture into the same handle fails inside the allocator (torch 2.11 asserts ``use_count > 0``; seen
    on an H200 at the second graph point). So a one-kernel anchor graph, captured into the pool here and
    kept with the handle, holds it for the life of the process. The cost: the pool stays reserved at its
    high-water mark (the largest capture), for graphs only.
    """
    import torch
    dev = torch.cuda.current_device()
    if dev not in _GRAPH_POOLS:
        handle = torch.cuda.graph_pool_handle()
        anchor, scratch = torch.cuda.CUDAGraph(), torch.zeros(1, device=f"cuda:{dev}")
        with torch.cuda.graph(anchor, pool=handle):
            scratch.add_(1)                      # in place: the anchor allocates nothing in the pool
        _GRAPH_POOLS[dev] = (handle, anchor, scratch)
    return _GRAPH_POOLS[dev][0]


def _graph_capturer(runner):
    """Warm ``runner`` (and a side stream) for capture; returns ``capture(n)``: a CUDA graph of n calls,
    replayed once."""
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
        # A capture allocates from the graph's own pool, and while a capture is under way the caching
        # allocator does not give the general pool's cached blocks back to the driver when that pool runs
        # short: after the warm-up calls of a large point (and the checks before them) those blocks can
        # hold most of the GPU, and the capture fails with "out of memory" though 100+ GiB are "reserved
        # but unallocated". Give them back first.
        torch.cuda.empty_cache()
        g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g, pool=_graph_pool()):
            for _ in range(n):
                runner()
        g.replay()
        torch.cuda.synchronize()
        return g
    return capture


def _drop_graph(runner, keep_output: bool) -> None:
    """Before a graph is deleted: the runner's last output lives in the graph's private memory pool,
    and while anything references it the pool cannot be given back after the graph is gone. Keep a
    copy outside the pool (``keep_output``: the finite check after timing reads it) or nothing."""
    import torch
    out = runner.last
    if keep_output and out is not None:
        outs = out if isinstance(out, (tuple, list)) else (out,)
        copies = [t.clone() if isinstance(t, torch.Tensor) else t for t in outs]
        runner.last = type(out)(copies) if isinstance(out, (tuple, list)) else copies[0]
    else:
        runner.last = None


def _cuda_graph(runner, device, budget_ms, min_reps, max_reps) -> Timing:
    import torch
    capture = _graph_capturer(runner)

    # Before each timed replay the GPU spins while the host submits the replay and the end event:
    # without it, an idle GPU records the start event at once and then waits for the submission,
    # so host launch latency (and any host stall) is timed too: tens of us "per call" from a small
    # trial graph, too few calls per replay, and jitter at small token counts.
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
    # a host stall during that estimate can leave 1 call per replay, and the figure then measures
    # the replay's launch latency (~50 us) instead of the kernel.
    trial = 4
    g = capture(trial)
    per_call = max(min(replay_us(g, trial) for _ in range(3)), 0.5)
    _drop_graph(runner, keep_output=False)
    del g                       # its memory is free for the next capture (which empties the cache first)
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
    _drop_graph(runner, keep_output=True)
    del g
    torch.cuda.empty_cache()    # (many large points in one process otherwise run out of GPU memory)
    return _quantiles([s.elapsed_time(e) * 1000 / calls for s, e in zip(starts, ends)], "graph",
                      note=f"{calls} calls per replay")


def _eager_sample(runner, device, calls: int) -> float:
    """One eager sample: µs per call over ``calls`` back-to-back calls between two synchronizations."""
    runner.restore()
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(calls):
        runner()
    _sync(device)
    return (time.perf_counter() - t0) / calls * 1e6


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
        samples.append(_eager_sample(runner, device, calls))
    return _quantiles(samples, "eager", note=f"{calls} back-to-back calls per sample")


def _cpu_cold(runner, device, budget_ms, min_reps, max_reps) -> Timing:
    import torch
    if "cpu" not in _FLUSH:                 # made once: 64 MB
        _FLUSH["cpu"] = torch.empty(64 * 1024 * 1024, dtype=torch.int8)
    sweep = _FLUSH["cpu"]
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


# ---------------------------------------------------------------- the fast harness

def flush_bytes(device) -> int:
    """Bytes the fast harness writes to evict L2 before a cold sample: ``FLUSH_L2_FACTOR`` x the
    device's L2 (at least 32 MB; 256 MB where the L2 size is unknown)."""
    import torch
    try:
        l2 = int(torch.cuda.get_device_properties(torch.device(device)).L2_cache_size)
    except Exception:  # noqa: BLE001 - an unknown L2: the thorough harness's size
        l2 = 0
    return max(32 << 20, FLUSH_L2_FACTOR * l2) if l2 > 0 else 256 << 20


def _fast_flush_buffer(device):
    import torch
    key = ("fast", device)
    if key not in _FLUSH:
        _FLUSH[key] = torch.empty(flush_bytes(device), dtype=torch.int8, device=device)
    return _FLUSH[key]


def _host_launch_us(runner, n=3) -> float:
    """Host time to enqueue one timed call (events and the call), with the GPU busy meanwhile."""
    import torch
    s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    runner.restore()
    torch.cuda._sleep(4_000_000)           # ~2 ms: the queue never drains while the host enqueues
    t0 = time.perf_counter()
    for _ in range(n):
        s.record()
        runner()
        e.record()
    dt = (time.perf_counter() - t0) / n * 1e6
    torch.cuda.synchronize()
    return dt


def _fast_cuda_cold(runner, device, budget_ms) -> Timing:
    import torch
    rule = STOP["cold"]
    flush = _fast_flush_buffer(device)
    for _ in range(3):          # warm-up: module load, JIT, handles
        runner.restore()
        runner()
    host = _host_launch_us(runner)
    # the spin covers the host's enqueue of the start event and the call (3x, 300-2000 us, as the
    # thorough harness), so host launch cost never reaches the figure
    spin_cycles = int(_cold_spin_us(host) * 2000)
    t0 = time.perf_counter()
    samples: list = []
    while not _enough(samples, rule, t0, budget_ms):
        ev = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True))
              for _ in range(rule.batch)]
        for s, e in ev:
            runner.restore()
            flush.zero_()
            torch.cuda._sleep(spin_cycles)
            s.record()
            runner()
            e.record()
        ev[-1][1].synchronize()
        samples += [s.elapsed_time(e) * 1000 for s, e in ev]
    return _quantiles(samples, "cold", note=f"flush {flush.numel() >> 20} MB")


def _fast_cuda_graph(runner, device, budget_ms) -> Timing:
    import torch
    rule = STOP["graph"]
    capture = _graph_capturer(runner)

    spin_cycles = 400_000                           # >= 200 us at <= 2 GHz (see _cuda_graph)

    def replays(g, n, k):
        ev = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(k)]
        for s, e in ev:
            runner.restore()
            torch.cuda._sleep(spin_cycles)
            s.record()
            g.replay()
            e.record()
        ev[-1][1].synchronize()
        return [s.elapsed_time(e) * 1000 / n for s, e in ev]

    trial = 4                                       # calls per replay from a trial graph's device time
    g = capture(trial)
    per_call = max(min(replays(g, trial, 3)), 0.5)
    _drop_graph(runner, keep_output=False)
    del g                       # its memory is free for the next capture (which empties the cache first)
    calls = int(max(1, min(100, 500.0 / per_call)))
    g = capture(calls)
    t0 = time.perf_counter()
    samples: list = []
    while not _enough(samples, rule, t0, budget_ms):
        samples += replays(g, calls, rule.batch)
    _drop_graph(runner, keep_output=True)
    del g
    torch.cuda.empty_cache()            # (many large points in one process otherwise run out of GPU memory)
    return _quantiles(samples, "graph", note=f"{calls} calls per replay")


def _warm_up(runner, device, n=3) -> float:
    """Warm-up calls (module load, JIT, handles); returns the synchronous µs of the last one. A call
    slower than 2 ms needs no more than one (the interpreter on CPU: each call is tens of ms)."""
    us = 0.0
    for _ in range(n):
        runner.restore()
        _sync(device)
        t0 = time.perf_counter()
        runner()
        _sync(device)
        us = (time.perf_counter() - t0) * 1e6
        if us > 2000:
            break
    return us


def _fast_eager(runner, device, budget_ms) -> Timing:
    rule = STOP["eager"]
    first = _warm_up(runner, device)
    est = first if first > 2000 else max(_estimate_us(runner, device, 3), 1.0)
    calls = int(max(1, min(2000, 2000.0 / est)))     # ~2 ms of back-to-back calls per sample (one slow call)
    t0 = time.perf_counter()
    samples: list = []
    while not _enough(samples, rule, t0, budget_ms):
        samples.append(_eager_sample(runner, device, calls))
    return _quantiles(samples, "eager", note=f"{calls} back-to-back calls per sample")


def _cpu_cache_bytes() -> int:
    """The last-level cache of CPU 0 from sysfs (0 where unknown)."""
    import glob
    best = 0
    for path in glob.glob("/sys/devices/system/cpu/cpu0/cache/index*/size"):
        try:
            txt = open(path).read().strip().upper()
            mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(txt[-1:], 1)
            best = max(best, int(txt.rstrip("KMG")) * mult)
        except (OSError, ValueError):
            continue
    return best


def _fast_cpu_cold(runner, device, budget_ms) -> Timing:
    import torch
    rule = StopRule(0.02, 5, 100, 1)
    key = ("fast", "cpu")
    if key not in _FLUSH:                  # made once: 2x the last-level cache, 8-64 MB (64 MB if unknown)
        llc = _cpu_cache_bytes()
        _FLUSH[key] = torch.empty(min(64 << 20, max(8 << 20, 2 * llc)) if llc else 64 << 20, dtype=torch.int8)
    sweep = _FLUSH[key]
    _warm_up(runner, device, 2)
    t0 = time.perf_counter()
    samples: list = []
    while not _enough(samples, rule, t0, budget_ms):
        runner.restore()
        sweep.add_(1)                      # evict the caches: 2x the last-level cache
        t1 = time.perf_counter()
        runner()
        samples.append((time.perf_counter() - t1) * 1e6)
    return _quantiles(samples, "cold", note="host timer (CPU)")
