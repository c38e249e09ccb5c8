"""`tune --registers`: our kernel compiled for sm_90 without a GPU (Triton's PTX, its ptxas).
Run as a subprocess: the suite runs under TRITON_INTERPRET=1, whose kernels cannot be compiled."""
from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _registers(*args):
    env = {**os.environ, "TRITON_INTERPRET": "0", "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "rmsnorm_lab.tune", "--registers", *map(str, args)],
                          capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)


def test_register_count_and_cap_on_sm90(tmp_path):
    pytest.importorskip("triton")
    table = tmp_path / "table.json"
    table.write_text(json.dumps({"configs": {"4096:2048:0": {"evict_loads": True, "chunk": 2048},
                                             "4096:1024:0": {"evict_loads": True, "chunk": 2048, "maxnreg": 32}}}))
    proc = _registers("--table", table, "--out-csv", tmp_path / "regs.csv")
    if proc.returncode and "ptxas" in proc.stderr and "No such file" in proc.stderr:
        pytest.skip("this Triton build has no ptxas")
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = {r["key"]: r for r in csv.DictReader(open(tmp_path / "regs.csv"))}
    free, capped = rows["4096:2048:0"], rows["4096:1024:0"]
    assert 16 <= int(free["lean_regs"]) <= 255 and int(free["v7_regs"]) >= 16
    assert int(capped["lean_regs"]) <= 32 and int(capped["lean_spill"]) == 0
    assert int(capped["lean_per_sm"]) == 16                      # 4 warps at <= 32 registers: the warp limit


def test_dtype_check_finds_the_wave_fp16_loses(tmp_path):
    """--registers --dtype-check: 16384 x 512 + res with two-pass slices of 4096 and flag 32 compiles to more registers in
    fp16 than in bf16 (3 programs per SM instead of 4: 512 programs no longer fit in one wave of 132 SMs), and a
    cap of 32 gives them back; at 256 tokens both dtypes fit in one wave, so nothing is lost. The committed H200
    table carries that cap."""
    pytest.importorskip("triton")
    h200 = json.loads((ROOT / "rmsnorm_lab" / "kernels" / "tables" / "nvidia-h200.json").read_text())["configs"]
    table = tmp_path / "table.json"
    two_pass = {"warps": 16, "sum_first": True, "chunk": 4096}
    table.write_text(json.dumps({"configs": {"16384:512:1": two_pass, "16384:256:1": two_pass,
                                             "16384:1024:1": h200["16384:512:1"]}}))
    proc = _registers("--table", table, "--dtype-check", "--out-csv", tmp_path / "dt.csv")
    if proc.returncode and "ptxas" in proc.stderr and "No such file" in proc.stderr:
        pytest.skip("this Triton build has no ptxas")
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = {r["key"]: r for r in csv.DictReader(open(tmp_path / "dt.csv"))}
    lost, fits, capped = rows["16384:512:1"], rows["16384:256:1"], rows["16384:1024:1"]
    assert int(lost["fp16_per_sm"]) < int(lost["bf16_per_sm"]) and lost["loses"] == "fp16" and lost["cap"] == "32"
    assert fits["loses"] == "" and fits["cap"] == "0"
    assert h200["16384:512:1"] == {**two_pass, "maxnreg": 32}
    assert int(capped["fp16_per_sm"]) == int(capped["bf16_per_sm"]) == 4 and capped["loses"] == ""
    assert int(capped["fp16_spill"]) == int(capped["bf16_spill"]) == 0
