"""The lab's Triton kernel compiled for a real GPU: every body and flag vs float64.

Runs only on a CUDA machine with compiled kernels: ``TRITON_INTERPRET=0 pytest -m gpu tests/``
(the CPU suite runs the same paths under the interpreter, whose bf16 rounding differs). Tolerances
are the kernel's own targets (3e-3 in bf16; the same share of a unit roundoff in fp16), not the looser
package-wide ones. Outputs are poisoned with NaN first, so a skipped element fails.
"""
from __future__ import annotations

import os

import pytest
import torch

from rmsnorm_lab.reference import reference, rel_error

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
    pytest.mark.skipif(os.environ.get("TRITON_INTERPRET") == "1",
                       reason="TRITON_INTERPRET=1: run with TRITON_INTERPRET=0 to test compiled kernels"),
]

TOL = {"bfloat16": 3e-3, "float16": 3.75e-4, "float32": 1e-5}
HIDDEN = [100, 4100, 6144]          # not a multiple of the vector width; padded to a power of two


def _configs(hidden):
    """One config per body and flag (rows, warps, programs per SM, flags, chunk[, register cap])."""
    c = max(16, (1 << (hidden - 1).bit_length()) // 4)
    return [(1, 4, 0, 0, 0), (2, 2, 0, 4, 0), (1, 8, 0, 8, 0), (1, 8, 0, 64, 0), (1, 4, 0, 65, 0),
            (1, 8, 0, 16, 0), (1, 8, 0, 48, 0), (1, 8, 0, 20, 0), (1, 8, 0, 0, c), (1, 8, 0, 32, c),
            (2, 4, 0, 33, c), (1, 8, 2, 2, 0), (1, 4, 2, 40, c), (1, 4, 0, 1, c, 32), (1, 8, 0, 48, 0, 32),
            (1, 4, 0, 0, 0, 40)]


CASES = [(dt, h, cfg) for dt in ("bfloat16", "float16") for h in HIDDEN for cfg in _configs(h)]
CASES += [("float32", h, cfg) for h in HIDDEN for cfg in _configs(h)[::4]]
CASES = [c + (True,) for c in CASES] + [c + (False,) for c in CASES if c[0] == "bfloat16"]


def test_register_cap_reaches_the_compiled_kernel():
    """A config's 6th field (v9) caps the registers the compiled kernel uses."""
    from rmsnorm_lab.kernels.config import LaunchConfig
    from rmsnorm_lab.kernels.launch import launch

    x = torch.randn(4, 4096, device="cuda", dtype=torch.bfloat16)
    w = torch.randn(4096, device="cuda", dtype=torch.bfloat16)
    cfg = LaunchConfig(evict_loads=True, chunk=2048)
    free = launch(x, w, torch.empty_like(x), None, None, 1e-6, cfg)[0]
    capped = launch(x, w, torch.empty_like(x), None, None, 1e-6, cfg.replace(maxnreg=24))[0]
    assert capped is not free and capped.n_regs <= 24, (free.n_regs, capped.n_regs)


@pytest.mark.parametrize("dtype,hidden,cfg,lean", CASES)
def test_compiled_kernel_every_body_and_flag(dtype, hidden, cfg, lean):
    """lean True: the v8 launch (no grid-stride loop where each block has a program, int32 offsets,
    rsqrt); False: the v7 code."""
    from rmsnorm_lab.kernels import rmsnorm as tk
    from rmsnorm_lab.kernels.config import LaunchConfig

    cfg = LaunchConfig.from_legacy(cfg).replace(lean=lean)

    dt = getattr(torch, dtype)
    g = torch.Generator(device="cuda").manual_seed(hidden)
    w = (1 + 0.5 * torch.randn(hidden, generator=g, device="cuda")).to(dt)
    for tokens in (1, 7, 300):
        x = torch.randn(tokens, hidden, generator=g, device="cuda").to(dt)
        r = torch.randn(tokens, hidden, generator=g, device="cuda").to(dt)
        ref = reference(x, w, None, 1e-6)
        out = torch.full_like(x, float("nan"))
        tk.triton_rmsnorm(x, w, out=out, config=cfg)
        assert rel_error(out, ref) <= TOL[dtype], (cfg, tokens, "no residual")

        ref_o, ref_r = reference(x, w, r, 1e-6)
        out, ro = torch.full_like(x, float("nan")), torch.full_like(r, float("nan"))     # fresh buffers
        tk.triton_rmsnorm(x, w, r, out=out, residual_out=ro, config=cfg)
        errs = rel_error(out, ref_o), rel_error(ro, ref_r)
        assert max(errs) <= TOL[dtype], (cfg, tokens, "fresh", errs)

        xi, ri = x.clone(), r.clone()                          # in place, as vLLM / FlashInfer call it
        tk.triton_rmsnorm(xi, w, ri, out=xi, residual_out=ri, config=cfg)
        errs = rel_error(xi, ref_o), rel_error(ri, ref_r)
        assert max(errs) <= TOL[dtype], (cfg, tokens, "in place", errs)

        xx = x.clone()                                         # x is its own residual, overwritten
        ref_o, ref_r = reference(x, w, x, 1e-6)
        out = torch.full_like(x, float("nan"))
        tk.triton_rmsnorm(xx, w, xx, out=out, residual_out=xx, config=cfg)
        errs = rel_error(out, ref_o), rel_error(xx, ref_r)
        assert max(errs) <= TOL[dtype], (cfg, tokens, "x as residual", errs)


# ---------------------------------------------------------------- the registry's fast path


def _fresh(shape, xd, wd, rd, seed):
    g = torch.Generator(device="cuda").manual_seed(seed)
    x = torch.randn(shape, generator=g, device="cuda").to(xd)
    w = (1 + 0.5 * torch.randn(shape[-1], generator=g, device="cuda")).to(wd)
    r = None if rd is None else torch.randn(shape, generator=g, device="cuda").to(rd)
    return x, w, r


def _errs(got, x, w, r):
    ref = reference(x, w, r, 1e-6)
    if r is None:
        return [rel_error(got, ref)]
    return [rel_error(got[0], ref[0]), rel_error(got[1], ref[1])]


MIXED = [(torch.bfloat16, torch.float32, None), (torch.bfloat16, torch.float16, None),
         (torch.float16, torch.float32, None), (torch.bfloat16, torch.float32, torch.float32),
         (torch.bfloat16, torch.bfloat16, torch.float32), (torch.float16, torch.float32, torch.float16)]


@pytest.mark.parametrize("xd,wd,rd", MIXED)
def test_fast_path_mixed_dtypes(xd, wd, rd):
    """The registry's call (cached plans, raw addresses) with a weight / residual dtype other than x's:
    right answers on the first (planning) call and the later (cached) ones; in place with a residual."""
    fn = __import__("rmsnorm_lab.impls", fromlist=["get_impl"]).get_impl("triton").load()
    for tokens in (1, 300):
        x, w, r = _fresh((tokens, 4096), xd, wd, rd, tokens)
        for _ in range(3):
            xi, ri = x.clone(), None if r is None else r.clone()
            got = fn(xi, w, ri)
            tol = max(TOL[str(xd)[6:]], 0 if rd is None else TOL[str(rd)[6:]])
            assert max(_errs(got, x, w, r)) <= tol, (xd, wd, rd, tokens)
            if r is not None:
                assert got[0].data_ptr() == xi.data_ptr() and got[1].data_ptr() == ri.data_ptr()
                assert got[1].dtype == rd and got[0].dtype == xd


def test_plan_key_holds_weight_and_residual_dtypes():
    """A bf16 plan must not serve a float32 weight (or residual) of the same shape."""
    from rmsnorm_lab.impls import get_impl
    from rmsnorm_lab.kernels.launch import LAUNCHER
    fn = get_impl("triton").load()
    x, w16, r16 = _fresh((64, 2048), torch.bfloat16, torch.bfloat16, torch.bfloat16, 7)
    w32, r32 = w16.float(), r16.float()
    for w, r in [(w16, None), (w32, None), (w16, r16), (w32, r16), (w16, r32), (w32, r32), (w32, None)]:
        for _ in range(2):
            xi, ri = x.clone(), None if r is None else r.clone()
            got = fn(xi, w, ri)
            assert max(_errs(got, x, w, r)) <= TOL["bfloat16"], (w.dtype, None if r is None else r.dtype)
    keys = [k for k in LAUNCHER.plans if k[:4] == (64, 2048, torch.bfloat16, x.get_device())]
    assert {(k[4], k[7] if len(k) > 7 else None) for k in keys} >= {
        (torch.bfloat16, None), (torch.float32, None), (torch.bfloat16, torch.bfloat16), (torch.float32, torch.float32)}


@pytest.mark.parametrize("what", ["x", "weight", "residual"])
def test_fast_path_misaligned_views(what):
    """A view 2 bytes off 16-byte alignment (buf[1:]) gets no cached plan of aligned data: right answers."""
    from rmsnorm_lab.impls import get_impl
    fn = get_impl("triton").load()
    x, w, r = _fresh((33, 4096), torch.bfloat16, torch.bfloat16, torch.bfloat16, 8)
    fn(x.clone(), w, r.clone())                                   # an aligned plan for this key exists first

    def off(t):
        buf = torch.empty(t.numel() + 1, dtype=t.dtype, device="cuda")
        v = buf[1:].view(t.shape)
        v.copy_(t)
        return v
    xm, wm, rm = (off(x) if what == "x" else x.clone()), (off(w) if what == "weight" else w), \
        (off(r) if what == "residual" else r.clone())
    got = fn(xm, wm, rm)
    assert max(_errs(got, x, w, r)) <= TOL["bfloat16"]
    assert max(_errs(fn(off(x) if what == "x" else x.clone(), wm), x, w, None)) <= TOL["bfloat16"]


def test_fast_path_refuses_or_routes_what_it_cannot_take():
    from rmsnorm_lab.impls import get_impl
    fn = get_impl("triton").load()
    x, w, r = _fresh((8, 1024), torch.bfloat16, torch.bfloat16, torch.bfloat16, 9)
    fn(x.clone(), w, r.clone())
    with pytest.raises(ValueError, match="weight: expected device"):
        fn(x.clone(), w.cpu(), r.clone())
    with pytest.raises(ValueError, match="weight: expected shape"):
        fn(x.clone(), torch.ones(1025, device="cuda", dtype=torch.bfloat16), r.clone())
    with pytest.raises(ValueError, match="residual: expected device"):
        fn(x.clone(), w, r.cpu())
    ws = torch.ones(1, device="cuda", dtype=torch.bfloat16).expand(1024)     # stride 0: copied, right answer
    assert max(_errs(fn(x.clone(), ws, r.clone()), x, ws, r)) <= TOL["bfloat16"]
    xt = x.t().contiguous().t()                                              # strided rows: checked path
    assert max(_errs(fn(xt.clone(), w, None), x, w, None)) <= TOL["bfloat16"]


def test_use_table_reaches_the_fast_path():
    """After use_table the registry's call launches with the new table's pick (its cached plans are dropped)."""
    from rmsnorm_lab.impls import get_impl
    from rmsnorm_lab.kernels import tables as kt
    from rmsnorm_lab.kernels.launch import LAUNCHER
    fn = get_impl("triton").load()
    x, w, _ = _fresh((16, 1024), torch.bfloat16, torch.bfloat16, None, 10)
    fn(x, w)
    try:
        kt.use_table({kt.table_key(1024, 16, False): {"rows": 2, "warps": 2}})
        assert not LAUNCHER.plans
        assert max(_errs(fn(x, w), x, w, None)) <= TOL["bfloat16"]
        (plan,) = LAUNCHER.plans.values()
        assert plan[2][2] == 2                                  # ROWS, the third compile-time argument
    finally:
        kt.use_table(None)
