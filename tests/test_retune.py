"""scripts/gpu_retune.py on CPU: its candidate lists and scoring, and a tiny smoke run under the
Triton interpreter (the timings are host timings; what is checked is the flow: every candidate
checked against float64 and timed, the table written with the earlier table's other shapes kept)."""
from __future__ import annotations

import csv
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

from rmsnorm_lab.kernels import triton_rmsnorm as tk

ROOT = Path(__file__).resolve().parents[1]


def _script():
    spec = importlib.util.spec_from_file_location("gpu_retune", ROOT / "scripts" / "gpu_retune.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_candidates_start_with_the_base_and_are_valid(tmp_path):
    rt = _script()
    hist = tmp_path / "tune.csv"
    with open(hist, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["hidden", "tokens", "residual", "rows", "warps", "per_sm", "flags", "cold_us", "graph_us",
                    "err", "error"])
        w.writerow([4096, 256, True, 1, 8, 0, 0, 7.0, 3.0, 1e-3, ""])
        w.writerow([4096, 256, True, 1, 16, 0, 0, 8.0, 2.5, 1e-3, ""])
        w.writerow([4096, 256, True, 1, 32, 0, 0, "", "", "", "failed"])      # an error row is skipped
    h = rt.history_configs([hist])
    assert sorted(c for c, _, _ in h[(4096, 256, True)]) == [(1, 8, 0, 0, 0), (1, 16, 0, 0, 0)]
    for hidden in rt.HIDDEN:
        for tokens in rt.TOKENS + [4096, 65536]:
            for res in (False, True):
                base = tk.heuristic_config(hidden, tokens, 2, res)
                cands = rt.candidates(hidden, tokens, res, base, h)
                assert cands[0] == base and len(cands) == len(set(cands))
                for c in cands:
                    assert tk.normalize_config(c) == c
                    assert c[4] == 0 or c[4] < tk._next_pow2(hidden)      # a slice narrower than the row
                assert any(c[3] & tk.EVICT_LAST for c in cands)
                if 128 <= tokens <= 1024 and hidden <= 8192:
                    assert any(c[0] == 2 for c in cands)
                assert any(c[3] & tk.REREAD for c in cands)                   # the row read twice
                stores = [c for c in cands if c[3] & (tk.SUM_FIRST | tk.LATE_RO)]
                if res and tokens >= 128:               # the new residual stored in pass 1 / late (<= 2048 only)
                    assert any(c[3] & tk.SUM_FIRST for c in stores)
                    assert any(c[3] & tk.LATE_RO for c in stores) == (tokens <= 2048)
                    for c in stores:                    # each one a variant of another candidate
                        assert c[:3] + (c[3] & ~(tk.SUM_FIRST | tk.LATE_RO), c[4]) in cands
                else:
                    assert not stores, (hidden, tokens, res)
                if tokens >= 4096:
                    assert any(c[2] for c in cands)                           # persistent grids
                    assert len(cands) <= 40, (hidden, tokens, len(cands))
    assert (1, 16, 0, 0, 0) in rt.candidates(4096, 256, True, (1, 4, 0, 0, 0), h)


def test_cap_twin_only_where_one_more_program_fits_and_matters():
    rt = _script()
    # 4096 x 2048, two passes, 4 warps at 38 registers: 12 programs an SM (1584 on 132 SMs) < 2048 rows
    assert rt.cap_twin(2048, (1, 4, 0, 1, 2048), 38, 0, 132) == (1, 4, 0, 1, 2048, 32)
    assert rt.cap_twin(1024, (1, 4, 0, 1, 2048), 38, 0, 132) is None      # one wave: occupancy does not matter
    assert rt.cap_twin(2048, (1, 4, 0, 1, 2048), 32, 0, 132) is None      # already at the warp limit
    assert rt.cap_twin(65536, (1, 4, 2, 0, 0), 80, 0, 132) is None        # persistent: 2 programs an SM fit
    assert rt.cap_twin(2048, (1, 4, 0, 1, 2048, 32), 32, 0, 132) is None  # capped already
    assert rt.cap_twin(65536, (1, 32, 0, 16, 0), 42, 0, 132) == (1, 32, 0, 16, 0, 32)
    hist = rt.history_configs([])
    assert rt.candidates(4096, 2048, False, (1, 4, 0, 1, 2048, 32), hist, new=False) == [(1, 4, 0, 1, 2048, 32)]
    cands = rt.candidates(4096, 2048, True, (1, 4, 0, 1, 2048, 32), hist)
    assert cands[0] == (1, 4, 0, 1, 2048, 32) and (1, 4, 0, 33, 2048, 32) in cands   # the cap kept in twins


def test_score_prefers_the_smaller_worse_ratio():
    rt = _script()
    # 1.10 cold / 0.90 graph loses to 1.02 / 1.02 although its geometric mean is lower
    assert rt.score(1.02, 1.02, 1.0, 1.0) < rt.score(1.10, 0.90, 1.0, 1.0)
    assert rt.score(1.0, 0.9, 1.0, 1.0) < rt.score(1.0, 1.0, 1.0, 1.0)
    # v9: within 1.02 in both modes beats a cold miss traded for a graph win (6144 x 2048 + res, tune-v9)
    assert rt.score(1.006, 1.011, 1.0, 1.0) < rt.score(1.058, 0.782, 1.0, 1.0)
    assert rt.score(1.031, 0.80, 1.0, 1.0) < rt.score(1.029, 1.02, 1.0, 1.0)   # but not at any price


def test_repick_from_an_earlier_search(tmp_path):
    rt = _script()
    d = tmp_path / "search"
    d.mkdir()
    with open(d / "retune.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["hidden", "tokens", "residual", "who", "rows", "warps", "per_sm", "flags", "chunk", "maxnreg",
                    "regs", "occupancy", "round", "cold_us", "graph_us", "error"])
        w.writerow([6144, 2048, True, "ours", 1, 8, 0, 66, 0, 0, 54, 4, 1, 10.06, 10.11, ""])
        w.writerow([6144, 2048, True, "ours", 1, 8, 0, 66, 0, 0, 54, 4, 2, 10.06, 10.11, ""])
        w.writerow([6144, 2048, True, "ours", 1, 16, 0, 20, 0, 40, 39, 3, 1, 10.58, 7.82, ""])
        w.writerow([6144, 2048, True, "ours", 1, 4, 0, 0, 0, 0, "", "", 1, "", "", "failed"])
    with open(d / "peers.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["hidden", "tokens", "residual", "impl", "round", "cold_us", "graph_us", "error"])
        w.writerow([6144, 2048, True, "quack", 1, 10.0, 11.0, ""])
        w.writerow([6144, 2048, True, "vllm", 1, 11.0, 10.0, ""])
    got = rt.repick([d], {})
    pick, rc, rg = got["6144:2048:1"]
    assert pick == (1, 8, 0, 66, 0) and abs(rc - 1.006) < 1e-9 and abs(rg - 1.011) < 1e-9
    base = tmp_path / "base.json"
    base.write_text(json.dumps({"configs": {"6144:2048:1": [1, 16, 0, 20, 0, 40], "64:1:0": [1, 1, 0]}}))
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "gpu_retune.py"), "--out", str(tmp_path / "o"),
                           "--base", str(base), "--repick", str(d)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    table = json.loads((tmp_path / "o" / "launch_table.json").read_text())["configs"]
    assert table == {"6144:2048:1": [1, 8, 0, 66, 0], "64:1:0": [1, 1, 0, 0, 0]}


def test_smoke_run_on_cpu(tmp_path):
    base = {"device": "NVIDIA H100 80GB HBM3", "searched": ["4096:65536:0"], "repicked": "on the H100",
            "configs": {"64:1:1": [1, 1, 0, 0, 0], "4096:65536:0": [1, 8, 0, 0, 0]}}
    (tmp_path / "base.json").write_text(json.dumps(base))
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "gpu_retune.py"), "--out", str(out),
                           "--device", "cpu", "--hidden", "64", "--tokens", "1", "--residual", "1",
                           "--peers", "torch", "--workers", "0", "--base", str(tmp_path / "base.json")],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "retune done" in proc.stdout
    rows = list(csv.DictReader(open(out / "retune.csv")))
    assert rows and all(not r["error"] and float(r["cold_us"]) > 0 for r in rows)
    assert {r["round"] for r in rows} == {"1", "2"}
    peers = list(csv.DictReader(open(out / "peers.csv")))
    # the peer in round 1, and again (as the fastest one) in round 2
    assert [(p["impl"], p["round"]) for p in peers] == [("torch", "1"), ("torch", "2")]
    assert all(float(p["cold_us"]) > 0 for p in peers)
    meta = json.loads((out / "launch_table.json").read_text())
    table = meta["configs"]
    assert table["4096:65536:0"] == [1, 8, 0, 0, 0]                 # a shape not searched keeps its pick
    # a base tuned on another device lends its configs, not its history: searched here only
    assert meta["device"] == "cpu (smoke run)" and meta["searched"] == ["64:1:1"] and "repicked" not in meta
    assert "tuned on NVIDIA H100 80GB HBM3" in meta["base_table"]
    assert tuple(table["64:1:1"]) in {tuple(int(r[k]) for k in ("rows", "warps", "per_sm", "flags", "chunk"))
                                      for r in rows}


def test_merge_joins_tables_searched_apart(tmp_path):
    """--merge: the first table, then each later one's searched shapes; tables of two devices are refused."""
    def table(name, device, searched, configs):
        d = tmp_path / name
        d.mkdir()
        (d / "launch_table.json").write_text(json.dumps({"device": device, "searched": searched, "how": name,
                                                         "configs": configs}))
        return str(d)
    small = table("small", "NVIDIA H200", ["64:1:0"], {"64:1:0": [1, 1, 0], "64:4096:0": [1, 8, 0]})
    large = table("large", "NVIDIA H200", ["64:4096:0"], {"64:1:0": [2, 2, 0], "64:4096:0": [1, 4, 2]})
    other = table("other", "NVIDIA H100 80GB HBM3", ["64:1:0"], {"64:1:0": [1, 2, 0]})
    run = [sys.executable, str(ROOT / "scripts" / "gpu_retune.py"), "--out", str(tmp_path / "o"), "--merge"]
    proc = subprocess.run(run + [small, large], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    meta = json.loads((tmp_path / "o" / "launch_table.json").read_text())
    assert meta["configs"] == {"64:1:0": [1, 1, 0], "64:4096:0": [1, 4, 2]}
    assert meta["searched"] == ["64:1:0", "64:4096:0"] and meta["device"] == "NVIDIA H200"
    assert meta["how"] == "small + large"
    proc = subprocess.run(run + [small, other], capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and "different devices" in proc.stderr
