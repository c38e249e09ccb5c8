"""rmsnorm_lab.tune (the table search) on CPU: its candidate lists and scoring, and a tiny smoke run under
the Triton interpreter (the timings are host timings; what is checked is the flow: every candidate
checked against float64 and timed, the table written with the earlier table's other shapes kept)."""
from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from rmsnorm_lab import tune as rt
from rmsnorm_lab.kernels.config import LaunchConfig, next_pow2
from rmsnorm_lab.kernels.tables import heuristic, load_table

ROOT = Path(__file__).resolve().parents[1]
L = LaunchConfig.from_legacy


def _tune(*args, timeout=600):
    """python -m rmsnorm_lab.tune ARGS in a child process (the package from this checkout)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "rmsnorm_lab.tune", *map(str, args)], capture_output=True,
                          text=True, timeout=timeout, env=env, cwd=ROOT)


def test_candidates_start_with_the_base_and_are_valid(tmp_path):
    hist = tmp_path / "tune.csv"
    with open(hist, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["hidden", "tokens", "residual", "rows", "warps", "per_sm", "flags", "cold_us", "graph_us",
                    "err", "error"])
        w.writerow([4096, 256, True, 1, 8, 0, 0, 7.0, 3.0, 1e-3, ""])
        w.writerow([4096, 256, True, 1, 16, 0, 0, 8.0, 2.5, 1e-3, ""])
        w.writerow([4096, 256, True, 1, 32, 0, 0, "", "", "", "failed"])      # an error row is skipped
    h = rt.history_configs([hist])
    assert sorted(c.warps for c, _, _ in h[(4096, 256, True)]) == [8, 16]
    assert {c for c, _, _ in h[(4096, 256, True)]} == {LaunchConfig(warps=8), LaunchConfig(warps=16)}
    for hidden in rt.HIDDEN:
        for tokens in rt.TOKENS + [4096, 65536]:
            for res in (False, True):
                base = heuristic(hidden, tokens, 2, res)
                cands = rt.candidates(hidden, tokens, res, base, h)
                assert cands[0] == base and len(cands) == len(set(cands))
                for c in cands:
                    assert isinstance(c, LaunchConfig)
                    assert c.chunk == 0 or c.chunk < next_pow2(hidden)        # a slice narrower than the row
                assert any(c.evict_last for c in cands)
                if 128 <= tokens <= 1024 and hidden <= 8192:
                    assert any(c.rows == 2 for c in cands)
                assert any(c.reread for c in cands)                           # the row read twice
                stores = [c for c in cands if c.sum_first or c.late_ro]
                if res and tokens >= 128:               # the new residual stored in pass 1 / late (<= 2048 only)
                    assert any(c.sum_first for c in stores)
                    assert any(c.late_ro for c in stores) == (tokens <= 2048)
                    for c in stores:                    # each one a variant of another candidate
                        assert c.replace(sum_first=False, late_ro=False) in cands
                else:
                    assert not stores, (hidden, tokens, res)
                if tokens >= 4096:
                    assert any(c.per_sm for c in cands)                       # persistent grids
                    assert len(cands) <= 40, (hidden, tokens, len(cands))
                wide = rt.candidates(hidden, tokens, res, base, h, wide=True)
                assert set(cands) <= set(wide) and all(g in wide for g in rt.geometries(hidden, tokens, 132))
    assert LaunchConfig(warps=16) in rt.candidates(4096, 256, True, LaunchConfig(), h)


def test_cap_twin_only_where_one_more_program_fits_and_matters():
    # 4096 x 2048, two passes, 4 warps at 38 registers: 12 programs an SM (1584 on 132 SMs) < 2048 rows
    assert rt.cap_twin(2048, L((1, 4, 0, 1, 2048)), 38, 0, 132) == L((1, 4, 0, 1, 2048, 32))
    assert rt.cap_twin(1024, L((1, 4, 0, 1, 2048)), 38, 0, 132) is None   # one wave: occupancy does not matter
    assert rt.cap_twin(2048, L((1, 4, 0, 1, 2048)), 32, 0, 132) is None   # already at the warp limit
    assert rt.cap_twin(65536, L((1, 4, 2, 0, 0)), 80, 0, 132) is None     # persistent: 2 programs an SM fit
    assert rt.cap_twin(2048, L((1, 4, 0, 1, 2048, 32)), 32, 0, 132) is None  # capped already
    assert rt.cap_twin(65536, L((1, 32, 0, 16, 0)), 42, 0, 132) == L((1, 32, 0, 16, 0, 32))
    hist = rt.history_configs([])
    capped = L((1, 4, 0, 1, 2048, 32))
    assert rt.candidates(4096, 2048, False, capped, hist, new=False) == [capped]
    cands = rt.candidates(4096, 2048, True, capped, hist)
    assert cands[0] == capped and capped.replace(sum_first=True) in cands   # the cap kept in twins


def test_score_prefers_the_smaller_worse_ratio():
    # 1.10 cold / 0.90 graph loses to 1.02 / 1.02 although its geometric mean is lower
    assert rt.score(1.02, 1.02, 1.0, 1.0) < rt.score(1.10, 0.90, 1.0, 1.0)
    assert rt.score(1.0, 0.9, 1.0, 1.0) < rt.score(1.0, 1.0, 1.0, 1.0)
    # v9: within 1.02 in both modes beats a cold miss traded for a graph win (6144 x 2048 + res, tune-v9)
    assert rt.score(1.006, 1.011, 1.0, 1.0) < rt.score(1.058, 0.782, 1.0, 1.0)
    assert rt.score(1.031, 0.80, 1.0, 1.0) < rt.score(1.029, 1.02, 1.0, 1.0)   # but not at any price


def test_repick_from_an_earlier_search(tmp_path):
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
    got = rt.repick([d])
    pick, rc, rg = got["6144:2048:1"]
    assert pick == L((1, 8, 0, 66, 0)) and abs(rc - 1.006) < 1e-9 and abs(rg - 1.011) < 1e-9
    base = tmp_path / "base.json"
    base.write_text(json.dumps({"configs": {"6144:2048:1": L((1, 16, 0, 20, 0, 40)).to_dict(True),
                                            "64:1:0": {"warps": 1}}}))
    proc = _tune("--out", tmp_path / "o", "--base", base, "--repick", d, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    table = json.loads((tmp_path / "o" / "table.json").read_text())["configs"]
    assert table == {"6144:2048:1": {"warps": 8, "pdl_early": True, "late_ro": True}, "64:1:0": {"warps": 1}}
    assert load_table(path=tmp_path / "o" / "table.json")["6144:2048:1"] == pick   # the one schema, read back


def test_smoke_run_on_cpu(tmp_path):
    base = {"device": "NVIDIA H100 80GB HBM3", "searched": ["4096:65536:0"], "repicked": "on the H100",
            "configs": {"64:1:1": {"warps": 1}, "4096:65536:0": {"warps": 8}}}
    (tmp_path / "base.json").write_text(json.dumps(base))
    out = tmp_path / "out"
    proc = _tune("--out", out, "--device", "cpu", "--hidden-size", "64", "--tokens", "1", "--residual", "1",
                 "--peers", "torch", "--workers", "0", "--base", tmp_path / "base.json")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "retune done" in proc.stdout
    rows = list(csv.DictReader(open(out / "retune.csv")))
    assert rows and all(not r["error"] and float(r["cold_us"]) > 0 for r in rows)
    assert {r["round"] for r in rows} == {"1", "2"}
    peers = list(csv.DictReader(open(out / "peers.csv")))
    # the peer in round 1, and again (as the fastest one) in round 2
    assert [(p["impl"], p["round"]) for p in peers] == [("torch", "1"), ("torch", "2")]
    assert all(float(p["cold_us"]) > 0 for p in peers)
    meta = json.loads((out / "table.json").read_text())
    table = meta["configs"]
    assert table["4096:65536:0"] == {"warps": 8}                    # a shape not searched keeps its pick
    # a base tuned on another device lends its configs, not its history: searched here only
    assert meta["device"] == "cpu (smoke run)" and meta["searched"] == ["64:1:1"] and "repicked" not in meta
    assert "tuned on NVIDIA H100 80GB HBM3" in meta["base_table"]
    assert {"triton", "torch", "date", "source_sha256", "how"} <= set(meta)          # provenance
    assert table["64:1:1"] in [json.loads(r["config"]) for r in rows]
    # --overlay: only the searched shapes, marked as an overlay that use_table puts over the GPU's table
    proc = _tune("--out", tmp_path / "ov", "--device", "cpu", "--hidden-size", "64", "--tokens", "1",
                 "--residual", "1", "--peers", "", "--workers", "0", "--overlay")
    assert proc.returncode == 0, proc.stderr[-2000:]
    ov = json.loads((tmp_path / "ov" / "table.json").read_text())
    assert ov["overlay"] is True and list(ov["configs"]) == ["64:1:1"] and ov["searched"] == ["64:1:1"]
    from rmsnorm_lab.kernels import tables as kt
    try:
        kt.use_table(tmp_path / "ov" / "table.json")
        assert kt.pick(64, 1, 2, True) == LaunchConfig.from_dict(ov["configs"]["64:1:1"])
        assert kt.pick(4096, 128, 2, False) == kt.load_table(path=kt.DEFAULT_TABLE)["4096:128:0"]
        assert kt.table_info(None)["overlay"]["path"] == str(tmp_path / "ov" / "table.json")
    finally:
        kt.use_table(None)


def test_merge_joins_tables_searched_apart(tmp_path):
    """--merge: the first table, then each later one's searched shapes; tables of two devices are refused."""
    def table(name, device, searched, configs):
        d = tmp_path / name
        d.mkdir()
        (d / "table.json").write_text(json.dumps({"device": device, "searched": searched, "how": name,
                                                  "configs": configs}))
        return str(d)
    small = table("small", "NVIDIA H200", ["64:1:0"], {"64:1:0": {"warps": 1}, "64:4096:0": {"warps": 8}})
    large = table("large", "NVIDIA H200", ["64:4096:0"], {"64:1:0": {"rows": 2, "warps": 2},
                                                          "64:4096:0": {"per_sm": 2}})
    other = table("other", "NVIDIA H100 80GB HBM3", ["64:1:0"], {"64:1:0": {"warps": 2}})
    proc = _tune("--out", tmp_path / "o", "--merge", small, large, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    meta = json.loads((tmp_path / "o" / "table.json").read_text())
    assert meta["configs"] == {"64:1:0": {"warps": 1}, "64:4096:0": {"per_sm": 2}}
    assert meta["searched"] == ["64:1:0", "64:4096:0"] and meta["device"] == "NVIDIA H200"
    assert meta["how"] == "small + large"
    proc = _tune("--out", tmp_path / "o", "--merge", small, other, timeout=120)
    assert proc.returncode != 0 and "different devices" in proc.stderr


def test_install_overlay_is_read_by_that_gpu_only(tmp_path, monkeypatch):
    """tune --install: the overlay lands in the user's tables folder, over an earlier one's keys, and lookups
    on that GPU read it over the GPU's own table (other GPUs and CPU tensors do not); table_info says so."""
    from rmsnorm_lab.kernels import tables as kt
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    first, second = tmp_path / "a.json", tmp_path / "b.json"
    first.write_text(json.dumps({"overlay": True, "device": "NVIDIA H200", "searched": ["4608:1024:0"],
                                 "configs": {"4608:1024:0": {"warps": 4}, "4608:2048:0": {"warps": 8}}}))
    second.write_text(json.dumps({"overlay": True, "device": "NVIDIA H200", "searched": ["4608:2048:0"],
                                  "configs": {"4608:2048:0": {"warps": 16}}}))
    try:
        kt.use_table(None)
        dst = kt.install_overlay(first, "NVIDIA H200")
        kt.install_overlay(second, "NVIDIA H200")
        assert dst == tmp_path / "cache" / "rmsnorm_lab" / "tables" / "nvidia-h200.json"
        assert kt.pick(4608, 1000, 2, False, "NVIDIA H200") == LaunchConfig(warps=4)
        assert kt.pick(4608, 2000, 2, False, "NVIDIA H200") == LaunchConfig(warps=16)     # the later one wins
        own = kt.load_table(path=kt.table_path("NVIDIA H200"))
        assert kt.pick(4096, 128, 2, False, "NVIDIA H200") == own["4096:128:0"]          # the rest: the GPU's own
        assert "4608:1024:0" not in kt.load_table("NVIDIA H100 80GB HBM3")
        assert kt.table_info("NVIDIA H200")["user_overlay"]["path"] == str(dst)
        assert "user_overlay" not in kt.table_info(None)
        with pytest.raises(ValueError, match="not an overlay"):
            kt.install_overlay(kt.DEFAULT_TABLE, "NVIDIA H200")
    finally:
        kt.use_table(None)


def test_install_needs_an_overlay_searched_on_a_gpu(tmp_path):
    for extra, word in ((["--install"], "--overlay"), (["--install", "--overlay"], "GPU")):
        proc = _tune("--out", tmp_path / "x", "--device", "cpu", "--hidden-size", "64", "--tokens", "1",
                     "--peers", "", "--workers", "0", *extra)
        assert proc.returncode == 2 and word in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_picks_are_remembered_until_the_tables_change(monkeypatch):
    """A launch's lookup reads no file and merges no table after the first: the GPU's table and the pick are
    remembered; use_table drops both."""
    from rmsnorm_lab.kernels import tables as kt
    kt.use_table(None)
    try:
        first = kt.pick_explained(4608, 777, 2, True, "NVIDIA H200")
        kt.pick(4096, 100, 2, False, "NVIDIA H200")

        def no_files(gpu_name):
            raise AssertionError("the tables were read again")
        monkeypatch.setattr(kt, "_with_user", no_files)
        assert kt.pick_explained(4608, 777, 2, True, "NVIDIA H200") == first
        assert kt.pick(4096, 1000, 2, False, "NVIDIA H200") == kt.load_table("NVIDIA H200")["4096:1024:0"]
        kt.use_table(None)
        with pytest.raises(AssertionError, match="read again"):
            kt.pick(4608, 777, 2, True, "NVIDIA H200")
    finally:
        monkeypatch.undo()
        kt.use_table(None)
