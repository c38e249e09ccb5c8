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
    assert p.stdout.count("matches the float64 reference") == 6 and "v7 / table geomean" in p.stdout


@pytest.mark.skipif(importlib.util.find_spec("rmsnorm_lab.kernels.config") is None,
                    reason="needs rmsnorm_lab.kernels.config (LaunchConfig) and kernels.launch")
@pytest.mark.parametrize("norm", ["gemma", "fp8-static"])
def test_launch_ab_variant_norms_on_cpu(tmp_path, norm):
    """The Gemma and static-FP8 norms: held slices checked (FP8: e4m3 steps) and timed beside the torch
    subject; a replacement that makes no valid launch is left out with its reason, not timed."""
    if norm == "fp8-static" and not hasattr(pytest.importorskip("torch"), "float8_e4m3fn"):
        pytest.skip("no float8_e4m3fn in this torch")
    p = _run("launch_ab.py", "--norm", norm, "--shapes", "200:5:1", "--dtype", "bfloat16", "--peers", "torch",
             "--variant", "table=", "--variant", "h2=chunk=64,hold=2,reread=false", "--variant", "bad=hold=1,chunk=0",
             tmp_path=tmp_path)
    assert p.returncode == 0, p.stderr[-2000:]
    rows = pd.read_csv(tmp_path / "launch_ab.csv")
    assert set(rows["subject"]) == {"table", "h2", "torch"} and rows["error"].isna().all()
    assert p.stdout.count("matches the float64 reference") == 2
    assert "bad: left out: LaunchConfig.hold" in p.stdout


def test_experiments_import_the_package_without_path_hacks():
    for f in (ROOT / "experiments").glob("*.py"):
        assert "sys.path" not in f.read_text(), f.name


def test_backward_search_grid_without_a_gpu():
    """backward_search's launch grid: from 8192 columns (--wide-from) two-pass launches too
    (register-capped where several programs share an SM), every launch a valid cfg; narrower rows keep
    the one-pass grid; --dry-run counts launches and compile jobs without a GPU."""
    spec = importlib.util.spec_from_file_location("backward_search", ROOT / "experiments" / "backward_search.py")
    bs = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bs)
    from rmsnorm_lab.kernels.training import check_bwd_launch
    args = bs.parse_args(["--stages", "1", "--rows", "1"])
    wide = bs.launch_grid(16384, 4096, 132, args)
    assert {c.reload for c in wide} == {0, 1, 2}
    for c, per_sm in wide.items():
        check_bwd_launch(c, 16384)
        assert c.maxnreg == 0 or c.maxnreg * c.warps * 32 * per_sm <= 65536
    narrow = bs.launch_grid(5120, 4096, 132, bs.parse_args([]))
    assert {(c.reload, c.maxnreg) for c in narrow} == {(0, 0)} and any(c.tail for c in narrow)
    two_pass = bs.launch_grid(5120, 4096, 132, bs.parse_args(["--wide-from", "2048"]))
    assert {c.reload for c in two_pass} == {0, 1, 2} and any(c.tail for c in two_pass)
    for c in two_pass:
        check_bwd_launch(c, 5120)
    only = bs.launch_grid(16384, 4096, 132, bs.parse_args(["--reload", "1", "--warps", "8"]))
    assert {(c.reload, c.warps) for c in only} == {(1, 8)} and any(c.maxnreg for c in only)
    p = subprocess.run([sys.executable, str(ROOT / "experiments" / "backward_search.py"), "--hidden", "16384",
                        "--tokens", "4096", "--dtype", "bfloat16,float16", "--rows", "1", "--stages", "1",
                        "--dry-run"], capture_output=True, text=True, timeout=120,
                       env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert p.returncode == 0, p.stderr[-2000:]
    assert f"{2 * 2 * len(wide)} launches timed" in p.stdout
    for bad in ("64", "64x24", "axb"):
        with pytest.raises(SystemExit):
            bs.parse_args(["--sum", bad])
    sums = bs.parse_args(["--sum", "64x32,0x0,16x512"]).sum
    assert sums == [(64, 32), (0, 0), (16, 512)]
    from rmsnorm_lab.kernels.training import bwd_launch
    policy = bwd_launch(2048, 32768, 132)
    grid = bs.sum_grid(policy, sums)
    assert policy in grid and {(c.sum_cols, c.sum_rows) for c in grid} == set(sums)
    assert {c.block_n for c in grid} == {policy.block_n}


def test_fp8_static_search_without_a_gpu():
    """fp8_static_search's launches: the plain table's pick first, then the plain search's candidates,
    each a valid config; --wide adds geometries; --dry-run counts launches and compile jobs without a GPU."""
    spec = importlib.util.spec_from_file_location("fp8_static_search", ROOT / "experiments" / "fp8_static_search.py")
    fs = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(fs)
    from rmsnorm_lab.kernels.tables import pick
    got = fs.launches(16384, 65536, False, 132, False)
    assert got[0] == pick(16384, 65536, 2, False) and len(got) == len(set(got)) > 4
    h200 = fs.launches(5120, 65536, False, 132, False, "NVIDIA H200")      # that GPU's plain pick, then its FP8 pick
    assert h200[0] == pick(5120, 65536, 2, False, "NVIDIA H200")
    assert pick(5120, 65536, 2, False, "NVIDIA H200", variant="fp8-static") in h200 and len(h200) == len(set(h200))
    assert len(fs.launches(5120, 4096, True, 132, True)) > len(fs.launches(5120, 4096, True, 132, False))
    args = fs.parse_args(["--hidden", "5120", "--tokens", "4096", "--residual", "0"])
    assert len(fs.compile_jobs(args, 132)) == len(fs.launches(5120, 4096, False, 132, False))
    p = subprocess.run([sys.executable, str(ROOT / "experiments" / "fp8_static_search.py"), "--hidden", "5120",
                        "--tokens", "4096", "--residual", "0", "--dry-run"], capture_output=True, text=True,
                       timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert p.returncode == 0, p.stderr[-2000:]
    assert f"{len(fs.launches(5120, 4096, False, 132, False))} launches timed" in p.stdout


def test_fp8_static_search_smoke_on_cpu(tmp_path):
    """Each launch checked against the float64 FP8 reference, then timed; peers that cannot run on CPU
    are skip rows with their reason."""
    env = {**os.environ, "TRITON_INTERPRET": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH", "")]))}
    p = subprocess.run([sys.executable, str(ROOT / "experiments" / "fp8_static_search.py"), "--device", "cpu",
                        "--hidden", "128", "--tokens", "4", "--budget-ms", "1", "--out", str(tmp_path)],
                       capture_output=True, text=True, timeout=300, env=env)
    assert p.returncode == 0, p.stderr[-2000:]
    rows = pd.read_csv(tmp_path / "search.csv")
    ours = rows[rows["subject"] == "ours"]
    assert set(ours["status"]) == {"ok"} and set(ours["mode"]) == {"eager", "cold"} and ours["table_pick"].any()
    assert set(rows.loc[rows["subject"] != "ours", "status"]) == {"skip"}
    assert rows.loc[rows["status"] == "skip", "error"].str.len().min() > 0


def test_fp8_static_table_from_search_rows(tmp_path):
    """--table-from: per shape the launch with the smallest max(cold, graph) ratio to the fastest peer, among
    launches timed in both modes; the table file parses in the tables' schema and keeps the provenance."""
    import json
    spec = importlib.util.spec_from_file_location("fp8_static_search", ROOT / "experiments" / "fp8_static_search.py")
    fs = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(fs)
    a, b, c = '{"warps": 8, "chunk": 1024}', '{"warps": 16}', '{"warps": 32}'
    rows = [dict(hidden=5120, tokens=65536, residual="False", subject=s, config=cfg, mode=m, us=us, status="ok")
            for s, cfg, m, us in [("ours", a, "graph", 100), ("ours", a, "cold", 110),
                                  ("ours", b, "graph", 90), ("ours", b, "cold", 130),    # best graph, poor cold
                                  ("ours", c, "graph", 80),                              # graph only: not eligible
                                  ("flashinfer", "", "graph", 95), ("flashinfer", "", "cold", 105),
                                  ("vllm", "", "cold", 100), ("vllm", "", "graph", 99)]]
    best = fs.best_launches(rows)
    assert best[(5120, 65536, False)][0] == a and best[(5120, 65536, False)][1] == pytest.approx(110 / 100)
    pd.DataFrame(rows).to_csv(tmp_path / "search.csv", index=False)
    (tmp_path / "meta.json").write_text(json.dumps({"device": "GPU X", "sms": 1, "torch": "t", "triton": "3",
                                                    "date": "2026-12-01", "command": "python ..."}))
    out = tmp_path / "gpu-x.fp8-static.json"
    assert fs.main(["--table-from", str(tmp_path), "--write", str(out)]) == 0
    meta = json.loads(out.read_text())
    assert meta["configs"] == {"5120:65536:0": json.loads(a)} and meta["device"] == "GPU X"
    assert meta["variant"] == "fp8-static" and meta["searched"][0].startswith("5120:65536:0 1.100")
    with pytest.raises(SystemExit):
        fs.parse_args(["--table-from", str(tmp_path)])
