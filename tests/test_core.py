"""The core the rest stands on, on CPU: the registry and its
skip reasons, every CPU-capable implementation and the Triton kernel (interpreter)
against the float64 reference, the kernel writing every element, the in-place
fused path, the seed's API, the CLI end to end, the bytes model, timing, and the
launch table.

Not repeated here: bad input (test_bad_input.py), random strides / NaN / eps
(test_properties.py), the support matrix (test_probe.py), resume (test_resume.py).
Shapes are tiny: the Triton interpreter is slow.
"""
from __future__ import annotations

import csv
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import rmsnorm_lab as L
from rmsnorm_lab.cases import Case, bytes_moved
from rmsnorm_lab.impls import ORDER, get_impl, list_impls, registry, resolve_names
from rmsnorm_lab.impls.base import Impl
from rmsnorm_lab.impls.torch_impls import hf_rmsnorm
from rmsnorm_lab.kernels import tables as kt
from rmsnorm_lab.kernels.config import LaunchConfig
from rmsnorm_lab.kernels.launch import config_fn, needs_int64
from rmsnorm_lab.kernels.rmsnorm import triton_rmsnorm
from rmsnorm_lab.reference import TOLERANCE, reference, rel_error
from rmsnorm_lab.results import COLUMNS
from rmsnorm_lab.timing import Runner, _quantiles, time_runner

ROOT = Path(__file__).resolve().parents[1]
DTYPES = ["float32", "float16", "bfloat16"]
CPU_IMPLS = [n for n, impl in registry().items() if impl.available("cpu")]
# torch.compile builds one graph per shape: covered by test_torch_compile_many_shapes instead
MATRIX_IMPLS = [n for n in CPU_IMPLS if n not in ("torch_compile", "torch_compile_dynamic")]
PEERS = {"flashinfer": "flashinfer", "flashinfer_cuda": "flashinfer", "vllm": "vllm",
         "liger": "liger_kernel", "quack": "quack"}


def _inputs(shape, dtype, residual, seed=0):
    g = torch.Generator().manual_seed(seed)
    dt = getattr(torch, dtype)
    x = torch.randn(shape, generator=g).to(dt)
    w = (1 + 0.5 * torch.randn(shape[-1], generator=g)).to(dt)          # never ones
    r = torch.randn(shape, generator=g).to(dt) if residual else None
    return x, w, r


def _assert_matches_reference(got, x, w, r, eps=1e-6, what=""):
    """Both outputs (out, and the new residual when there is one) against the float64 reference."""
    tol = TOLERANCE[str(x.dtype).removeprefix("torch.")]
    ref = reference(x, w, r, eps)
    if r is None:
        assert isinstance(got, torch.Tensor), (what, type(got))
        outs, refs = (got,), (ref,)
    else:
        assert isinstance(got, tuple) and len(got) == 2, (what, type(got))
        outs, refs = got, ref
    for o, rf, name in zip(outs, refs, ("out", "new residual")):
        assert o.dtype == x.dtype, (what, name, o.dtype)
        assert o.shape == x.shape, (what, name, tuple(o.shape))
        err = rel_error(o, rf)
        assert err <= tol, (what, name, tuple(x.shape), x.dtype, err)


# ---------------------------------------------------------------- registry and skip reasons


def test_registry_order_and_listing():
    assert list(registry()) == ORDER                     # HF first: speedups are measured against it
    rows = list_impls("cpu")
    assert [r["impl"] for r in rows] == ORDER
    for r in rows:
        assert set(r) >= {"impl", "label", "available", "reason", "dtypes", "inplace_residual", "numerics"}
        assert r["label"] and r["numerics"]
        assert bool(r["reason"]) == (not r["available"]), r      # a reason exactly when it cannot run
    assert {"huggingface", "torch", "torch_compile", "triton"} <= set(CPU_IMPLS)
    assert resolve_names("all") == ORDER
    assert resolve_names("torch, huggingface,torch") == ["torch", "huggingface"]


@pytest.mark.parametrize("name", list(PEERS))
def test_peer_skip_reasons_on_cpu(name, monkeypatch):
    monkeypatch.delenv("RMSNORM_LAB_VLLM_OPS", raising=False)
    s = get_impl(name).available("cpu")
    assert not s.ok
    assert "needs CUDA" in s.reason, s.reason
    from rmsnorm_lab.impls.base import has_module
    if not has_module(PEERS[name]):
        assert f"{PEERS[name]} not installed" in s.reason, s.reason
        if name == "vllm":
            assert "RMSNORM_LAB_VLLM_OPS" in s.reason, s.reason
    # the sweep and the checker turn the reason into a skip row
    row = L.check_impl(name, Case(1, 2, 16, "bfloat16"), "cpu")
    assert row["status"] == "skip" and row["reason"] == s.reason


def test_vllm_ops_path_missing_names_the_path(monkeypatch, tmp_path):
    from rmsnorm_lab.impls import vllm as vllm_mod

    missing = tmp_path / "nowhere" / "_C.abi3.so"
    monkeypatch.setenv("RMSNORM_LAB_VLLM_OPS", str(missing))
    s = get_impl("vllm").available("cpu")
    assert not s.ok and f"RMSNORM_LAB_VLLM_OPS={missing}: no such file" in s.reason, s.reason
    with pytest.raises(FileNotFoundError, match="no such file") as ei:
        vllm_mod._ops()                  # what load() runs, without caching a load error in the registry
    assert str(missing) in str(ei.value)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the reasons on a machine without a GPU")
def test_reasons_for_cuda_without_gpu(monkeypatch):
    assert "needs CUDA (no GPU visible to torch)" in get_impl("huggingface").available("cuda").reason
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    s = get_impl("triton").available("cpu")
    assert not s.ok and "needs CUDA (or TRITON_INTERPRET=1 for CPU tensors)" in s.reason
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert get_impl("triton").available("cpu").ok


def test_impl_reasons_dtype_bf16_and_load_failure():
    def broken():
        raise ImportError("libfoo.so: cannot open shared object file")
    fake = Impl("fake", "fake", "test", broken, devices=("cpu",), dtypes=("float32", "bfloat16"),
                requires=("torch",), numerics="bf16-cpu: none")
    assert fake.supports("float16", "cpu").reason == "float16 not supported (supports float32, bfloat16)"
    assert fake.supports("bfloat16", "cpu").reason == "no bf16 on CPU"
    assert fake.available("cuda").reason == "needs CPU"
    assert fake.available("cpu").ok
    with pytest.raises(ImportError):
        fake.load()
    s = fake.available("cpu")               # the failure is remembered as the reason
    assert not s.ok and s.reason == "failed to load: ImportError: libfoo.so: cannot open shared object file"
    missing = Impl("gone", "gone", "test", broken, devices=("cpu",), requires=("no_such_module_xyz.ops",))
    assert missing.available("cpu").reason == "no_such_module_xyz not installed"


# ---------------------------------------------------------------- every CPU implementation vs float64

SHAPES = [(2, 3, 33), (3, 130), (1, 2, 1000)]       # 3-D, hidden not a multiple of 8, 2-D


@pytest.mark.parametrize("residual", [False, True], ids=["plain", "residual"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", MATRIX_IMPLS)
def test_impl_matches_reference(name, dtype, residual):
    fn = get_impl(name).load()
    for i, shape in enumerate(SHAPES):
        x, w, r = _inputs(shape, dtype, residual, seed=i)
        xc, rc = x.clone(), None if r is None else r.clone()     # the call may work in place
        _assert_matches_reference(fn(xc, w, rc), x, w, r, what=(name, shape))


@pytest.mark.parametrize("residual", [False, True], ids=["plain", "residual"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_triton_kernel_matches_reference(dtype, residual):
    """The kernel itself, with its branches: several rows per block (explicit configs), a tail
    block, and the weight reloaded per block for hidden sizes >= 4097 (BLOCK_N 8192)."""
    for shape, config in [((2, 3, 33), None), ((3, 5, 37), (4, 2, 0)), ((15, 100), (16, 4, 0)),
                          ((2, 5000), None), ((3, 4097), (2, 8, 0)),
                          ((5, 37), (2, 2, 0, 1)), ((5, 37), (1, 1, 0, 4)), ((5, 300), (4, 2, 0, 7)),
                          ((5, 300), (2, 2, 0, 0, 64)), ((2, 3, 100), (1, 2, 0, 5, 32)), ((3, 70), (4, 1, 2, 2, 16)),
                          ((5, 300), (1, 2, 0, 1, 64, 32))]:   # a register cap: ignored by the interpreter
        x, w, r = _inputs(shape, dtype, residual, seed=shape[-1])
        x0, r0 = x.clone(), None if r is None else r.clone()
        got = triton_rmsnorm(x, w, r, config=config)
        _assert_matches_reference(got, x, w, r, what=(shape, config))
        assert torch.equal(x, x0) and (r is None or torch.equal(r, r0))   # out of place by default


def test_checker_compares_both_outputs(monkeypatch):
    """check_impl flags a wrong new residual (the seed compared the first output only)."""
    def bad_residual(x, w, r=None, eps=1e-6):
        if r is None:
            return hf_rmsnorm(x, w, None, eps)
        out, _ = hf_rmsnorm(x, w, r, eps)
        return out, r                                       # forgets the add
    monkeypatch.setitem(registry(), "badres", Impl("badres", "badres", "test", lambda: bad_residual,
                                                   devices=("cpu",), requires=("torch",)))
    ok = L.check_impl("badres", Case(1, 4, 24, "float32", residual=False), "cpu")
    assert ok["status"] == "ok"
    row = L.check_impl("badres", Case(1, 4, 24, "float32", residual=True), "cpu")
    assert row["status"] == "wrong" and row["err_out"] <= TOLERANCE["float32"]
    assert "new residual error" in row["reason"], row


# ---------------------------------------------------------------- the kernel writes every element


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape,config", [((3, 5, 37), None), ((3, 5, 37), (4, 2, 0)),
                                          ((7, 130), (16, 4, 0)), ((2, 4097), None), ((7, 130), (2, 4, 0, 5)),
                                          ((7, 130), (2, 2, 0, 1, 32)), ((7, 130), (2, 2, 0, 16)),
                                          ((3, 5, 37), (1, 1, 1, 22))])
def test_triton_writes_every_element(shape, config, dtype):
    x, w, r = _inputs(shape, dtype, True, seed=3)
    dt = getattr(torch, dtype)
    out = torch.full(shape, float("nan"), dtype=dt)
    got = triton_rmsnorm(x, w, out=out, config=config)
    assert got is out and not torch.isnan(out).any(), "out: some elements were never written"
    _assert_matches_reference(out, x, w, None)
    out = torch.full(shape, float("nan"), dtype=dt)
    res_out = torch.full(shape, float("nan"), dtype=dt)
    o, ro = triton_rmsnorm(x, w, r, out=out, residual_out=res_out, config=config)
    assert o is out and ro is res_out
    assert not torch.isnan(out).any() and not torch.isnan(res_out).any(), "an element was never written"
    _assert_matches_reference((out, res_out), x, w, r)


# ---------------------------------------------------------------- the registry's fused in-place path


@pytest.mark.filterwarnings("ignore:x is not contiguous")
@pytest.mark.parametrize("dtype", DTYPES)
def test_triton_registry_fused_inplace_on_cpu(dtype):
    impl = get_impl("triton")
    assert impl.inplace_residual
    fn = impl.load()
    x, w, r = _inputs((2, 3, 40), dtype, True)
    x0, r0 = x.clone(), r.clone()
    out, new_r = fn(x, w, r)
    # documented: out is written into x, the new residual into residual
    assert out.data_ptr() == x.data_ptr() and new_r.data_ptr() == r.data_ptr()
    _assert_matches_reference((out, new_r), x0, w, r0)
    # without a residual nothing is changed
    x1 = x0.clone()
    _assert_matches_reference(fn(x1, w), x0, w, None)
    assert torch.equal(x1, x0)
    # a non-contiguous x gets a new output; x itself is left alone
    xt = x0.transpose(0, 1).contiguous().transpose(0, 1)
    rt = r0.clone()
    out, new_r = fn(xt, w, rt)
    assert torch.equal(xt, x0) and new_r.data_ptr() == rt.data_ptr()
    _assert_matches_reference((out, new_r), x0, w, r0)


def test_triton_registry_residual_is_x():
    """residual aliasing x (a caller's `h = norm(h, w, h)`): x must end up holding x + x, and out
    must be the normalized sum (the registry's contract: out is then a new tensor)."""
    fn = get_impl("triton").load()
    x, w, _ = _inputs((3, 24), "float32", False)
    x0 = x.clone()
    out, new_r = fn(x, w, x)
    _assert_matches_reference((out, new_r), x0, w, x0)


# ---------------------------------------------------------------- the seed's API


def test_rmsnorm_naive_is_hf_semantics():
    x, w, r = _inputs((2, 4, 48), "bfloat16", True)
    # HuggingFace LlamaRMSNorm, written out: fp32 math, round to the input dtype, then times weight
    h = x.float() + r.float()
    want_res = h.to(torch.bfloat16)
    want = w * (h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + 1e-6)).to(torch.bfloat16)
    out, new_r = L.rmsnorm_naive(x, w, r)
    assert out.shape == new_r.shape == x.shape and out.dtype == torch.bfloat16
    assert torch.equal(out, want) and torch.equal(new_r, want_res)
    only = L.rmsnorm_naive(x, w)
    assert isinstance(only, torch.Tensor) and only.shape == x.shape


def test_calculate_diff_reports_every_impl(capsys):
    df = L.calculate_diff(1, 8, 64, use_residual=True, device="cpu")
    printed = capsys.readouterr().out
    assert "correctness on cpu: x (1, 8, 64) bfloat16, residual=True" in printed
    assert list(df["impl"]) == ORDER
    assert {"impl", "status", "err_out", "err_residual", "tolerance", "reason"} <= set(df.columns)
    st = df.set_index("impl")
    for name in ORDER:
        assert name in printed
        if name in CPU_IMPLS:
            assert st.loc[name, "status"] == "ok", st.loc[name].to_dict()
            assert 0 <= st.loc[name, "err_out"] <= TOLERANCE["bfloat16"]
            assert 0 <= st.loc[name, "err_residual"] <= TOLERANCE["bfloat16"]
        else:
            assert st.loc[name, "status"] == "skip" and "needs CUDA" in st.loc[name, "reason"]
            assert math.isnan(st.loc[name, "err_out"])
    df = L.calculate_diff(2, 3, 33, use_residual=False, dtype="float32", device="cpu",
                          impls=["huggingface", "torch", "triton"], verbose=False)
    assert list(df["status"]) == ["ok"] * 3
    assert (df["err_out"] <= TOLERANCE["float32"]).all() and df["err_residual"].isna().all()


def test_get_benchmark_writes_csv_and_png(tmp_path, capsys):
    bench = L.get_benchmark(True, hidden=[64], batch=[1], seq=[4, 8], dtypes=["float32"],
                            impls=["huggingface", "triton"], device="cpu", modes=["eager"], budget_ms=2,
                            progress=False)
    df = bench.run(print_data=True, save_path=str(tmp_path))
    printed = capsys.readouterr().out
    assert "rmsnorm-perf-with-residual (eager timing" in printed and "triton" in printed
    assert set(df["status"]) == {"ok"} and set(df["residual"]) == {True} and len(df) == 4
    table = tmp_path / "rmsnorm-perf-with-residual-eager.csv"
    with open(table, newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2 and {"huggingface", "triton"} <= set(rows[0])
    assert all(float(r["triton"]) > 0 for r in rows)
    png = tmp_path / "rmsnorm-perf-with-residual-eager.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (tmp_path / "results.csv").exists() and (tmp_path / "env.json").exists()


# ---------------------------------------------------------------- the CLI end to end


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory):
    save = tmp_path_factory.mktemp("cli") / "out"
    env = {**os.environ, "TRITON_INTERPRET": "1", "MPLBACKEND": "Agg",
           "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    argv = ["--batch-size", "1", "--seq-len", "8", "--hidden-size", "64", "--impls", "huggingface,torch,triton",
            "--save-path", str(save)]
    p = subprocess.run([sys.executable, "-m", "rmsnorm_lab", *argv], capture_output=True, text=True, env=env,
                       timeout=300, cwd=str(ROOT))
    return p, save


def _read_rows(save):
    with open(save / "results.csv", newline="") as f:
        reader = csv.DictReader(f)
        return reader.fieldnames, list(reader)


def test_cli_end_to_end(cli_run):
    p, save = cli_run
    assert p.returncode == 0, p.stderr[-3000:]
    assert "Traceback" not in p.stderr
    # the correctness check ran first, on the given sizes
    assert "correctness on cpu: x (1, 8, 64) bfloat16" in p.stdout
    fields, rows = _read_rows(save)
    assert fields == COLUMNS
    # 3 implementations x with/without residual x the CPU modes (cold, eager)
    assert len(rows) == 3 * 2 * 2
    assert {(r["impl"], r["residual"], r["mode"]) for r in rows} == {
        (i, res, m) for i in ("huggingface", "torch", "triton") for res in ("False", "True")
        for m in ("cold", "eager")}
    for r in rows:
        assert r["status"] == "ok" and r["correct"] == "True" and r["error"] == "", r
        assert r["dtype"] == "bfloat16" and r["device"] == "cpu"
        assert float(r["us_p20"]) <= float(r["us_median"]) <= float(r["us_p80"])
        assert float(r["err_out"]) <= TOLERANCE["bfloat16"]
        if r["residual"] == "True":
            assert float(r["err_residual"]) <= TOLERANCE["bfloat16"]
        if r["impl"] == "huggingface":
            assert float(r["speedup_vs_hf"]) == 1.0
        else:
            assert float(r["speedup_vs_hf"]) > 0
        assert "rmsnorm_lab" in r["command"] and "--hidden-size 64" in r["command"]
    env = json.loads((save / "env.json").read_text())
    for key in ("gpu_name", "copy_gbps", "versions", "git_commit", "command", "device", "time"):
        assert key in env, key
    assert env["copy_gbps"] > 0 and env["device"] == "cpu" and env["gpu_name"].startswith("CPU")
    assert {"torch", "triton", "flashinfer-python", "vllm", "liger-kernel", "quack-kernels"} <= set(env["versions"])
    assert env["versions"]["torch"] == torch.__version__.split("+")[0] or env["versions"]["torch"] == torch.__version__
    assert "--hidden-size 64" in env["command"]
    if (ROOT / ".git").exists():
        assert env["git_commit"]
    for mode in ("cold", "eager"):
        for stem in ("latency", "bandwidth", "speedup"):
            png = save / f"{stem}-{mode}.png"
            assert png.exists(), png
            assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000


def test_cli_size_flags_narrow_the_sweep(cli_run):
    p, save = cli_run
    assert p.returncode == 0, p.stderr[-3000:]
    _, rows = _read_rows(save)
    assert {r["hidden"] for r in rows} == {"64"}         # not the default 4096 / 6144
    assert {r["batch"] for r in rows} == {"1"}
    assert {r["seq"] for r in rows} == {"8"}
    assert {r["tokens"] for r in rows} == {"8"}
    cfg = json.loads((save / "env.json").read_text())["config"]
    assert cfg["hidden"] == [64] and cfg["batch"] == [1] and cfg["seq"] == [8]


# ---------------------------------------------------------------- the bytes model


def test_bytes_model():
    for T, H, b in [(1, 1, 2), (8, 64, 2), (512, 4096, 2), (3, 33, 4), (7, 1000, 8)]:
        assert bytes_moved(T, H, b, False) == 2 * T * H * b + H * b
        assert bytes_moved(T, H, b, True) == 4 * T * H * b + H * b
    c = Case(4, 128, 4096, "bfloat16", residual=True)
    assert c.tokens == 512 and c.itemsize == 2
    assert c.bytes_moved == 4 * 512 * 4096 * 2 + 4096 * 2
    assert Case(1, 8, 64, "float32").bytes_moved == 2 * 8 * 64 * 4 + 64 * 4
    from rmsnorm_lab import bandwidth
    assert bandwidth.bytes_moved is bytes_moved


def test_rows_bandwidth_consistent_with_bytes_and_time(cli_run):
    p, save = cli_run
    assert p.returncode == 0, p.stderr[-3000:]
    _, rows = _read_rows(save)
    for r in rows:
        T, H, res = int(r["tokens"]), int(r["hidden"]), r["residual"] == "True"
        assert int(r["bytes"]) == bytes_moved(T, H, 2, res)
        gbps = int(r["bytes"]) / (float(r["us_median"]) * 1e-6) / 1e9
        # the CSV rounds gbps and pct_copy to 0.1, us_median to 1e-3 µs and copy_gbps to 0.1 GB/s
        assert abs(float(r["gbps"]) - gbps) <= 0.05 + 1e-3 * gbps, r
        copy = float(r["copy_gbps"])
        pct = 100 * gbps / copy
        # copy_gbps is within 0.05 of the figure pct_copy was computed from: a relative 0.05 / copy of pct
        # (a CPU copy figure of a few GB/s makes that the largest term)
        assert abs(float(r["pct_copy"]) - pct) <= 0.05 + 1e-3 * pct + pct * 0.05 / (copy - 0.05), r


# ---------------------------------------------------------------- timing


def test_quantiles_on_known_samples():
    t = _quantiles([10, 1, 9, 2, 8, 3, 7, 4, 6, 5], "cold", note="n")
    assert (t.median_us, t.n, t.mode, t.note) == (5.5, 10, "cold", "n")
    assert t.p20_us == pytest.approx(2.8) and t.p80_us == pytest.approx(8.2)
    t = _quantiles([4.0], "eager")
    assert t.median_us == t.p20_us == t.p80_us == 4.0
    t = _quantiles([1, 2, 3, 4, 5], "graph")
    assert (t.p20_us, t.median_us, t.p80_us) == (pytest.approx(1.8), 3, pytest.approx(4.2))
    with pytest.raises(RuntimeError, match="no timing samples"):
        _quantiles([], "cold")


@pytest.mark.parametrize("mode", ["cold", "eager"])
def test_cpu_timing_modes(mode):
    x, w, r = _inputs((4, 64), "float32", True)
    t = time_runner(Runner(hf_rmsnorm, x, w, r, 1e-6, False), mode, "cpu", budget_ms=5)
    assert t.mode == mode and t.n >= 5
    assert 0 < t.p20_us <= t.median_us <= t.p80_us
    assert ("host timer" in t.note) if mode == "cold" else ("back-to-back" in t.note)


def test_graph_mode_on_cpu_is_a_skip_row():
    runner = Runner(hf_rmsnorm, *_inputs((2, 16), "float32", False), 1e-6, False)
    with pytest.raises(NotImplementedError, match="graph mode needs CUDA"):
        time_runner(runner, "graph", "cpu")
    with pytest.raises(ValueError, match="unknown mode 'warm'"):
        time_runner(runner, "warm", "cpu")
    df = L.run_sweep(hidden=[16], batch=[1], seq=[2], dtypes=["float32"], residual=[False], impls=["huggingface"],
                     device="cpu", modes=["graph", "eager"], budget_ms=2, progress=False)
    st = df.set_index("mode")
    assert st.loc["graph", "status"] == "skip" and "graph mode needs CUDA" in st.loc["graph", "error"]
    assert st.loc["eager", "status"] == "ok" and st.loc["eager", "us_median"] > 0


# ---------------------------------------------------------------- in-place implementations: fresh inputs


def _fake_inplace(seen):
    """vLLM-style fused add: writes out into x and x + r into r; records what it was given."""
    def fn(x, w, r=None, eps=1e-6):
        seen.append((x.clone(), None if r is None else r.clone()))
        if r is None:
            return hf_rmsnorm(x, w, None, eps)
        out, s = hf_rmsnorm(x, w, r, eps)
        r.copy_(s)
        x.copy_(out)
        return x, r
    return fn


def test_runner_restore_keeps_inputs_fresh():
    seen = []
    x0, w, r0 = _inputs((3, 32), "float32", True)
    keep_x, keep_r = x0.clone(), r0.clone()
    runner = Runner(_fake_inplace(seen), x0, w, r0, 1e-6, inplace=True)
    assert runner.x is not x0 and runner.r is not r0           # works on its own buffers
    runner()
    assert not torch.equal(runner.x, x0)                       # the call did mutate them
    runner.restore()
    assert torch.equal(runner.x, x0) and torch.equal(runner.r, r0)
    seen.clear()
    t = time_runner(runner, "cold", "cpu", budget_ms=3)
    assert len(seen) >= t.n >= 5
    for sx, sr in seen:                                        # every timed call saw the pristine inputs
        assert torch.equal(sx, keep_x) and torch.equal(sr, keep_r)
    assert torch.equal(x0, keep_x) and torch.equal(r0, keep_r)  # the pristine copies were never touched
    assert runner.outputs_finite()
    # not in place (or no residual): no copies, restore is a no-op
    plain = Runner(hf_rmsnorm, x0, w, r0, 1e-6, inplace=False)
    assert plain.x is x0 and plain.r is r0
    no_res = Runner(_fake_inplace([]), x0, w, None, 1e-6, inplace=True)
    assert not no_res.inplace and no_res.x is x0


def test_sweep_restores_inplace_impl(monkeypatch):
    seen = []
    monkeypatch.setitem(registry(), "fake_inplace", Impl(
        "fake_inplace", "fake in-place", "test", lambda: _fake_inplace(seen), devices=("cpu",),
        dtypes=("float32",), requires=("torch",), inplace_residual=True))
    df = L.run_sweep(hidden=[32], batch=[1], seq=[3], dtypes=["float32"], residual=[True], impls=["fake_inplace"],
                     device="cpu", modes=["cold"], budget_ms=3, progress=False)
    row = df.iloc[0]
    assert row["status"] == "ok" and row["correct"] == True, row.to_dict()   # noqa: E712
    assert not row["error"] or row["error"] != row["error"]                   # empty or NaN
    assert len(seen) >= 5
    first_x, first_r = seen[0]
    for sx, sr in seen:               # warm-up, check and every cold call: the same, fresh inputs
        assert torch.equal(sx, first_x) and torch.equal(sr, first_r)


# ---------------------------------------------------------------- the launch table


def _pow2(n):
    return n > 0 and n & (n - 1) == 0


TABLE_FILES = sorted(kt.TABLES_DIR.glob("*.json"))


@pytest.mark.parametrize("path", TABLE_FILES, ids=lambda p: p.name)
def test_launch_table_entries_parse(path):
    """Every committed table (the default one, each device's own and a device's variant table) parses in the
    one schema (named LaunchConfig fields, only those that differ from the defaults), and the device it names
    reads it (for its variant, if it has one)."""
    from rmsnorm_lab.device import slug
    kt.use_table(None)
    raw = json.loads(path.read_text())
    device, variant = raw["device"], raw.get("variant")
    if variant:
        assert path.name == f"{slug(device)}.{variant}.json" and kt.variant_table_path(device, variant) == path
        table = kt.parse_configs(raw["configs"])
    else:
        assert path == kt.DEFAULT_TABLE or slug(device) == path.stem, (path, device)
        assert kt.table_path(device) == path
        table = kt.load_table(device)
    assert sorted(table) == sorted(raw["configs"]) and len(table) > 0
    defaults = LaunchConfig().to_dict()
    for key, entry in raw["configs"].items():
        parts = key.split(":")
        assert len(parts) == 3 and all(p.isdigit() for p in parts), key
        hidden, bucket, res = map(int, parts)
        assert hidden > 0 and _pow2(bucket) and res in (0, 1), key
        assert isinstance(entry, dict) and all(entry[k] != defaults[k] for k in entry), (key, entry)
        cfg = table[key]
        assert isinstance(cfg, LaunchConfig) and cfg.to_dict(compact=True) == entry
        if not cfg.hold:                        # the old positional form round-trips (it has no held slices)
            assert LaunchConfig.from_legacy(cfg.legacy()) == cfg
        assert cfg.pdl and cfg.lean                                          # A/B variants stay in the defaults
        assert kt.pick(hidden, bucket, 2, bool(res), device, variant=variant) == cfg
    assert {"device", "date", "triton", "torch", "how", "schema"} <= set(raw)   # provenance kept


def test_a_gpu_reads_its_own_table_else_the_default(monkeypatch, tmp_path):
    from rmsnorm_lab import envinfo
    own = tmp_path / "nvidia-h200.json"
    own.write_text(json.dumps({"device": "NVIDIA H200", "configs": {"64:8:0": {"rows": 2, "warps": 1}}}))
    monkeypatch.setattr(kt, "TABLES_DIR", tmp_path)
    kt.use_table(None)
    try:
        assert kt.table_path("NVIDIA H200") == own
        assert kt.table_path("NVIDIA H100 80GB HBM3") == kt.DEFAULT_TABLE
        assert kt.table_path("NVIDIA A100-SXM4-80GB") == kt.DEFAULT_TABLE    # no table of its own: the default
        assert kt.table_path(None) == kt.DEFAULT_TABLE                       # CPU tensors (the interpreter)
        assert kt.table_path("NVIDIA H200", tmp_path / "x.json") == tmp_path / "x.json"
        assert kt.pick(64, 8, 2, False, "NVIDIA H200") == LaunchConfig(rows=2, warps=1)
        assert kt.pick(64, 16, 2, False, "NVIDIA H200") == LaunchConfig(rows=2, warps=1)   # the nearest entry
        assert kt.pick(64, 16, 2, True, "NVIDIA H200") == kt.heuristic(64, 16, 2, True)   # none with a residual
        assert kt.pick(4096, 128, 2, False, "NVIDIA H200") == kt.heuristic(4096, 128, 2, False)
        assert kt.pick(4096, 128, 2, False) == kt.load_table()["4096:128:0"]
        for info in (envinfo.launch_table_info("NVIDIA H200"), kt.table_info("NVIDIA H200")):
            assert info["path"] == str(own) and info["own"] is True and info["tuned_on"] == "NVIDIA H200"
        info = kt.table_info("NVIDIA A100-SXM4-80GB")
        assert info["path"] == str(kt.DEFAULT_TABLE) and info["own"] is False
        assert info["tuned_on"] == "NVIDIA H100 80GB HBM3" and len(info["sha256"]) == 12
        assert kt.table_info(None)["own"] is False
        kt.use_table({"64:8:0": [4, 2, 0]})                                  # use_table: every device
        assert kt.pick(64, 8, 2, False, "NVIDIA H200") == kt.pick(64, 8, 2, False) == LaunchConfig(rows=4, warps=2)
        assert kt.table_info("NVIDIA H200")["override"] is True
        kt.use_table(None)
        with pytest.raises(ValueError, match="no such file"):
            kt.use_table(tmp_path / "x.json")
        over = tmp_path / "over.json"                                        # an overlay: its keys, then the GPU's
        over.write_text(json.dumps({"overlay": True, "device": "NVIDIA H200",
                                    "configs": {"64:16:0": {"rows": 8, "warps": 1}}}))
        kt.use_table(over)
        assert kt.pick(64, 16, 2, False, "NVIDIA H200") == LaunchConfig(rows=8, warps=1)
        assert kt.pick(64, 8, 2, False, "NVIDIA H200") == LaunchConfig(rows=2, warps=1)
        info = kt.table_info("NVIDIA H200")
        assert info["path"] == str(own) and info["overlay"]["path"] == str(over)
    finally:
        kt.use_table(None)


def test_triton_entry_prewarm_jobs_and_provenance():
    """Our entry's compile-ahead jobs: each (hidden, residual, dtype, config the table picks) once, picklable;
    a table miss takes the heuristic with the dtype's element size. Its provenance says which table runs."""
    import pickle
    entry = get_impl("triton")
    assert entry.role == "ours" and entry.packages == ("triton",) and entry.color
    cases = [Case(1, t, h, "float16", res) for h in (2048, 4096) for t in (1, 16, 4096) for res in (False, True)]
    jobs = entry.prewarm_jobs(cases + cases[:3], "cuda")
    assert len(jobs) == len(set(jobs)) and all(j[0] == "triton" for j in jobs)
    for c in cases:
        assert ("triton", c.hidden, c.residual, "float16", kt.pick(c.hidden, c.tokens, 2, c.residual)) in jobs
    f32 = Case(1, 600, 300, "float32", False)          # far from every entry: the heuristic, per element size
    assert entry.prewarm_jobs([f32], "cuda") == [("triton", 300, False, "float32", kt.pick(300, 600, 4, False))]
    assert kt.pick(300, 600, 4, False) != kt.pick(300, 600, 2, False)
    assert entry.prewarm_jobs(cases, "cpu") == []
    pickle.dumps(jobs)
    prov = entry.provenance()
    assert "triton" in prov["versions"] and prov["launch_table"]["path"] == str(kt.DEFAULT_TABLE)


def test_tokens_bucket():
    assert [kt.tokens_bucket(t) for t in (0, 1, 2, 3, 4, 5, 64, 65, 1000, 1024, 1025)] == \
        [1, 1, 2, 4, 4, 8, 64, 128, 1024, 1024, 2048]


def test_heuristic_config():
    from rmsnorm_lab.kernels.config import next_pow2
    for hidden in (1, 7, 33, 64, 100, 512, 1000, 1024, 1025, 4096, 5000, 8192, 16384):
        for tokens in (1, 7, 263, 264, 600, 4096, 70000):
            for itemsize in (2, 4):
                for res in (False, True):
                    cfg = kt.heuristic(hidden, tokens, itemsize, res)
                    block_n = next_pow2(hidden)
                    assert cfg == LaunchConfig(rows=cfg.rows, warps=cfg.warps)      # no flags, no chunk
                    assert _pow2(cfg.rows) and cfg.rows <= 16 and _pow2(cfg.warps) and cfg.warps <= 16
                    if block_n > 1024 or tokens < 528:
                        assert cfg.rows == 1, (hidden, tokens, cfg)
                    else:
                        assert cfg.rows * block_n <= 2048
    assert kt.heuristic(64, 70000, 2, False).rows == 16      # small rows: many per block


def test_nearest_prefers_the_same_block_then_hidden_then_tokens():
    t = {k: LaunchConfig.from_dict(v) for k, v in {
        "4096:512:0": {"warps": 8}, "5120:1024:0": {"warps": 32, "reread": True},
        "4608:512:0": {"warps": 16, "chunk": 512}, "4608:2048:0": {"warps": 4},
        "16384:512:1": {"warps": 16, "chunk": 8192, "sum_first": True, "maxnreg": 32}}.items()}
    assert kt.nearest(4608, 400, False, t)[0] == "4608:512:0"        # its own hidden, the nearer token count
    assert kt.nearest(4608, 1900, False, t)[0] == "4608:2048:0"
    assert kt.nearest(4608, 777, False, t)[0] == "5120:1024:0"       # a near hidden at the shape's own bucket
    assert kt.nearest(4300, 512, False, t)[0] == "4608:512:0"        # block 8192: 4608 before 4096 (block 4096)
    assert kt.nearest(4608, 777, True, t)[0] == "16384:512:1"        # same residual only; 16384 is 2x the block
    assert kt.nearest(2000, 777, True, t) is None                    # nothing within 2x of block 2048
    # adapted to a smaller block: warps halve, an 8192-wide slice no longer fits (two passes over the row)
    got = kt.adapt(t["16384:512:1"], 16384, 7168)
    assert got == LaunchConfig(warps=8, reread=True, sum_first=True)
    assert kt.adapt(t["4096:512:0"], 4096, 3000) is t["4096:512:0"]     # same block: as tuned


def test_pick_config_table_then_heuristic(tmp_path):
    custom = tmp_path / "table.json"
    custom.write_text(json.dumps({"configs": {"64:8:0": {"rows": 2, "warps": 1}, "64:8:1": {"rows": 4, "warps": 2},
                                              "64:32:0": {"warps": 2, "evict_loads": True, "evict_stores": True},
                                              "64:64:0": {"warps": 2, "evict_loads": True, "chunk": 32}}}))
    kt.use_table(custom)
    try:
        assert kt.pick(64, 8, 2, False) == LaunchConfig(rows=2, warps=1)
        assert kt.pick(64, 5, 4, True) == LaunchConfig(rows=4, warps=2)      # 5 tokens fall in bucket 8
        assert kt.pick(64, 32, 2, False).legacy() == (1, 2, 0, 5, 0)
        assert kt.pick(64, 64, 2, False).legacy() == (1, 2, 0, 1, 32)
        # no key of its own: the nearest entry (same block first, then hidden, then tokens), adapted
        assert kt.pick_explained(64, 9, 2, False) == (LaunchConfig(rows=2, warps=1), "nearest 64:8:0")
        assert kt.pick_explained(64, 13, 2, False)[1] == "nearest 64:32:0"
        assert kt.pick_explained(100, 8, 2, False) == (LaunchConfig(rows=2, warps=2), "nearest 64:8:0")  # 2x block
        assert kt.pick_explained(4096, 8, 2, False) == (kt.heuristic(4096, 8, 2, False), "heuristic")   # far
        assert kt.pick_explained(64, 8, 2, False)[1] == "table 64:8:0"
        x, w, r = _inputs((8, 64), "float32", True)
        _assert_matches_reference(triton_rmsnorm(x, w, r), x, w, r)   # a launch with the table's config
        assert kt.load_table(path=tmp_path / "missing.json") == {}    # a missing file is an empty table
        assert kt.pick(4096, 128, 2, False, table={}) == kt.heuristic(4096, 128, 2, False)
    finally:
        kt.use_table(None)
    assert kt.pick(4096, 128, 2, False) == kt.load_table()["4096:128:0"]


@pytest.mark.parametrize("bad", [(1, 2), (3, 4, 0), (2, 3, 0), (1, 4, -1), (1, 4, 0, 32), (1, 4, 0, 9), (1, 4, 0, 0, 24),
                                 (1, 4, 0, 16, 32), (1, 4, 0, 25), (1, 4, 0, 24),
                                 (1, 4, 0, 128), (1, 4, 0, 32, 0), (1, 4, 0, 80), (1, 4, 0, 64, 32),
                                 (1, 4, 0, 0, 8), (1, 4, 0, 0, 0, 20), (1, 4, 0, 0, 0, 33), (1, 4, 0, 0, 0, 256),
                                 (1, 4, 0, 0, 0, 32, 0), ("a", 4, 0)])
def test_legacy_config_rejects_bad(bad):
    with pytest.raises(ValueError, match="LaunchConfig"):
        LaunchConfig.from_legacy(bad)


@pytest.mark.parametrize("kw,field", [({"rows": 3}, "rows"), ({"warps": 64}, "warps"), ({"per_sm": -1}, "per_sm"),
                                      ({"chunk": 8}, "chunk"), ({"maxnreg": 20}, "maxnreg"),
                                      ({"evict_loads": True, "evict_last": True}, "evict_last"),
                                      ({"reread": True, "chunk": 32}, "reread"), ({"sum_first": True}, "sum_first"),
                                      ({"late_ro": True, "reread": True}, "late_ro"), ({"rows": 1.0}, "rows"),
                                      ({"pdl": 1}, "pdl"), ({"hold": 1}, "hold"), ({"hold": 3, "chunk": 32}, "hold")])
def test_launch_config_names_the_bad_field(kw, field):
    with pytest.raises(ValueError, match=f"LaunchConfig.{field}"):
        LaunchConfig(**kw)
    with pytest.raises(ValueError, match="unknown field"):
        LaunchConfig.from_dict({"flags": 3})


def test_launch_config_forms():
    c = LaunchConfig.from_legacy((1, 4, 0, 1, 2048, 32))
    assert c == LaunchConfig(evict_loads=True, chunk=2048, maxnreg=32) and c.legacy() == (1, 4, 0, 1, 2048, 32)
    assert LaunchConfig.from_legacy([1, 4, 0, 1, 2048, 0]).legacy() == (1, 4, 0, 1, 2048)     # no cap: 5 fields
    assert LaunchConfig.from_legacy((1, 4, 0)) == LaunchConfig()
    assert LaunchConfig.from_dict(c.to_dict()) == c == LaunchConfig.from_dict(c.to_dict(compact=True))
    assert c.to_dict(compact=True) == {"chunk": 2048, "evict_loads": True, "maxnreg": 32}
    assert c.replace(lean=False, pdl=False).legacy() == c.legacy()       # A/B variants are fields
    with pytest.raises(Exception):
        c.rows = 2                                                       # frozen


def test_occupancy_and_register_cap():
    from rmsnorm_lab.kernels import occupancy as oc
    # 4 warps at 38 registers (40 allocated): 65536 / (40 * 32 * 4) -> 12 programs; at 32: 16 (the warp limit)
    assert oc.occupancy(38, 4) == 12 and oc.occupancy(32, 4) == 16
    assert oc.occupancy(42, 32) == 1 and oc.occupancy(32, 32) == 2        # 32 warps: 2 at most
    assert oc.occupancy(16, 1) == 32                                      # the 32-programs limit
    assert oc.grid_programs(512, 1, 0, 132) == 512 and oc.grid_programs(513, 2, 0, 132) == 257
    assert oc.grid_programs(65536, 1, 8, 132) == 1056 and oc.grid_programs(100, 1, 8, 132) == 100
    assert oc.occupancy(32, 4, smem=100 * 1024) == 2                      # shared memory limits too
    for warps in (1, 2, 4, 8, 16, 32):
        for blocks in range(1, min(32, 64 // warps) + 1):
            cap = oc.regs_cap_for(blocks, warps)
            if cap >= 8:
                assert oc.occupancy(cap, warps) >= blocks
                assert cap == 248 or oc.occupancy(cap + 8, warps) < blocks


# ---------------------------------------------------------------- torch.compile: one graph per shape


def test_torch_compile_many_shapes():
    """More than 8 shapes (dynamo's default recompile limit) each get their own graph, none falls
    back to eager; every dtype with and without residual, both outputs checked."""
    from torch._dynamo.utils import counters

    fn = get_impl("torch_compile").load()
    hiddens = [11, 13, 17, 19, 23, 29, 31, 37, 41, 43]      # (5, h): shapes no other test compiles
    before = counters["stats"]["unique_graphs"]
    for i, h in enumerate(hiddens):
        dtype, residual = DTYPES[i % 3], bool(i % 2)
        x, w, r = _inputs((5, h), dtype, residual, seed=i)
        _assert_matches_reference(fn(x.clone(), w, None if r is None else r.clone()), x, w, r,
                                  what=("torch_compile", h, dtype, residual))
    grown = counters["stats"]["unique_graphs"] - before
    assert grown >= len(hiddens), f"{grown} graphs compiled for {len(hiddens)} shapes: some fell back to eager"
    assert len(fn.compile_seconds) >= len(hiddens)
    assert all(s > 0 for s in fn.compile_seconds.values())


@pytest.mark.parametrize("lean", [True, False])
@pytest.mark.parametrize("config", [(1, 2, 0, 0, 32), (2, 1, 2, 1, 16), (1, 4, 0, 2), (2, 2, 0, 17),
                                    (1, 2, 0, 32, 32), (2, 1, 2, 33, 16), (2, 2, 0, 48), (1, 4, 0, 64), (2, 1, 2, 68)])
def test_triton_in_place_fused_add_every_path(config, lean):
    """out written into x and x + r into r (the registry's in-place call), one-pass and two-pass kernels,
    the new residual stored in pass 1 (flag 32) or late (flag 64); the v8 launch (lean: no grid-stride
    loop where each block has a program, int32 offsets, rsqrt) and the v7 one."""
    config = LaunchConfig.from_legacy(config).replace(lean=lean)
    x, w, r = _inputs((5, 100), "float32", True, seed=11)
    x0, r0 = x.clone(), r.clone()
    o, ro = triton_rmsnorm(x, w, r, out=x, residual_out=r, config=config)
    assert o is x and ro is r
    _assert_matches_reference((o, ro), x0, w, r0)


@pytest.mark.parametrize("hold", [1, 2])
@pytest.mark.parametrize("config", [dict(warps=2, chunk=32), dict(rows=2, warps=1, chunk=16, per_sm=2, lean=False),
                                    dict(warps=2, chunk=32, sum_first=True), dict(warps=1, chunk=64, evict_loads=True)])
def test_triton_held_slices(config, hold):
    """Slices held in registers (hold 1: pass 2 reads the row before its stores; 2: one pass over slices):
    every element written, out of place and in place, x as its own residual, a row that the slices do not
    divide (100 = 3 x 32 + 4), a grid-stride loop over two-row blocks."""
    config = LaunchConfig(hold=hold, **config)
    x, w, r = _inputs((5, 100), "float32", True, seed=13)
    out = torch.full_like(x, float("nan"))
    assert triton_rmsnorm(x, w, out=out, config=config) is out
    _assert_matches_reference(out, x, w, None)
    out, res_out = torch.full_like(x, float("nan")), torch.full_like(x, float("nan"))
    o, ro = triton_rmsnorm(x, w, r, out=out, residual_out=res_out, config=config)
    _assert_matches_reference((o, ro), x, w, r)
    xi, ri = x.clone(), r.clone()
    o, ro = triton_rmsnorm(xi, w, ri, out=xi, residual_out=ri, config=config)
    assert o is xi and ro is ri
    _assert_matches_reference((o, ro), x, w, r)
    xi = x.clone()
    o, ro = triton_rmsnorm(xi, w, xi, out=torch.empty_like(x), residual_out=xi, config=config)
    _assert_matches_reference((o, ro), x, w, x)


@pytest.mark.parametrize("config", [(1, 2, 0, 0, 32), (1, 2, 0, 32, 32), (2, 2, 0, 48), (1, 4, 0, 64), (1, 4, 0, 0)])
def test_triton_residual_is_x(config):
    """x used as its own residual, the new residual written over it: every read of x precedes its
    overwrite in each body (pass 1 of flag 32 stores x + x where it just read x)."""
    x, w, _ = _inputs((5, 100), "float32", False, seed=12)
    x0 = x.clone()
    out = torch.empty_like(x)
    o, ro = triton_rmsnorm(x, w, x, out=out, residual_out=x, config=config)
    assert ro is x
    _assert_matches_reference((o, ro), x0, w, x0)


def test_int64_offsets_only_where_int32_could_overflow():
    """The lean launch keeps int32 row offsets up to the largest target shape (65536 x 16384) and
    switches to int64 where an offset, masked lanes and padded rows included, can reach 2**31."""
    assert not needs_int64(65536, 16384, 16384)
    assert not needs_int64(1, 2**31 - 2**14 - 1, 2**14)
    assert needs_int64(1, 2**31 - 2**14, 2**14)
    assert needs_int64(131072, 16384, 16384)
    assert needs_int64(65536 + 16, 32768, 32768)


def test_config_fn_in_place_and_out_of_place():
    """The tuner's and diagnostics' launcher: fixed config, table pick, or a callable; in place or not."""
    x, w, r = _inputs((6, 100), "float32", True, seed=5)
    for cfg in [(2, 2, 0, 1, 32), None, lambda n, t, isz, res: (1, 2, 0, 0, 0)]:
        out = config_fn(cfg, inplace=False)(x, w, r)
        _assert_matches_reference(out, x, w, r)
        xi, ri = x.clone(), r.clone()
        o, ro = config_fn(cfg)(xi, w, ri)
        assert o is xi and ro is ri
        _assert_matches_reference((o, ro), x, w, r)
        _assert_matches_reference(config_fn(cfg)(x, w), x, w, None)


def test_bad_launch_table_entry_is_a_clear_error(tmp_path):
    bad = tmp_path / "table.json"
    bad.write_text(json.dumps({"configs": {"64:8:0": {"rows": 3}}}))
    with pytest.raises(ValueError, match="entry '64:8:0': LaunchConfig.rows: expected a power of two"):
        kt.use_table(bad)
    bad.write_text(json.dumps({"configs": {"64:8": {"rows": 2}}}))
    with pytest.raises(ValueError, match="entry '64:8'"):
        kt.load_table(path=bad)
    kt.use_table(None)


def test_written_reading_counts_ties_for_first(monkeypatch):
    """A shape where our kernel and a peer share the fastest median counts as ours and is said to be a tie."""
    import pandas as pd

    from rmsnorm_lab.analysis import written_reading

    rows = []
    for hidden, us in ((64, {"triton": 2.0, "torch": 2.0}), (128, {"triton": 1.0, "torch": 3.0})):
        for impl, t in us.items():
            rows.append({"impl": impl, "device": "cuda", "gpu_name": "GPU", "dtype": "bfloat16", "batch": 1,
                         "seq": 4, "tokens": 4, "hidden": hidden, "residual": False, "mode": "cold", "status": "ok",
                         "us_median": t, "us_p20": t, "us_p80": t, "correct": True, "error": ""})
    text = written_reading(pd.DataFrame(rows))
    assert "ours (triton) is fastest on 2 of 2 shapes (1 of them tied on the median with another; " in text


def test_variant_table_first_then_the_plain_table():
    """The static FP8 norm's own table on the H200: its own key, its nearest entry (adapted), else the plain
    table's pick; other GPUs (and CPU tensors) read the plain table. The file parses and says how it was made."""
    from rmsnorm_lab.kernels import tables as kt
    gpu = "NVIDIA H200"
    path = kt.variant_table_path(gpu, "fp8-static")
    assert path is not None and path.name == "nvidia-h200.fp8-static.json"
    meta = json.loads(path.read_text())
    own = kt.parse_configs(meta["configs"])
    assert meta["device"] == gpu and meta["variant"] == "fp8-static" and meta["selection"] and meta["searched"]
    key = "5120:65536:0"
    assert kt.pick_explained(5120, 65536, 2, False, gpu, variant="fp8-static") == (own[key], f"fp8-static table {key}")
    cfg, why = kt.pick_explained(5120, 40000, 2, False, gpu, variant="fp8-static")     # bucket 65536: its own key
    assert why == f"fp8-static table {key}"
    cfg, why = kt.pick_explained(5120, 9000, 2, False, gpu, variant="fp8-static")      # bucket 16384: its own
    assert why == "fp8-static table 5120:16384:0" and cfg.hold == 2
    assert kt.pick_explained(256, 64, 2, False, gpu, variant="fp8-static") == kt.pick_explained(256, 64, 2, False, gpu)
    # far from the searched token counts (a decode batch): the plain table, not a borrowed large-batch pick
    assert kt.pick_explained(5120, 1, 2, True, gpu, variant="fp8-static") == kt.pick_explained(5120, 1, 2, True, gpu)
    # below the smallest searched token count (256), though within reach of it: the plain table too
    assert kt.pick_explained(5120, 128, 2, False, gpu, variant="fp8-static")[1].startswith("table ")
    assert kt.pick_explained(5120, 300, 2, False, gpu, variant="fp8-static")[1] == "fp8-static table 5120:512:0"
    assert kt.pick_explained(5120, 2000, 2, False, gpu, variant="fp8-static")[1].startswith("fp8-static nearest 5120:")
    two = {"2048:256:0": 1, "2048:4096:0": 2}
    assert kt._near_tokens(two, 1024) == two and kt._near_tokens(two, 128) == {} and kt._near_tokens({}, 8) == {}
    assert kt._near_tokens(two, 16384) == {"2048:4096:0": 2} and kt._near_tokens(two, 65536) == {}
    assert kt.variant_table_path(None, "fp8-static") is None
    assert kt.variant_table_path("NVIDIA H100 80GB HBM3", "fp8-static") is None
    assert kt.pick(5120, 65536, 2, False, "NVIDIA H100 80GB HBM3", variant="fp8-static") == \
        kt.pick(5120, 65536, 2, False, "NVIDIA H100 80GB HBM3")
    with pytest.raises(ValueError, match="variant"):
        kt.variant_table_path(gpu, "gemma")
    assert "fp8-static" in kt.table_info(gpu)["variant_tables"]


def test_variant_table_in_the_user_folder_comes_first(tmp_path, monkeypatch):
    """A variant table searched on your GPU and put in the user's tables folder is the one that GPU reads."""
    from rmsnorm_lab.kernels import tables as kt
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert kt.variant_table_path("GPU X", "fp8-static") is None
    p = kt.user_dir() / "gpu-x.fp8-static.json"
    p.parent.mkdir(parents=True)
    p.write_text(json.dumps({"device": "GPU X", "variant": "fp8-static", "configs": {"5120:4096:0": {"warps": 8}}}))
    kt.STORE.reset()
    try:
        assert kt.variant_table_path("GPU X", "fp8-static") == p
        assert kt.pick_explained(5120, 4096, 2, False, "GPU X", variant="fp8-static") == \
            (LaunchConfig(warps=8), "fp8-static table 5120:4096:0")
    finally:
        kt.STORE.reset()
