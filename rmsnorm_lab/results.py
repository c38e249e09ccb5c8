"""Results on disk: one tidy CSV row per (impl, case, mode), written atomically as measured.

A run killed at any moment leaves a readable ``results.csv`` holding every
finished point; running again with the same directory skips those points.
``env.json`` records what defines the run (``run``: grid, dtypes, residual
variants, implementations, modes, device, seed, eps, norm variant, passes, head size, models
and their split); a run of another
configuration refuses that directory instead of mixing its points in.
"""
from __future__ import annotations

import csv
import io
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
    "variant", "pass", "head_dim", "err_dw", "fp8_frac_off", "scale_err",
    "models",
]
KEY = ("impl", "gpu_name", "dtype", "hidden", "batch", "seq", "residual", "mode", "variant", "pass")
# what a row without these columns (written before they existed) measured: plain RMSNorm's forward
ROW_DEFAULTS = {"variant": "plain", "pass": "fwd"}
CSV_NAME = "results.csv"
META_NAME = "env.json"
# the SweepConfig fields that define which points a run measures and how (not budget, progress, paths)
RUN_FIELDS = ("hidden", "batch", "seq", "tokens", "dtypes", "residual", "impls", "modes", "device", "seed", "eps",
              "variant", "passes", "head_dim", "models", "models_split")
# the value of a run field that an env.json written before the field existed measured with
RUN_DEFAULTS = {"variant": "plain", "passes": ["fwd"], "head_dim": 128, "models": None, "models_split": "validate"}


def _file_mode() -> int:
    """The mode a plain ``open(path, "w")`` gives: 0666 less the umask (e.g. 0644)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def _atomic_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, _file_mode())             # mkstemp creates 0600
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


def run_identity(config: dict, gpu_name: str | None) -> dict:
    """What defines a run: the RUN_FIELDS of a validated SweepConfig (``asdict``) and the device's name.

    Lists are sorted, so the same grid given in another order is the same run.
    """
    run = {}
    for k in RUN_FIELDS:
        v = config.get(k)
        run[k] = sorted(v, key=lambda x: (type(x).__name__, x)) if isinstance(v, (list, tuple)) else v
    if run.get("variant", "plain") != "qk-norm":
        run["head_dim"] = RUN_DEFAULTS["head_dim"]          # the head size matters to qk-norm only
    if not run.get("models"):
        run["models"] = None
        run["models_split"] = RUN_DEFAULTS["models_split"]  # the split matters to a run of models only
    run["gpu_name"] = gpu_name
    return run


def stored_run(save_dir) -> dict | None:
    """The run identity recorded in a results directory's env.json (older files: from its config), or None."""
    meta = Path(save_dir) / META_NAME
    try:
        data = json.loads(meta.read_text())
    except (OSError, ValueError):
        return None
    if isinstance(data.get("run"), dict):
        return data["run"]
    if isinstance(data.get("config"), dict):
        return run_identity(data["config"], data.get("gpu_name"))
    return None


def check_same_run(save_dir, run: dict, name: str = "save_path") -> None:
    """ValueError naming ``name`` when ``save_dir`` holds results of another configuration.

    A directory without results, or with results of this very configuration (a
    resumed run), passes. Results without a recorded configuration are refused too.
    """
    d = Path(save_dir)
    if not _has_rows(d / CSV_NAME):
        return
    old = stored_run(d)
    if old is None:
        raise ValueError(f"{name}: {str(d)!r} holds a {CSV_NAME} without a recorded configuration; "
                         f"its points would mix with this run's: give another {name} or remove it")
    new = json.loads(json.dumps(run, default=str))         # the form env.json holds
    old = {**RUN_DEFAULTS, **old}
    new = {**RUN_DEFAULTS, **new}
    diff = [k for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]
    if diff:
        shown = "; ".join(f"{k} {_short(old.get(k))} there, {_short(new.get(k))} now" for k in diff[:4])
        raise ValueError(f"{name}: {str(d)!r} holds results of another configuration ({shown}); "
                         f"mixing them would give tables and plots of two runs under one env.json: "
                         f"give another {name}, or remove it")


def _short(v) -> str:
    s = json.dumps(v)
    return s if len(s) <= 60 else s[:57] + "..."


def _has_rows(csv_path: Path) -> bool:
    try:
        with open(csv_path, newline="") as f:
            return sum(1 for _ in f) > 1
    except OSError:
        return False


def _with_defaults(row: dict) -> dict:
    for k, v in ROW_DEFAULTS.items():
        if not row.get(k):
            row[k] = v
    return row


def _key(row: dict) -> tuple:
    return tuple(str(row.get(k, "")) for k in KEY)


class ResultStore:
    """The CSV of one results directory. ``add`` appends each row as it is measured (written through
    to the file, so a run that dies keeps every row before it); a row that replaces an earlier one
    of the same point (a re-run of an error row) rewrites the file atomically."""

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
        header = None
        if self.csv.exists():
            with open(self.csv, newline="") as f:
                reader = csv.DictReader(f)
                self.rows = [_with_defaults(dict(r)) for r in reader]
                header = reader.fieldnames
        self._keys = {_key(r) for r in self.rows}
        self._done = {_key(r) for r in self.rows if r.get("status") in ("ok", "skip")}
        self._appendable = header == COLUMNS     # an older file (other columns) is rewritten first

    def done(self, row_key: dict) -> bool:
        """Was this point already measured (or skipped for a reason) in an earlier run?"""
        return _key(row_key) in self._done

    def add(self, row: dict) -> None:
        k = _key(row)
        row = {c: row.get(c, "") for c in COLUMNS}
        if row.get("status") in ("ok", "skip"):
            self._done.add(k)
        if k in self._keys or not self._appendable:
            self.rows = [r for r in self.rows if _key(r) != k] + [row]     # a re-run replaces an error row
            self._keys.add(k)
            self.flush()
            return
        self.rows.append(row)
        self._keys.add(k)
        buf = io.StringIO()
        csv.DictWriter(buf, fieldnames=COLUMNS, extrasaction="ignore").writerow(row)
        with open(self.csv, "a", newline="") as f:
            f.write(buf.getvalue())            # one write of one whole line

    def flush(self) -> None:
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=COLUMNS, extrasaction="ignore")
        w.writeheader()
        for r in self.rows:
            w.writerow(r)
        _atomic_write(self.csv, buf.getvalue())
        self._appendable = True

    def write_meta(self, meta: dict) -> None:
        """Write env.json. With a ``config`` (a SweepConfig as dict) it records the run identity first,
        refusing (ValueError naming save_path) a directory holding another configuration's results."""
        if isinstance(meta.get("config"), dict):
            run = run_identity(meta["config"], meta.get("gpu_name"))
            check_same_run(self.dir, run)
            meta = {**meta, "run": run}
        _atomic_write(self.dir / META_NAME, json.dumps(meta, indent=2, default=str) + "\n")


def load_results(save_dir):
    """The DataFrame of a results directory (numbers as numbers), with ``.attrs['env']`` from env.json."""
    import pandas as pd

    d = Path(save_dir)
    if not (d / CSV_NAME).exists():
        raise FileNotFoundError(f"save_path: no {CSV_NAME} in {str(d)!r}")
    df = pd.read_csv(d / CSV_NAME, dtype={"models": str, "variant": str, "pass": str})
    for c, v in ROW_DEFAULTS.items():          # rows written before the column existed
        df[c] = df[c].fillna(v) if c in df else v
    df["models"] = df["models"].fillna("") if "models" in df else ""   # empty: not a run of models
    for c in ("residual", "correct"):
        if c in df:
            df[c] = df[c].map(lambda v: str(v).lower() == "true" if str(v) not in ("", "nan") else pd.NA)
    meta = d / META_NAME
    df.attrs["env"] = json.loads(meta.read_text()) if meta.exists() else {}
    df.attrs["dir"] = str(d)
    return df
