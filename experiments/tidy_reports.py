"""Run once: rewrite the kept report CSVs in the package's one schema.

    python experiments/tidy_reports.py [reports]

- every results.csv gets today's columns (rmsnorm_lab.results.COLUMNS), in that order; a column an older
  run lacked (copy_same_us, pct_copy_same) is left empty;
- correctness.csv and support.csv speak the status vocabulary of rmsnorm_lab.check
  (ok, wrong, error, crash, skip): an implementation that refused a case by raising was "refused", it is "error".
"""
from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd

from rmsnorm_lab.results import COLUMNS

OLD_STATUS = {"refused": "error"}


def tidy(root: Path) -> None:
    for csv in sorted(root.rglob("results.csv")):
        df = pd.read_csv(csv, dtype=str, keep_default_na=False)
        df.reindex(columns=COLUMNS, fill_value="").to_csv(csv, index=False)
        print(f"{csv}: {len(df)} rows")
    for name in ("correctness.csv", "support.csv"):
        for csv in sorted(root.rglob(name)):
            df = pd.read_csv(csv, dtype=str, keep_default_na=False)
            df["status"] = df["status"].replace(OLD_STATUS)
            df.to_csv(csv, index=False)
            print(f"{csv}: statuses {sorted(set(df['status']))}")


if __name__ == "__main__":
    tidy(Path(sys.argv[1] if len(sys.argv) > 1 else "reports"))
