"""Property tests: every CPU-capable implementation (our Triton kernel through the
interpreter included) against the float64 reference on random shapes, dtypes,
strides, eps and residuals; NaN / Inf propagate as in the reference.

Shapes are tiny and examples few: the Triton interpreter is slow.
"""
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rmsnorm_lab.impls import registry
from rmsnorm_lab.reference import TOLERANCE, reference, rel_error

pytestmark = pytest.mark.filterwarnings("ignore:.*is not contiguous")

CPU_IMPLS = [n for n, impl in registry().items() if impl.available("cpu")]
COMPILED = ("torch_compile", "torch_compile_dynamic")    # recompile per shape / per width, dtype, layout
FAST = [n for n in CPU_IMPLS if n not in COMPILED]        # the compiled entries get fewer examples
DTYPES = ["float32", "float16", "bfloat16"]
LAYOUTS = ["contiguous", "strided_rows", "transposed", "last_dim_step", "broadcast_rows"]
SETTINGS = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def test_cpu_impls_cover_the_lab_kernel():
    assert {"huggingface", "torch", "triton"} <= set(CPU_IMPLS), CPU_IMPLS


@st.composite
def problems(draw, allow_nonfinite=False):
    hidden = draw(st.one_of(st.integers(1, 40), st.sampled_from([63, 64, 127, 130])))
    lead = tuple(draw(st.lists(st.integers(1, 4), min_size=0, max_size=2)))
    shape = lead + (hidden,)
    dtype = draw(st.sampled_from(DTYPES))
    layout = draw(st.sampled_from(LAYOUTS))
    residual = draw(st.booleans())
    eps = draw(st.sampled_from([1e-6, 1e-5, 1e-2]))
    scale = draw(st.sampled_from([1e-2, 1.0, 30.0]))
    seed = draw(st.integers(0, 2**16))
    g = torch.Generator().manual_seed(seed)
    dt = getattr(torch, dtype)

    def make():
        n = shape[-1]
        if layout == "strided_rows":
            t = torch.randn(shape[:-1] + (n + 5,), generator=g)[..., 2:n + 2]
        elif layout == "transposed" and len(shape) >= 2:
            t = torch.randn(shape[::-1], generator=g).permute(*reversed(range(len(shape))))
        elif layout == "last_dim_step":
            t = torch.randn(shape[:-1] + (2 * n,), generator=g)[..., ::2]
        elif layout == "broadcast_rows" and len(shape) >= 2:
            t = torch.randn((1,) + shape[1:], generator=g).expand(shape)
        else:
            t = torch.randn(shape, generator=g)
        t = (t * scale).to(dt)
        assert t.shape == shape
        return t

    x = make()
    if allow_nonfinite:
        base = x.contiguous()
        k = draw(st.integers(1, 3))
        for _ in range(k):
            i = draw(st.integers(0, base.numel() - 1))
            base.view(-1)[i] = draw(st.sampled_from([float("nan"), float("inf"), float("-inf")]))
        x = base
    w = ((1.0 + 0.5 * torch.randn(shape[-1], generator=g)) * draw(st.sampled_from([1.0, -2.0]))).to(dt)
    r = make() if residual else None
    return x, w, r, eps


def _check(name, x, w, r, eps):
    impl = registry()[name]
    fn = impl.load()
    dtype = str(x.dtype).removeprefix("torch.")
    tol = TOLERANCE[dtype]
    ref = reference(x, w, r, eps)
    x0, r0 = x.clone(), None if r is None else r.clone()
    # the registry call may work in place (vLLM-style): hand it copies with the same strides
    xc, rc = x.clone(), None if r is None else r.clone()
    got = fn(xc, w, rc, eps)
    outs = got if isinstance(got, tuple) else (got,)
    refs = ref if r is not None else (ref,)
    assert len(outs) >= len(refs)
    for o, rf, what in zip(outs, refs, ("out", "new residual")):
        assert o.dtype == x.dtype, (name, what, o.dtype)
        assert o.numel() == x.numel()
        err = rel_error(o.reshape(x.shape), rf)
        assert err <= tol, (name, what, tuple(x.shape), x.stride(), dtype, eps, err)
    assert torch.equal(x, x0) and (r is None or torch.equal(r, r0))


@pytest.mark.parametrize("name", FAST)
@settings(max_examples=60, **SETTINGS)
@given(p=problems())
def test_matches_float64_reference(name, p):
    _check(name, *p)


@pytest.mark.parametrize("name", [n for n in COMPILED if n in CPU_IMPLS] or
                         [pytest.param("torch_compile", marks=pytest.mark.skip("torch.compile cannot run on CPU here"))])
@settings(max_examples=4, **SETTINGS)
@given(p=problems())
def test_compiled_match_reference(name, p):
    _check(name, *p)


@pytest.mark.parametrize("name", FAST)
@settings(max_examples=30, **SETTINGS)
@given(p=problems(allow_nonfinite=True))
def test_nan_inf_propagate_like_reference(name, p):
    """A NaN makes its row NaN; an Inf makes its row's rstd 0 (Inf elements NaN, the rest 0)."""
    _nan_inf(name, p)


@pytest.mark.parametrize("name", [n for n in COMPILED if n in CPU_IMPLS] or
                         [pytest.param("torch_compile", marks=pytest.mark.skip("torch.compile cannot run on CPU here"))])
@settings(max_examples=4, **SETTINGS)
@given(p=problems(allow_nonfinite=True))
def test_compiled_nan_inf_propagate_like_reference(name, p):
    _nan_inf(name, p)


def _nan_inf(name, p):
    x, w, r, eps = p
    fn = registry()[name].load()
    ref = reference(x, w, r, eps)
    got = fn(x.clone(), w, None if r is None else r.clone(), eps)
    out = got[0] if isinstance(got, tuple) else got
    rf = ref[0] if isinstance(ref, tuple) else ref
    o64, r64 = out.reshape(x.shape).double(), rf
    assert torch.equal(torch.isnan(o64), torch.isnan(r64)), (name, x, out)
    fin = torch.isfinite(r64)
    assert torch.equal(torch.isfinite(o64), fin)
    assert torch.equal(o64[~fin & ~torch.isnan(r64)], r64[~fin & ~torch.isnan(r64)])


@pytest.mark.parametrize("api", ["rmsnorm_naive", "triton_rmsnorm"])
@settings(max_examples=30, **SETTINGS)
@given(p=problems())
def test_public_api_matches_reference_and_never_mutates(api, p):
    import rmsnorm_lab as L
    x, w, r, eps = p
    x0, r0 = x.clone(), None if r is None else r.clone()
    got = getattr(L, api)(x, w, r, eps)
    ref = reference(x, w, r, eps)
    tol = TOLERANCE[str(x.dtype).removeprefix("torch.")]
    outs = got if isinstance(got, tuple) else (got,)
    refs = ref if isinstance(ref, tuple) else (ref,)
    for o, rf in zip(outs, refs):
        assert o.shape == x.shape and rel_error(o, rf) <= tol
    assert torch.equal(x, x0) and (r is None or torch.equal(r, r0))


@st.composite
def configs(draw):
    """Launch configs of the lab kernel (LaunchConfig): rows, warps, programs per SM, every valid flag set,
    chunk (0 = one pass), the v8 (lean) or v7 code path."""
    from rmsnorm_lab.kernels.config import LaunchConfig

    def valid(legacy):
        try:
            LaunchConfig.from_legacy(legacy)
            return True
        except ValueError:
            return False
    chunk = draw(st.sampled_from([0, 16, 32, 64]))
    flags = draw(st.sampled_from([f for f in range(128) if valid((1, 1, 0, f, chunk))]))
    legacy = (draw(st.sampled_from([1, 2, 4])), draw(st.sampled_from([1, 2, 4])), draw(st.sampled_from([0, 1, 2])),
              flags, chunk)
    return LaunchConfig.from_legacy(legacy).replace(lean=draw(st.booleans()))


@settings(max_examples=40, **SETTINGS)
@given(p=problems(), cfg=configs(), inplace=st.booleans())
def test_every_kernel_config_matches_reference(p, cfg, inplace):
    """Each body (one pass / two pass), flag set and grid-stride split, in place or not, with the v8
    launch (no loop where each block has a program, int32 offsets, rsqrt) or the v7 one, vs float64."""
    from rmsnorm_lab.kernels.launch import config_fn
    x, w, r, eps = p
    x, r = x.contiguous(), None if r is None else r.contiguous()
    if x.dtype == torch.float64:
        return
    dtype = str(x.dtype).removeprefix("torch.")
    ref = reference(x, w, r, eps)
    xc, rc = x.clone(), None if r is None else r.clone()
    got = config_fn(cfg, inplace=inplace)(xc, w, rc, eps)
    outs = got if isinstance(got, tuple) else (got,)
    refs = ref if r is not None else (ref,)
    for o, rf in zip(outs, refs):
        err = rel_error(o.reshape(x.shape), rf)
        assert err <= TOLERANCE[dtype], (cfg, inplace, tuple(x.shape), dtype, err)
