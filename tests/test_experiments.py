"""The experiments kept in experiments/ still run (CPU, Triton's interpreter, tiny shapes, one round)."""
from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]


def _run(script, *args, tmp_path):
    env = {**os.environ, "TRITON_INTERPRET": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH", "")]))}
    return subprocess.run([sys.executable, str(ROOT / "experiments" / script), "--out", str(tmp_path), "--device",
                           "cpu", "--rounds", "1", "--budget-ms", "1", *args],
                          capture_output=True, text=True, timeout=300, env=env)


def test_write_path_ab_smoke_on_cpu(tmp_path):
    """Our three write paths agree with each other, then are timed beside a peer."""
    p = _run("write_path_ab.py", "--shapes", "128:4", "--dtype", "float32", "--peers", "torch", tmp_path=tmp_path)
    assert p.returncode == 0, p.stderr[-2000:]
    rows = pd.read_csv(tmp_path / "write_path_ab.csv")
    assert set(rows["subject"]) == {"inplace", "oop-held", "oop-alloc", "torch"}
    assert rows["us_median"].notna().all() and rows["error"].isna().all()
    assert "[subject / inplace]" in p.stdout


@pytest.mark.skipif(importlib.util.find_spec("rmsnorm_lab.kernels.config") is None,
                    reason="needs rmsnorm_lab.kernels.config (LaunchConfig) and kernels.launch")
def test_launch_ab_smoke_on_cpu(tmp_path):
    """Launch variants (LaunchConfig fields over the table's pick) checked against float64, then timed."""
    p = _run("launch_ab.py", "--shapes", "64:3:1", "64:3:0", "--dtype", "float32", "--peers", "torch",
             "--variant", "table=", "--variant", "v7=lean=false", "--variant", "nopdl=pdl=false", tmp_path=tmp_path)
    assert p.returncode == 0, p.stderr[-2000:]
    rows = pd.read_csv(tmp_path / "launch_ab.csv")
    assert set(rows["subject"]) == {"table", "v7", "nopdl", "torch"} and rows["error"].isna().all()
    assert p.stdout.count("error vs float64") == 6 and "v7 / table geomean" in p.stdout


def test_experiments_import_the_package_without_path_hacks():
    for f in (ROOT / "experiments").glob("*.py"):
        assert "sys.path" not in f.read_text(), f.name
