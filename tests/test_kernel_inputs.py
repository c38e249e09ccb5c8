"""Our kernel's inputs beyond one dtype and a plain layout, on CPU under the Triton interpreter: weight and
residual dtypes independent of x's (on the checked path and through the registry's call), misaligned
views, a stride-0 (broadcast) weight, a weight of the wrong length or on another device, the residual
being x. Never a wrong answer, never a crash: right, or a clear error naming the argument."""
from __future__ import annotations

import warnings

import pytest
import torch

from rmsnorm_lab.impls import get_impl
from rmsnorm_lab.kernels.launch import LAUNCHER
from rmsnorm_lab.kernels.rmsnorm import check_kernel_inputs, triton_rmsnorm
from rmsnorm_lab.reference import TOLERANCE, reference, rel_error

pytestmark = pytest.mark.filterwarnings("ignore:.*is not contiguous")
F = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def _inputs(shape, xd, wd, rd=None, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=g).to(F[xd])
    w = (1 + 0.5 * torch.randn(shape[-1], generator=g)).to(F[wd])
    r = None if rd is None else torch.randn(shape, generator=g).to(F[rd])
    return x, w, r


def _check(got, x, w, r, what=""):
    ref = reference(x, w, r, 1e-6)
    if r is None:
        assert got.dtype == x.dtype and got.shape == x.shape, what
        assert rel_error(got, ref) <= TOLERANCE[str(x.dtype)[6:]], (what, rel_error(got, ref))
        return
    out, new_r = got
    assert out.dtype == x.dtype and new_r.dtype == r.dtype, (what, out.dtype, new_r.dtype)
    assert rel_error(out, ref[0]) <= TOLERANCE[str(x.dtype)[6:]], (what, "out")
    assert rel_error(new_r, ref[1]) <= TOLERANCE[str(r.dtype)[6:]], (what, "new residual")


MIXED = [("bfloat16", "float32", None), ("bfloat16", "float16", None), ("float16", "float32", None),
         ("float16", "bfloat16", None), ("float32", "bfloat16", None),
         ("bfloat16", "float32", "float32"), ("float16", "float16", "float32"), ("bfloat16", "bfloat16", "float32"),
         ("float32", "float32", "bfloat16"), ("bfloat16", "float32", "float16")]


@pytest.mark.parametrize("xd,wd,rd", MIXED)
def test_mixed_dtypes_checked_path(xd, wd, rd):
    """out in x's dtype, the new residual in the residual's: each rounded once from the fp32 math."""
    x, w, r = _inputs((3, 100), xd, wd, rd, seed=1)
    x0, r0 = x.clone(), None if r is None else r.clone()
    _check(triton_rmsnorm(x, w, r), x0, w, r0, (xd, wd, rd))
    assert torch.equal(x, x0) and (r is None or torch.equal(r, r0))
    for cfg in [(1, 2, 0, 0, 32), (2, 1, 2, 33, 16), (1, 4, 0, 64)]:        # two-pass, sum-first, late store
        _check(triton_rmsnorm(x, w, r, config=cfg), x0, w, r0, (xd, wd, rd, cfg))


@pytest.mark.parametrize("xd,wd,rd", MIXED)
def test_mixed_dtypes_registry_call(xd, wd, rd):
    """The registry's call (the cached fast path on a GPU; here it routes to the checked path): in place."""
    fn = get_impl("triton").load()
    x, w, r = _inputs((2, 3, 40), xd, wd, rd, seed=2)
    x0, r0 = x.clone(), None if r is None else r.clone()
    got = fn(x, w, r)
    _check(got, x0, w, r0, (xd, wd, rd))
    if r is not None:
        assert got[0].data_ptr() == x.data_ptr() and got[1].data_ptr() == r.data_ptr()


@pytest.mark.parametrize("what", ["x", "residual", "weight"])
def test_misaligned_views(what):
    """Data 2 bytes off 16-byte alignment (a view buf[1:]): right answers (the kernel is compiled for it)."""
    fn = get_impl("triton").load()
    x, w, r = _inputs((4, 64), "bfloat16", "bfloat16", "bfloat16", seed=3)

    def off(t):
        buf = torch.empty(t.numel() + 1, dtype=t.dtype)
        v = buf[1:].view(t.shape)
        v.copy_(t)
        assert v.data_ptr() % 16 != 0
        return v
    x, w, r = (off(x) if what == "x" else x), (off(w) if what == "weight" else w), (off(r) if what == "residual" else r)
    x0, r0 = x.clone(), r.clone()
    _check(triton_rmsnorm(x, w, r), x0, w, r0, what)
    _check(fn(x, w, r), x0, w, r0, what)
    _check(fn(x0.clone(), w, None), x0, w, None, what)


def test_stride0_weight_is_copied_not_misread():
    fn = get_impl("triton").load()
    x, _, r = _inputs((3, 50), "float16", "float16", "float16", seed=4)
    w = torch.tensor([1.5], dtype=torch.float16).expand(50)
    assert w.stride() == (0,)
    x0, r0 = x.clone(), r.clone()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _check(triton_rmsnorm(x, w, r), x0, w, r0)
        _check(fn(x, w, r), x0, w, r0)


@pytest.mark.parametrize("bad,exc,part", [
    (lambda x: dict(w=torch.ones(x.shape[-1] + 1)), ValueError, "weight: expected shape (64,)"),
    (lambda x: dict(w=torch.ones(2, 32)), ValueError, "weight: expected shape (64,)"),
    (lambda x: dict(w=torch.ones(64, device="meta")), ValueError, "weight: expected device cpu"),
    (lambda x: dict(w=torch.ones(64, dtype=torch.float64)), TypeError, "weight: expected dtype float32, float16"),
    (lambda x: dict(w=torch.ones(64, dtype=torch.int32)), TypeError, "got torch.int32"),
    (lambda x: dict(r=torch.ones(64, dtype=torch.float64)), ValueError, "residual: expected shape"),
    (lambda x: dict(r=torch.ones(2, 64, dtype=torch.float64)), TypeError, "residual: expected dtype"),
    (lambda x: dict(r=torch.ones(2, 64, device="meta")), ValueError, "residual: expected device cpu"),
    (lambda x: dict(eps=-1.0), ValueError, "eps"),
    (lambda x: dict(eps=float("nan")), ValueError, "eps"),
    (lambda x: dict(eps="1e-6"), TypeError, "eps"),
    (lambda x: dict(w=None), TypeError, "weight: expected a torch.Tensor"),
    (lambda x: dict(r=1.0), TypeError, "residual: expected a torch.Tensor or None"),
])
@pytest.mark.parametrize("path", ["checked", "registry"])
def test_what_the_kernel_cannot_take_is_a_clear_error(bad, exc, part, path):
    x = torch.randn(2, 64, dtype=torch.bfloat16)
    kw = {"w": torch.ones(64), "r": None, "eps": 1e-6, **bad(x)}
    fn = triton_rmsnorm if path == "checked" else get_impl("triton").load()
    with pytest.raises(exc) as ei:
        fn(x, kw["w"], kw["r"], kw["eps"])
    assert part in str(ei.value)


@pytest.mark.parametrize("path", ["checked", "registry"])
def test_x_not_a_tensor_or_0d(path):
    fn = triton_rmsnorm if path == "checked" else get_impl("triton").load()
    with pytest.raises(TypeError, match="x: expected a torch.Tensor"):
        fn([1.0, 2.0], torch.ones(2))
    with pytest.raises(ValueError, match="x: expected at least 1 dimension"):
        fn(torch.tensor(1.0), torch.ones(1))


def test_residual_is_x_mixed_weight():
    """residual aliasing x through the registry's call: x ends up holding x + x, out is a new tensor."""
    fn = get_impl("triton").load()
    x, w, _ = _inputs((3, 24), "bfloat16", "float32", seed=5)
    x0 = x.clone()
    out, new_r = fn(x, w, x)
    assert new_r.data_ptr() == x.data_ptr() and out.data_ptr() != x.data_ptr()
    _check((out, new_r), x0, w, x0)


def test_cpu_calls_keep_no_plan():
    """Only contiguous, aligned CUDA inputs get a cached plan; everything else is checked on every call."""
    fn = get_impl("triton").load()
    before = len(LAUNCHER.plans)
    x, w, r = _inputs((2, 32), "float32", "float32", "float32")
    fn(x, w, r)
    fn(x, w, None)
    assert len(LAUNCHER.plans) == before
    assert check_kernel_inputs(x, w.to(torch.bfloat16), r.to(torch.float16), 1e-5) == 1e-5
