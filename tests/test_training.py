"""Training: our forward + backward kernels, the RMSNorm module, torch.compile, the backward bench.

On CPU the kernels run under TRITON_INTERPRET=1 (set by conftest.py) on small shapes; the
GPU-only checks (CUDA-graph capture, Inductor on CUDA, dw over 65536 tokens) run with
``TRITON_INTERPRET=0 pytest tests/test_training.py`` on a CUDA machine.
"""
from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from rmsnorm_lab import backward as B
from rmsnorm_lab.module import RMSNorm, torch_rmsnorm

ROOT = Path(__file__).resolve().parents[1]
INTERP = os.environ.get("TRITON_INTERPRET") == "1"
GPU = torch.cuda.is_available() and not INTERP
DEV = "cuda" if GPU else "cpu"
needs_kernels = pytest.mark.skipif(not (GPU or INTERP), reason="needs CUDA or TRITON_INTERPRET=1")
needs_gpu = pytest.mark.skipif(not GPU, reason="needs a CUDA GPU with compiled kernels (TRITON_INTERPRET=0)")
# fp32 and fp16 tight; bf16 admits one ulp per element (the interpreter truncates fp32 -> bf16)
TIGHT = {"float32": 1e-5, "float16": 1e-3, "bfloat16": 1e-2}


def _ours():
    return B.SUBJECTS["triton"].load()


def _grads_vs_ref(tokens, hidden, dtype, residual, weight_dtype=None, use="bwd"):
    x, w, r, dy, d_res = B.make_grad_inputs(tokens, hidden, dtype, residual, DEV, seed=3,
                                            weight_dtype=weight_dtype)
    row = B.check_grads(_ours(), x, w, r, 1e-6, dy, d_res, dtype, use=use)
    return row


@needs_kernels
@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
@pytest.mark.parametrize("residual", [False, True])
def test_grads_match_float64(dtype, residual):
    """dx, dw (and the residual's gradient) against float64 autograd; hidden not a power of two."""
    row = _grads_vs_ref(19, 200, dtype, residual)
    assert row["status"] == "ok", row
    keys = ["err_dx", "err_dw"] + (["err_dr"] if residual else [])
    assert all(row[k] <= TIGHT[dtype] for k in keys), row


@needs_kernels
@pytest.mark.parametrize("residual", [False, True])
def test_fp32_weight_with_fp16_x(residual):
    """A float32 weight with float16 activations: out and dx in fp16, dw in fp32, all close to float64."""
    row = _grads_vs_ref(9, 72, "float16", residual, weight_dtype="float32", use="fwd_bwd")
    assert row["status"] == "ok", row
    assert row["err_dx"] <= TIGHT["float16"] and row["err_dw"] <= TIGHT["float16"], row


@needs_kernels
@pytest.mark.parametrize("hidden,tail,rows,programs", [(80, 16, 2, 3), (200, 128, 4, 2), (200, 0, 1, 5),
                                                        (96, 32, 1, 1)])
@pytest.mark.parametrize("residual", [False, True])
def test_backward_launch_shapes_match_float64(hidden, tail, rows, programs, residual):
    """Every launch shape the policy may pick gives the float64 gradients: a second column block
    (80 = 64 + 16; 200 = 128 + a 128-wide tail, 56 of it masked), several rows a tile, few programs (so each
    walks many tiles)."""
    from rmsnorm_lab.kernels.config import next_pow2
    from rmsnorm_lab.kernels.training import TrainLaunch, _backward, rmsnorm_fwd, fused_add_rmsnorm_fwd
    x, w, r, dy, d_res = B.make_grad_inputs(13, hidden, "float32", residual, DEV, seed=5)
    if residual:
        _, s, rstd = fused_add_rmsnorm_fwd(x, r, w, 1e-6)
    else:
        s, (_, rstd) = x, rmsnorm_fwd(x, w, 1e-6)
    block = 1 << (hidden.bit_length() - 1) if tail else next_pow2(hidden)
    ds, dw = _backward(dy, s, w, rstd, d_res, TrainLaunch(block, rows, 4, programs, 1, tail))
    ref = B.reference_grads(x, w, r, 1e-6, dy, d_res)
    assert B.rel_err(ds, ref[0]) <= TIGHT["float32"] and B.rel_err(dw, ref[1]) <= TIGHT["float32"]


def _saved(tokens, hidden, dtype, residual, seed=5):
    from rmsnorm_lab.kernels.training import fused_add_rmsnorm_fwd, rmsnorm_fwd
    x, w, r, dy, d_res = B.make_grad_inputs(tokens, hidden, dtype, residual, DEV, seed=seed)
    if residual:
        _, s, rstd = fused_add_rmsnorm_fwd(x, r, w, 1e-6)
    else:
        s, (_, rstd) = x, rmsnorm_fwd(x, w, 1e-6)
    return x, w, r, dy, d_res, s, rstd


@needs_kernels
@pytest.mark.parametrize("dtype,hidden", [("float32", 200), ("bfloat16", 512)])
@pytest.mark.parametrize("residual", [False, True])
@pytest.mark.parametrize("reload", [0, 1, 2])
def test_backward_reload_matches_float64(reload, residual, dtype, hidden):
    """One pass and two passes (s and dy re-read, w too with reload 2): float64 gradients, and dw bitwise
    equal across two calls. 13 rows in tiles of 2 over 3 programs (each walks several tiles, the last
    tile half empty); hidden 200 masks 56 of 256 columns."""
    from rmsnorm_lab.kernels.config import next_pow2
    from rmsnorm_lab.kernels.training import TrainLaunch, _backward
    x, w, r, dy, d_res, s, rstd = _saved(13, hidden, dtype, residual)
    cfg = TrainLaunch(next_pow2(hidden), 2, 4, 3, 1, 0, reload=reload, maxnreg=128 if reload else 0)
    ds, dw = _backward(dy, s, w, rstd, d_res, cfg)
    ref = B.reference_grads(x, w, r, 1e-6, dy, d_res)
    assert B.rel_err(ds, ref[0]) <= TIGHT[dtype] and B.rel_err(dw, ref[1]) <= TIGHT[dtype]
    assert torch.equal(_backward(dy, s, w, rstd, d_res, cfg)[1], dw)


@needs_kernels
@pytest.mark.parametrize("hidden,block,tail,reload", [(200, 128, 128, 1), (80, 64, 16, 2),
                                                     (32768, 32768, 0, 1), (20000, 32768, 0, 2)])
def test_backward_two_pass_tail_and_wide_rows(hidden, block, tail, reload):
    """Two passes with a second column block (80 = 64 + 16; 200 = 128 + a 128-wide tail), and rows wider
    than 16384, against float64 with the residual."""
    from rmsnorm_lab.kernels.training import TrainLaunch, _backward
    x, w, r, dy, d_res, s, rstd = _saved(5, hidden, "float32", True)
    ds, dw = _backward(dy, s, w, rstd, d_res, TrainLaunch(block, 1, 4, 2, 1, tail, reload=reload))
    ref = B.reference_grads(x, w, r, 1e-6, dy, d_res)
    assert B.rel_err(ds, ref[0]) <= TIGHT["float32"] and B.rel_err(dw, ref[1]) <= TIGHT["float32"]


@pytest.mark.parametrize("cfg", [dict(reload=3), dict(block_n=192), dict(block_n=128), dict(tail=48),
                                 dict(maxnreg=8), dict(rows=0), dict(sum_cols=24), dict(sum_rows=-2)])
def test_backward_refuses_a_bad_launch_naming_cfg(cfg):
    """An unknown reload, a block that is not a power of two or does not cover the row, too few registers
    or no rows: ValueError naming ``cfg``."""
    from rmsnorm_lab.kernels.training import TrainLaunch, check_bwd_launch
    launch = TrainLaunch(**{**dict(block_n=256, rows=1, warps=4, programs=4), **cfg})
    with pytest.raises(ValueError, match="cfg"):
        check_bwd_launch(launch, 200)


def test_sum_launch_loads_every_partial_row_at_once():
    """dw's second step: all partial rows of a column block in one load (up to 512), SUM_TILE elements a
    program, 16-64 columns, never wider than the row's block."""
    from rmsnorm_lab.kernels.training import SUM_TILE, sum_launch
    assert sum_launch(2048, 264) == (16, 512)        # two programs per SM on 132 SMs
    assert sum_launch(16384, 132) == (32, 256)
    assert sum_launch(4096, 1) == (64, 1)
    assert sum_launch(8, 3) == (8, 4)                # narrow rows: one block
    assert sum_launch(4096, 5000) == (16, 512)       # more partials than one load: the kernel loops
    for parts in (1, 7, 100, 264, 513, 4096):
        cols, rows = sum_launch(4096, parts)
        assert rows >= min(parts, 512) and cols * rows <= max(SUM_TILE, 16 * 512)


@needs_kernels
@pytest.mark.parametrize("sum_cols,sum_rows", [(0, 0), (16, 8), (8, 1), (32, 64)])
def test_backward_sum_launches_agree(sum_cols, sum_rows, monkeypatch):
    """dw's second step in the tiles asked for (0: ``sum_launch``'s, 64 x 32 here), looping over the
    partial rows when they exceed a load: dw against float64, the same ds, bitwise stable per launch."""
    from rmsnorm_lab.kernels import _rmsnorm_bwd as K
    from rmsnorm_lab.kernels.training import TrainLaunch, _backward, sum_launch
    real, seen = K.sum_partials_kernel, []

    class Recorder:                       # the launch's tile, then the real kernel
        def __getitem__(self, grid):
            def launch(*args, **kw):
                seen.append((kw["BLOCK_C"], kw["BLOCK_P"]))
                return real[grid](*args, **kw)
            return launch
    monkeypatch.setattr(K, "sum_partials_kernel", Recorder())
    x, w, r, dy, d_res, s, rstd = _saved(37, 200, "float32", False)
    cfg = TrainLaunch(256, 1, 4, 19, sum_cols=sum_cols, sum_rows=sum_rows)
    ds, dw = _backward(dy, s, w, rstd, d_res, cfg)
    assert seen == [(sum_cols, sum_rows) if sum_cols else sum_launch(200, 19)]
    ref = B.reference_grads(x, w, r, 1e-6, dy, d_res)
    assert B.rel_err(ds, ref[0]) <= TIGHT["float32"] and B.rel_err(dw, ref[1]) <= TIGHT["float32"]
    assert torch.equal(_backward(dy, s, w, rstd, d_res, cfg)[1], dw)


@needs_kernels
def test_backward_call_refuses_a_bad_launch():
    from rmsnorm_lab.kernels.training import TrainLaunch, _backward
    x, w, r, dy, d_res, s, rstd = _saved(3, 80, "float32", False)
    with pytest.raises(ValueError, match="cfg"):
        _backward(dy, s, w, rstd, d_res, TrainLaunch(64, 1, 4, 2, 1, 0, reload=1))      # 64 < 80 columns


def test_backward_launch_policy():
    """The searched rules of ``bwd_launch`` (H200, bf16; rmsnorm_lab/kernels/training.py says why each)."""
    from rmsnorm_lab.kernels.training import bwd_launch
    sm = 132
    # (block_n, tail, rows, warps, reload, maxnreg)
    for hidden, res, want in [(2048, False, (2048, 0, 2, 4, 2, 128)), (3584, False, (4096, 0, 2, 8, 1, 128)),
                              (4096, False, (4096, 0, 1, 4, 2, 128)), (4096, True, (4096, 0, 4, 8, 0, 0)),
                              (5120, False, (8192, 0, 1, 4, 2, 128)), (5120, True, (4096, 1024, 1, 4, 1, 168)),
                              (6144, False, (4096, 2048, 1, 4, 1, 168)), (6144, True, (4096, 2048, 1, 8, 1, 128)),
                              (7168, False, (8192, 0, 1, 8, 1, 128)), (7168, True, (8192, 0, 1, 8, 1, 128)), (5376, True, (4096, 2048, 1, 8, 0, 0)),
                              (5376, False, (4096, 2048, 1, 4, 1, 168)), (3584, True, (4096, 0, 2, 8, 1, 128)),
                              (2560, False, (4096, 0, 2, 4, 1, 168)), (1536, False, (2048, 0, 4, 4, 1, 168)),
                              (2560, True, (4096, 0, 2, 4, 0, 0)), (1536, True, (2048, 0, 4, 4, 0, 0)),
                              (8192, False, (8192, 0, 1, 8, 1, 128)), (8192, True, (8192, 0, 1, 8, 1, 128)),
                              (16384, False, (16384, 0, 1, 32, 1, 0)), (16384, True, (16384, 0, 1, 32, 2, 0)),
                              (32768, True, (32768, 0, 1, 32, 2, 0)),
                              (4608, False, (8192, 0, 1, 4, 2, 128)), (4608, True, (4096, 512, 1, 4, 1, 168)),
                              (5000, True, (4096, 1024, 1, 4, 1, 168))]:
        launch = bwd_launch(hidden, 65536, sm, res)
        got = (launch.block_n, launch.tail, launch.rows, launch.warps, launch.reload, launch.maxnreg)
        assert got == want, (hidden, res, launch)
        assert launch.block_n + launch.tail >= hidden and 1 <= launch.programs <= 4 * sm
        if launch.maxnreg:                                  # the programs of an SM fit its 65536 registers
            assert launch.maxnreg * launch.warps * 32 * launch.programs // sm <= 65536
    assert bwd_launch(4096, 3, sm).programs == 3 and bwd_launch(2048, 3, sm).programs == 2  # programs <= tiles
    assert bwd_launch(3584, 65536, sm).stages == bwd_launch(5376, 65536, sm).stages == 2
    assert bwd_launch(2560, 65536, sm).programs == 3 * sm and bwd_launch(2560, 65536, sm).stages == 2
    assert bwd_launch(4608, 65536, sm).programs == 4 * sm and bwd_launch(4608, 65536, sm, True).programs == 3 * sm
    assert bwd_launch(2048, 65536, sm).programs == bwd_launch(5120, 65536, sm).programs == 4 * sm
    assert bwd_launch(6144, 65536, sm).programs == bwd_launch(5120, 65536, sm, True).programs == 3 * sm


@needs_kernels
def test_dw_is_deterministic():
    """Two backward runs give bitwise equal dw (per-program partials, ordered sum, no atomics)."""
    from rmsnorm_lab.kernels.training import rmsnorm_bwd, rmsnorm_fwd
    x, w, _, dy, _ = B.make_grad_inputs(64 if INTERP else 65536, 96 if INTERP else 4096, "float32", False, DEV)
    _, rstd = rmsnorm_fwd(x, w, 1e-6)
    a = rmsnorm_bwd(dy, x, w, rstd, None)
    b = rmsnorm_bwd(dy, x, w, rstd, None)
    assert torch.equal(a[1], b[1]) and torch.equal(a[0], b[0])


@needs_kernels
def test_ops_refuse_bad_input_naming_the_argument():
    from rmsnorm_lab.kernels.training import rmsnorm
    x = torch.randn(2, 8, device=DEV)
    with pytest.raises(ValueError, match="weight"):
        rmsnorm(x, torch.ones(4, device=DEV))
    with pytest.raises(TypeError, match="residual"):
        rmsnorm(x, torch.ones(8, device=DEV), x.half())
    with pytest.raises(TypeError, match="x"):
        rmsnorm(x.double(), torch.ones(8, device=DEV))
    with pytest.raises(ValueError, match="eps"):
        rmsnorm(x, torch.ones(8, device=DEV), eps=-1.0)


def test_module_surface_and_backend_choice(monkeypatch):
    m = RMSNorm(16, eps=1e-5, dtype=torch.float32)
    assert m.weight.shape == (16,) and bool((m.weight == 1).all())
    with pytest.raises(ValueError, match="backend"):
        RMSNorm(16, backend="cuda")
    with pytest.raises(ValueError, match="hidden_size"):
        RMSNorm(0)
    x, r = torch.randn(3, 16), torch.randn(3, 16)
    t = RMSNorm(16, backend="torch")
    out = t(x)
    out2, new_r = t(x, r)
    assert out.shape == x.shape and t.backend_in_use == "torch"
    torch.testing.assert_close(new_r, x + r)
    # auto on CPU without the interpreter: the torch path, said once
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    a = RMSNorm(16)
    with pytest.warns(UserWarning, match="torch path"):
        a(x)
    assert a.backend_in_use == "torch"
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        a(x)                                   # no second warning


class Block(nn.Module):
    """A small HF-style decoder block: norm -> attention stub -> residual add + norm -> MLP -> residual."""

    def __init__(self, hidden, norm):
        super().__init__()
        self.input_norm, self.post_norm = norm(hidden), norm(hidden)
        self.attn = nn.Linear(hidden, hidden, bias=False)
        self.up = nn.Linear(hidden, 2 * hidden, bias=False)
        self.down = nn.Linear(2 * hidden, hidden, bias=False)

    def forward(self, x):
        h = self.attn(self.input_norm(x))
        h, res = self.post_norm(h, x)          # vLLM style: (norm(h + x), h + x)
        return self.down(nn.functional.silu(self.up(h))) + res


def _blocks(hidden=40, backend="auto"):
    torch.manual_seed(0)
    ours = Block(hidden, lambda h: RMSNorm(h, backend=backend)).to(DEV)
    ref = Block(hidden, lambda h: RMSNorm(h, backend="torch")).to(DEV)
    ref.load_state_dict(ours.state_dict())
    with torch.no_grad():                      # random norm weights: ones would hide weight bugs
        for m in (ours, ref):
            g = torch.Generator().manual_seed(1)
            m.input_norm.weight.copy_(torch.rand(hidden, generator=g) + 0.5)
            m.post_norm.weight.copy_(torch.rand(hidden, generator=g) + 0.5)
    return ours, ref


@needs_kernels
def test_module_in_decoder_block_matches_torch_layer():
    """Loss and every parameter's gradient of a block with our module equal those with the torch layer."""
    ours, ref = _blocks()
    x = torch.randn(2, 5, 40, device=DEV)
    losses = []
    for m in (ours, ref):
        loss = m(x).pow(2).mean()
        loss.backward()
        losses.append(loss)
    assert ours.input_norm.backend_in_use in ("triton", "triton-interpreter")
    torch.testing.assert_close(losses[0], losses[1], rtol=1e-5, atol=1e-6)
    for (n, p), (_, q) in zip(ours.named_parameters(), ref.named_parameters()):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-4, atol=1e-5, msg=n)


@needs_kernels
def test_compile_fullgraph_no_graph_break():
    """torch.compile(fullgraph=True) traces the block with our module as single custom-op nodes."""
    torch._dynamo.reset()
    ours, ref = _blocks()
    x = torch.randn(2, 5, 40, device=DEV)
    compiled = torch.compile(ours, fullgraph=True, backend="aot_eager" if DEV == "cpu" else "inductor")
    loss = compiled(x).pow(2).mean()
    loss.backward()                           # fullgraph=True raises on any graph break
    ref_loss = ref(x).pow(2).mean()
    torch.testing.assert_close(loss, ref_loss, rtol=1e-5, atol=1e-6)
    explained = torch._dynamo.explain(ours)(x)
    assert explained.graph_break_count == 0 and explained.graph_count == 1


def test_backward_subjects_say_why_not():
    rows = B.support_matrix("cpu")
    by = {(r["impl"], r["dtype"]): r for r in rows}
    assert by[("flashinfer", "bfloat16")]["reason"].startswith("forward only")
    assert by[("vllm", "bfloat16")]["reason"].startswith("forward only")
    assert all(r["ok"] or r["reason"] for r in rows)
    assert by[("huggingface", "float32")]["ok"]
    with pytest.raises(ValueError, match="unknown"):
        B.subjects("nope")


def test_bytes_model():
    t, h = 1024, 4096
    assert B.bwd_bytes(t, h, 2, False) == 3 * t * h * 2 + 2 * h * 2 + 4 * t
    assert B.bwd_bytes(t, h, 2, True) - B.bwd_bytes(t, h, 2, False) == t * h * 2
    assert B.pass_bytes("fwd+bwd", t, h, 2, False) == B.bwd_bytes(t, h, 2, False) + 2 * t * h * 2 + h * 2 + 4 * t
    with pytest.raises(ValueError, match="pass"):
        B.pass_bytes("fwd", t, h, 2, False)


def test_rel_err_in_chunks():
    """The gradient error is summed in chunks (a 2^30-element dx in float64 at once took 8 GiB more than
    a 16384 x 65536 fwd+bwd point had): the same figure as one float64 norm, and NaN when any chunk has a
    non-finite value."""
    g = torch.randn(7, 13, dtype=torch.bfloat16)
    ref = torch.randn(7, 13, dtype=torch.float64)
    want = float(torch.linalg.vector_norm(g.double() - ref) / torch.linalg.vector_norm(ref))
    assert B.rel_err(g, ref, chunk=5) == pytest.approx(want, rel=1e-12)
    assert B.rel_err(g.t().contiguous().t(), ref, chunk=5) == pytest.approx(want, rel=1e-12)   # strided
    g[6, 12] = float("inf")
    assert math.isnan(B.rel_err(g, ref, chunk=5)) and math.isnan(B.rel_err(None, ref))
    with pytest.raises(ValueError, match="got"):
        B.rel_err(g[:3], ref)


def test_torch_path_matches_float64():
    x, w, r, dy, d_res = B.make_grad_inputs(7, 50, "float32", True, "cpu")
    ops = B.autograd_ops(torch_rmsnorm)
    row = B.check_grads(ops, x, w, r, 1e-6, dy, d_res, "float32")
    assert row["status"] == "ok", row


@needs_kernels
def test_backward_bench_smoke(tmp_path):
    """experiments/backward_bench.py in its tiny mode: every row checked ok, the CSV tidy."""
    import csv
    out = tmp_path / "bwd.csv"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    p = subprocess.run([sys.executable, str(ROOT / "experiments" / "backward_bench.py"), "--smoke",
                        "--budget-ms", "2", "--modes", "cold", "--out", str(out)],
                       env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    rows = list(csv.DictReader(out.open()))
    assert rows and rows[0].keys() >= {"impl", "pass", "mode", "us_median", "err_dx", "err_dw", "status"}
    ran = [r for r in rows if r["status"] != "skip"]
    assert {r["impl"] for r in ran} == {"huggingface", "torch", "triton"}
    assert all(r["status"] == "ok" for r in ran), [r for r in ran if r["status"] != "ok"]
    assert "ours / best peer" in p.stdout


# ---------------------------------------------------------------- GPU only

@needs_gpu
def test_cuda_graph_capture_of_module_fwd_bwd():
    """A training step's forward + backward through our module captured in a CUDA graph and replayed."""
    norm = RMSNorm(4096, dtype=torch.bfloat16, device="cuda")
    x = torch.randn(512, 4096, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    r = torch.randn_like(x)
    dy = torch.randn_like(x)

    def step():
        out, new_r = norm(x, r)
        gx, gw = torch.autograd.grad((out, new_r), (x, norm.weight), (dy, dy))
        return out, gx, gw
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        for _ in range(2):
            want = step()
    torch.cuda.current_stream().wait_stream(s)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        got = step()
    g.replay()
    torch.cuda.synchronize()
    for a, b in zip(got, want):
        assert torch.equal(a, b)


@needs_gpu
def test_inductor_fullgraph_on_cuda():
    test_compile_fullgraph_no_graph_break()


@needs_gpu
@pytest.mark.parametrize("residual", [False, True])
def test_dw_over_65536_tokens(residual):
    row = _grads_vs_ref(65536, 4096, "bfloat16", residual)
    assert row["status"] == "ok", row
    assert row["err_dw"] <= 3e-3, row
