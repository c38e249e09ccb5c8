"""The ceiling: the device's own copy bandwidth, measured in the same run."""
from __future__ import annotations

import statistics
import time

from .cases import bytes_moved  # noqa: F401  (re-exported: the bytes model lives with the cases)


def measure_copy_bandwidth(device: str, nbytes: int | None = None, reps: int = 20) -> float:
    """GB/s of a large device-to-device copy, counting bytes read + written (median of reps)."""
    import torch

    on_cuda = device.startswith("cuda")
    nbytes = nbytes or ((1 << 30) if on_cuda else (64 << 20))
    src = torch.empty(nbytes, dtype=torch.uint8, device=device).random_(0, 255)
    dst = torch.empty_like(src)
    for _ in range(3):
        dst.copy_(src)
    times = []
    if on_cuda:
        torch.cuda.synchronize()
        for _ in range(reps):
            s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            s.record()
            dst.copy_(src)
            e.record()
            e.synchronize()
            times.append(s.elapsed_time(e) / 1e3)
    else:
        for _ in range(max(3, reps // 4)):
            t0 = time.perf_counter()
            dst.copy_(src)
            times.append(time.perf_counter() - t0)
    del src, dst
    return 2 * nbytes / statistics.median(times) / 1e9


def same_size_copy_runner(nbytes: int, device: str):
    """A timing Runner that copies ``nbytes // 2`` bytes into a second buffer: the bytes an RMSNorm of
    ``nbytes`` moves (half read, half written), timed by the same harness as the kernels, so its figure
    is the floor that mode allows for those bytes (flush, launch and ramp included)."""
    import torch

    from .timing import Runner

    half = max(1, int(nbytes) // 2)
    src = torch.empty(half, dtype=torch.uint8, device=device).random_(0, 255)
    dst = torch.empty_like(src)

    def copy(a, _w, _r, _eps):
        return dst.copy_(a)
    return Runner(copy, src, None, None, 0.0, False)
