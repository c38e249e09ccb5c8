"""Nothing lost: a sweep killed mid-run leaves a readable CSV of every finished
point and resumes where it stopped; out of memory becomes an error row."""
import os
import signal
import subprocess
import sys
import time

import torch

import rmsnorm_lab as L
from rmsnorm_lab import sweep as sweep_mod
from rmsnorm_lab.impls import registry
from rmsnorm_lab.impls.base import Impl
from rmsnorm_lab.impls.torch_impls import hf_rmsnorm
from rmsnorm_lab.results import KEY, load_results

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GRID = dict(hidden=[8, 16, 32, 64, 128, 256], batch=[1], seq=[1, 2, 4, 8], dtypes=["float32"], residual=[False],
            impls=["huggingface", "torch"], device="cpu", modes=["eager"], progress=False)
N_POINTS = 6 * 4 * 2

SCRIPT = """
import sys
from rmsnorm_lab import run_sweep
run_sweep(**eval(sys.argv[2]), budget_ms=150, harness="thorough", save_path=sys.argv[1])  # ~150 ms a point
"""


def _keys(df):
    return [tuple(str(v) for v in r) for r in df[list(KEY)].astype(str).itertuples(index=False)]


def test_killed_sweep_keeps_rows_and_resumes(tmp_path, monkeypatch):
    save = tmp_path / "res"
    csv_path = save / "results.csv"
    env = {**os.environ, "PYTHONPATH": ROOT}
    proc = subprocess.Popen([sys.executable, "-c", SCRIPT, str(save), repr(GRID)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        n = 0
        while time.monotonic() < deadline and proc.poll() is None:
            if csv_path.exists():
                with open(csv_path) as f:
                    n = sum(1 for _ in f) - 1
                if n >= 6:
                    break
            time.sleep(0.01)
        assert proc.poll() is None, f"sweep ended before it could be killed: {proc.stderr.read()!r}"
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL

    # a readable CSV with every finished point, none of them half-written
    first = load_results(save)
    assert 6 <= len(first) < N_POINTS
    assert set(first["status"]) == {"ok"} and first["us_median"].notna().all()
    assert len(set(_keys(first))) == len(first)
    done = dict(zip(_keys(first), zip(first["us_median"], first["timestamp"])))

    # resume: only the points not yet measured are timed
    calls = []
    real = sweep_mod.time_runner

    def counting(runner, mode, device, **kw):
        calls.append(mode)
        return real(runner, mode, device, **kw)
    monkeypatch.setattr(sweep_mod, "time_runner", counting)
    final = L.run_sweep(**GRID, budget_ms=5, save_path=str(save))
    assert len(calls) == N_POINTS - len(first)
    assert len(final) == N_POINTS and set(final["status"]) == {"ok"}
    assert len(set(_keys(final))) == N_POINTS
    after = dict(zip(_keys(final), zip(final["us_median"], final["timestamp"])))
    for k, v in done.items():                 # finished points kept as they were, not re-measured
        assert after[k] == v

    # a third run measures nothing
    calls.clear()
    L.run_sweep(**GRID, budget_ms=5, save_path=str(save))
    assert calls == []


def _add_impl(monkeypatch, name, fn):
    impl = Impl(name, name, "test", lambda: fn, devices=("cpu", "cuda"),
                dtypes=("float32", "float16", "bfloat16"), requires=("torch",))
    monkeypatch.setitem(registry(), name, impl)


def test_oom_before_timing_becomes_error_row(monkeypatch, tmp_path):
    def oomy(x, w, r=None, eps=1e-6):
        if x.shape[-1] >= 64:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 64.00 GiB")
        return hf_rmsnorm(x, w, r, eps)
    _add_impl(monkeypatch, "oomy", oomy)
    df = L.run_sweep(hidden=[16, 64, 32], batch=[1], seq=[4], dtypes=["float32"], residual=[False],
                     impls=["oomy", "huggingface"], device="cpu", modes=["eager"], budget_ms=2,
                     save_path=str(tmp_path), progress=False)
    st = {(r.impl, r.hidden): (r.status, r.error) for r in df.itertuples()}
    assert st[("oomy", 16)][0] == "ok" and st[("oomy", 32)][0] == "ok"     # the sweep went on
    status, msg = st[("oomy", 64)]
    assert status == "error" and "OutOfMemoryError: CUDA out of memory" in msg
    assert st[("huggingface", 64)][0] == "ok"


def test_oom_during_timing_becomes_error_row(monkeypatch):
    n_calls = {"n": 0}

    def oom_in_timing(x, w, r=None, eps=1e-6):
        if x.shape[-1] == 64:
            n_calls["n"] += 1
            if n_calls["n"] > 3:                  # warm-up and check pass, timing runs out of memory
                raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return hf_rmsnorm(x, w, r, eps)
    _add_impl(monkeypatch, "oom_t", oom_in_timing)
    df = L.run_sweep(hidden=[64, 32], batch=[1], seq=[4], dtypes=["float32"], residual=[False],
                     impls=["oom_t"], device="cpu", modes=["eager"], budget_ms=2, progress=False)
    rows = df.set_index("hidden")
    assert rows.loc[64, "status"] == "error" and "OutOfMemoryError" in rows.loc[64, "error"]
    assert rows.loc[32, "status"] == "ok"


def test_error_rows_are_retried_on_resume(monkeypatch, tmp_path):
    state = {"fail": True}

    def flaky(x, w, r=None, eps=1e-6):
        if state["fail"]:
            raise torch.OutOfMemoryError("CUDA out of memory")
        return hf_rmsnorm(x, w, r, eps)
    _add_impl(monkeypatch, "flaky", flaky)
    kw = dict(hidden=[16], batch=[1], seq=[4], dtypes=["float32"], residual=[False], impls=["flaky"],
              device="cpu", modes=["eager"], budget_ms=2, save_path=str(tmp_path), progress=False)
    assert list(L.run_sweep(**kw)["status"]) == ["error"]
    state["fail"] = False
    assert list(L.run_sweep(**kw)["status"]) == ["ok"]
