"""Results on disk: one tidy CSV row per (impl, case, mode), written atomically as measured.

A run killed at any moment leaves a readable ``results.csv`` holding every
finished point; running again with the same directory skips those points.
"""
from __future__ import annotations

import csv
import json
import os
import tempfile
import time
from pathlib import Path

COLUMNS = [
    "impl", "label", "device", "gpu_name", "dtype", "batch", "seq", "tokens", "hidden", "residual",
    "mode", "status", "error", "us_median", "us_p20", "us_p80", "n_samples", "bytes", "gbps",
    "pct_copy", "copy_gbps", "copy_same_us", "pct_copy_same", "speedup_vs_hf", "err_out", "err_residual",
    "correct", "setup_s", "note", "timestamp", "command",
]
KEY = ("impl", "gpu_name", "dtype", "hidden", "batch", "seq", "residual", "mode")
CSV_NAME = "results.csv"
META_NAME = "env.json"


def _atomic_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", newline="") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def check_writable(save_dir) -> Path:
    """Create save_dir if needed and prove a file can be written there (clear error otherwise)."""
    p = Path(save_dir).expanduser()
    if p.exists() and not p.is_dir():
        raise NotADirectoryError(f"save_path: {str(p)!r} exists and is not a directory")
    try:
        p.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=p, prefix=".write-test.")
        os.close(fd)
        os.unlink(tmp)
    except OSError as e:
        raise PermissionError(f"save_path: cannot write to {str(p)!r}: {e.strerror or e}") from None
    return p


def _key(row: dict) -> tuple:
    return tuple(str(row.get(k, "")) for k in KEY)


class ResultStore:
    """The CSV of one results directory. ``add`` rewrites it atomically after every row."""

    def __init__(self, save_dir):
        self.dir = check_writable(save_dir)
        self.csv = self.dir / CSV_NAME
        for stale in self.dir.glob(f".{CSV_NAME}.*.tmp"):     # left by a run killed mid-write
            try:
                if time.time() - stale.stat().st_mtime > 60:
                    stale.unlink()
            except OSError:
                pass
        self.rows: list[dict] = []
        if self.csv.exists():
            with open(self.csv, newline="") as f:
                self.rows = [dict(r) for r in csv.DictReader(f)]
        self._done = {_key(r) for r in self.rows if r.get("status") in ("ok", "skip")}

    def done(self, row_key: dict) -> bool:
        """Was this point already measured (or skipped for a reason) in an earlier run?"""
        return _key(row_key) in self._done

    def add(self, row: dict) -> None:
        k = _key(row)
        self.rows = [r for r in self.rows if _key(r) != k]      # a re-run replaces an error row
        self.rows.append({c: row.get(c, "") for c in COLUMNS})
        if row.get("status") in ("ok", "skip"):
            self._done.add(k)
        self.flush()

    def flush(self) -> None:
        import io
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=COLUMNS, extrasaction="ignore")
        w.writeheader()
        for r in self.rows:
            w.writerow(r)
        _atomic_write(self.csv, buf.getvalue())

    def write_meta(self, meta: dict) -> None:
        _atomic_write(self.dir / META_NAME, json.dumps(meta, indent=2, default=str) + "\n")


def load_results(save_dir):
    """The DataFrame of a results directory (numbers as numbers), with ``.attrs['env']`` from env.json."""
    import pandas as pd

    d = Path(save_dir)
    if not (d / CSV_NAME).exists():
        raise FileNotFoundError(f"save_path: no {CSV_NAME} in {str(d)!r}")
    df = pd.read_csv(d / CSV_NAME)
    for c in ("residual", "correct"):
        if c in df:
            df[c] = df[c].map(lambda v: str(v).lower() == "true" if str(v) not in ("", "nan") else pd.NA)
    meta = d / META_NAME
    df.attrs["env"] = json.loads(meta.read_text()) if meta.exists() else {}
    df.attrs["dir"] = str(d)
    return df
