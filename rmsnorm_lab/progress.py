"""Progress of a long run: a tqdm bar in a terminal or notebook, a line per point otherwise.

A piped or logged run (``python -m rmsnorm_lab ... | tee log``, a CI job) gets
one line per finished point on stderr with the time spent and an estimate of
the time left, so it never sits silent for minutes.
"""
from __future__ import annotations

import sys
import time


def progress(total: int, enabled: bool | None, desc: str = "sweep"):
    """An object with ``update(n)``, ``set_postfix_str(s)`` and ``close()``, or None when off.

    enabled: True / False, or None: a bar in a terminal or notebook, lines when
    stderr is not a terminal.
    """
    interactive = "ipykernel" in sys.modules or sys.stderr.isatty()
    if enabled is False:
        return None
    if enabled is None and not interactive:
        return LineProgress(total, desc)
    try:
        from tqdm.auto import tqdm
        return tqdm(total=total, desc=desc, unit="pt", leave=False)
    except Exception:  # noqa: BLE001 - a progress bar is never worth failing for
        return LineProgress(total, desc)


def fmt_seconds(s: float) -> str:
    s = max(0, int(round(s)))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


class LineProgress:
    """One line per finished point: ``sweep [3/24] triton bfloat16 4096x64 res=0; 12s, ~1m24s left``."""

    def __init__(self, total: int, desc: str = "sweep", stream=None):
        self.total, self.desc, self.n = total, desc, 0
        self.stream = stream if stream is not None else sys.stderr
        self.postfix = ""
        self.t0 = time.perf_counter()

    def set_postfix_str(self, text: str) -> None:
        self.postfix = text

    def update(self, n: int = 1) -> None:
        self.n += n
        spent = time.perf_counter() - self.t0
        left = spent / self.n * (self.total - self.n) if self.n else 0.0
        what = f" {self.postfix}" if self.postfix else ""
        est = f", ~{fmt_seconds(left)} left" if self.n < self.total else ", done"
        print(f"{self.desc} [{self.n}/{self.total}]{what}; {fmt_seconds(spent)}{est}",
              file=self.stream, flush=True)

    def close(self) -> None:
        pass
