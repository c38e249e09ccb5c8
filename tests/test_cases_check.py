"""The one case type, the one checker and what implementations say about themselves, on CPU:
Case round-trips and the inputs it builds (layouts, aliasing, mixed dtypes, misalignment,
broadcast weight, zero row), the status vocabulary and the checker's rules (eps = 0 with a zero
row, mixed dtypes, changed inputs, same memory, non-finite values), supports(case) reasons,
roles, colours, provenance, prewarm jobs."""
import pytest
import torch

from rmsnorm_lab import envinfo
from rmsnorm_lab.cases import Case, make_cases, make_inputs, skip_reason
from rmsnorm_lab.check import STATUSES, check_impl, check_outputs
from rmsnorm_lab.impls import by_role, get_impl, register, registry
from rmsnorm_lab.impls.base import Impl, Support
from rmsnorm_lab.impls.torch_impls import hf_rmsnorm
from rmsnorm_lab.probe import default_cases


@pytest.fixture
def fake_impl():
    made = []

    def make(name, fn, **kw):
        made.append(name)
        return register(Impl(name, name, "test", lambda: fn, devices=("cpu",), requires=("torch",),
                             dtypes=("float32", "float16", "bfloat16"), **kw))
    yield make
    for n in made:
        registry().pop(n, None)


def test_statuses():
    assert STATUSES == ("ok", "wrong", "error", "crash", "skip")


def test_case_round_trip_and_sweep_fields():
    for c in default_cases() + make_cases([64], [1, 2], [3], ["float16"]):
        assert Case.from_dict(c.to_dict()) == c
        assert set(c.as_dict()) == {"batch", "seq", "hidden", "dtype", "residual", "tokens"}
    c = Case(2, 3, 64, "float16", True)
    assert c.key() == ("float16", 64, 2, 3, True) and c.shape == (2, 3, 64) and c.tokens == 6
    assert Case(2, 3, 64, ndim=2).shape == (6, 64)
    assert Case(1, 2, 8, misaligned="x").key() != Case(1, 2, 8).key()


def test_make_inputs_lay_out_what_the_case_says():
    x0, w0, r0 = make_inputs(Case(1, 4, 40, "float32", True), "cpu", 3)
    x, w, r = make_inputs(Case(1, 4, 40, "bfloat16", True, misaligned="x"), "cpu", 3)
    assert x.data_ptr() % 16 == 2 and torch.equal(x.float(), x0.to(torch.bfloat16).float())
    _, _, r = make_inputs(Case(1, 4, 40, "bfloat16", True, misaligned="residual"), "cpu", 3)
    assert r.data_ptr() % 16 == 2
    _, w, _ = make_inputs(Case(1, 4, 40, "bfloat16", misaligned="weight"), "cpu", 3)
    assert w.data_ptr() % 16 == 2
    x, w, r = make_inputs(Case(1, 4, 40, "bfloat16", True, weight_dtype="float32", residual_dtype="float32"))
    assert (x.dtype, w.dtype, r.dtype) == (torch.bfloat16, torch.float32, torch.float32)
    x, _, r = make_inputs(Case(1, 4, 40, residual=True, residual_is_x=True))
    assert r is x
    x, _, _ = make_inputs(Case(1, 4, 40, layout="strided_rows", ndim=2))
    assert x.stride(0) > 40 and x.stride(-1) == 1
    x, _, _ = make_inputs(Case(1, 4, 40, layout="transposed", ndim=2))
    assert x.stride(-1) != 1
    _, w, _ = make_inputs(Case(1, 4, 40, weight_broadcast=True))
    assert w.stride() == (0,) and w.shape == (40,)
    x, _, r = make_inputs(Case(1, 4, 40, residual=True, zero_row=True))
    assert not x.reshape(-1, 40)[0].any() and not r.reshape(-1, 40)[0].any() and x.reshape(-1, 40)[1].any()
    assert "needs CUDA" in skip_reason(Case(1, 4, 40, large=True), "cpu")
    assert "another device than the weight" in skip_reason(Case(1, 4, 40, weight_device="cpu"), "cpu")


def _cpu_draw(case, seed):
    """The CPU draw as make_inputs has always made it: x, weight, residual in this order from one generator."""
    g = torch.Generator(device="cpu").manual_seed(seed)
    xv = torch.randn(case.shape, generator=g, dtype=torch.float32)
    wv = 1.0 + 0.5 * torch.randn(case.hidden, generator=g, dtype=torch.float32)
    rv = torch.randn(case.shape, generator=g, dtype=torch.float32) if case.residual and not case.residual_is_x \
        else None
    if case.zero_row:
        xv.view(-1, case.hidden)[0] = 0
    return xv, wv, rv


@pytest.mark.parametrize("kw", [{}, {"dtype": "float32", "residual": True}, {"residual": True, "dtype": "float16"},
                                {"layout": "transposed", "ndim": 2}, {"residual": True, "misaligned": "residual"},
                                {"weight_broadcast": True}, {"residual": True, "residual_is_x": True},
                                {"weight_dtype": "float32", "zero_row": True}])
def test_make_inputs_on_cpu_keep_their_values(kw):
    case = Case(2, 3, 40, **kw)
    for seed in (0, 7):
        xv, wv, rv = _cpu_draw(case, seed)
        x, w, r = make_inputs(case, "cpu", seed)
        dt = getattr(torch, case.dtype)
        assert torch.equal(x, xv.to(dt)) and x.dtype == dt
        wt = wv.to(getattr(torch, case.w_dtype))
        assert torch.equal(w, wt[:1].expand(40) if case.weight_broadcast else wt) and w.dtype == wt.dtype
        assert not torch.equal(w, torch.ones_like(w))          # weights are random, never ones
        if rv is not None:
            assert torch.equal(r, rv.to(dt))
        elif case.residual:
            assert r is x


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_make_inputs_on_cuda_draw_on_the_device():
    for kw in ({"residual": True}, {"layout": "strided_rows", "ndim": 2}, {"layout": "transposed", "ndim": 2},
               {"misaligned": "x"}, {"misaligned": "weight"}, {"weight_broadcast": True},
               {"residual": True, "zero_row": True}, {"weight_device": "cpu"}):
        case = Case(2, 3, 40, **kw)
        x, w, r = make_inputs(case, "cuda", 5)
        x2, w2, _ = make_inputs(case, "cuda", 5)
        assert x.is_cuda and torch.equal(x, x2) and torch.equal(w, w2)      # the same seed, the same values
        assert w.device.type == ("cpu" if case.weight_device else "cuda")
        assert not torch.equal(w.cpu(), torch.ones(40))
        if case.residual:
            assert r.is_cuda and not torch.equal(r, x)


def test_eps_zero_zero_row_rule(fake_impl):
    """0/0 in an all-zero row with eps = 0: all NaN or all zeros are ok; other values are wrong."""
    def zero_guard(x, w, r=None, eps=1e-6):
        out = hf_rmsnorm(x, w, r, eps)
        o = out[0] if isinstance(out, tuple) else out
        o.nan_to_num_(0.0)
        return out

    def ones_there(x, w, r=None, eps=1e-6):
        out = hf_rmsnorm(x, w, None, eps)
        return out.nan_to_num(1.0)
    fake_impl("zero_guard", zero_guard)
    fake_impl("ones_there", ones_there)
    case = Case(1, 3, 24, "float32", eps=0.0, zero_row=True, ndim=2)
    assert check_impl("huggingface", case)["status"] == "ok"                   # NaN there
    assert check_impl("zero_guard", case)["status"] == "ok"                    # zeros there
    assert check_impl("zero_guard", Case(1, 3, 24, "float32", True, eps=0.0, zero_row=True))["status"] == "ok"
    row = check_impl("ones_there", case)
    assert row["status"] == "wrong" and "0/0" in row["reason"]


def test_mixed_dtypes_against_the_actual_values():
    for kw in (dict(weight_dtype="float32"), dict(weight_dtype="float16"),
               dict(residual=True, residual_dtype="float32")):
        row = check_impl("torch", Case(1, 5, 64, "bfloat16", **kw), "cpu")
        assert row["status"] == "ok", row


def test_checker_flags_changed_inputs_same_memory_dtype_and_shape(fake_impl):
    def scribble(x, w, r=None, eps=1e-6):
        out = hf_rmsnorm(x, w, r, eps)
        x.zero_()
        return out

    def same_mem(x, w, r=None, eps=1e-6):
        out, _ = hf_rmsnorm(x, w, r, eps)
        return out, out

    def as_fp32(x, w, r=None, eps=1e-6):
        return hf_rmsnorm(x, w, r, eps).float()

    def raises(x, w, r=None, eps=1e-6):
        raise TypeError("weight: expected a tensor on x's device")
    fake_impl("scribble", scribble)
    fake_impl("same_mem", same_mem)
    fake_impl("as_fp32", as_fp32)
    fake_impl("raises", raises)
    row = check_impl("scribble", Case(1, 3, 16, "float32"))
    assert row["status"] == "wrong" and "changed an input it does not document changing" in row["reason"]
    row = check_impl("same_mem", Case(1, 3, 16, "float32", True))
    assert row["status"] == "wrong" and "same memory" in row["reason"]
    row = check_impl("as_fp32", Case(1, 3, 16, "bfloat16"))
    assert row["status"] == "wrong" and "dtype torch.float32 != input dtype torch.bfloat16" in row["reason"]
    row = check_impl("raises", Case(1, 3, 16, "float32"))
    assert row["status"] == "error" and row["reason"] == "TypeError: weight: expected a tensor on x's device"
    # the caller's inputs are never changed, even by an implementation that writes in place
    inputs = make_inputs(Case(1, 3, 16, "float32"), "cpu", 0)
    before = inputs[0].clone()
    check_impl("scribble", Case(1, 3, 16, "float32"), inputs=inputs)
    assert torch.equal(inputs[0], before)


def test_check_outputs_non_finite_and_sampled_rows():
    x = torch.randn(6, 32)
    w = torch.rand(32) + 0.5
    x[2, 3] = float("nan")
    good = hf_rmsnorm(x, w)
    assert check_outputs(x, w, None, 1e-6, good, 1e-5)["status"] == "ok"
    bad = good.clone()
    bad[4, 0] = float("nan")
    assert check_outputs(x, w, None, 1e-6, bad, 1e-5)["status"] == "wrong"
    rows = torch.tensor([0, 5])
    assert check_outputs(x[rows], w, None, 1e-6, good, 1e-5, rows=rows)["status"] == "ok"


def test_supports_case_reasons_never_empty():
    with pytest.raises(ValueError, match="needs a reason"):
        Support.no("")
    cases = default_cases()
    for name, impl in registry().items():
        for device in ("cpu", "cuda"):
            for c in cases:
                s = impl.supports(c, device)
                assert s.ok or s.reason.strip(), (name, c.name, device)
    hf = get_impl("huggingface")
    assert hf.supports(Case(1, 2, 8, "bfloat16", weight_dtype="float32"), "cpu").ok
    import torch
    here = "cuda" if torch.cuda.is_available() else "cpu"    # where our kernel runs (CPU: the interpreter)
    s = get_impl("triton").supports(Case(1, 2, 8, "float64"), here)
    assert not s.ok and "float64 not supported" in s.reason
    s = hf.supports(Case(1, 2, 8, weight_device="cpu"), "cuda")
    assert not s.ok and s.reason
    from rmsnorm_lab.impls.vllm import _limits
    assert "misaligned address" in _limits(Case(1, 2, 8, misaligned="x"), "cuda").reason
    assert "refuses" in _limits(Case(1, 2, 8, weight_dtype="float32"), "cuda").reason
    from rmsnorm_lab.impls.flashinfer import _cuda_limits       # what the H200's support matrix showed
    assert _cuda_limits(Case(1, 2, 65536, "bfloat16"), "cuda").ok
    wide_res = _cuda_limits(Case(1, 2, 65536, "bfloat16", residual=True), "cuda")
    assert not wide_res.ok and not wide_res.fault and "invalid argument" in wide_res.reason
    for res in (False, True):
        wider = _cuda_limits(Case(1, 2, 131072, "bfloat16", residual=res), "cuda")
        assert not wider.ok and wider.fault and "fault" in wider.reason
    assert _cuda_limits(Case(1, 2, 16385, "bfloat16", residual=True), "cuda").ok


def test_roles_colours_provenance_prewarm():
    assert by_role("baseline") == ["huggingface"]
    assert set(by_role("peer")) >= {"torch", "torch_compile", "torch_compile_dynamic", "vllm", "flashinfer"}
    for name, impl in registry().items():
        if impl.family != "triton":          # our kernel's entry (impls/triton_lab.py) sets its own
            assert impl.color.startswith("#"), name
        assert isinstance(impl.provenance().get("versions"), dict), name
    assert get_impl("flashinfer").packages[0] == "flashinfer-python"
    assert "path" in get_impl("flashinfer").provenance()
    cases = make_cases([64], [1, 2], [3, 5], ["float32"], residual=[False])
    jobs = get_impl("torch_compile").prewarm_jobs(cases, "cpu")
    assert len(jobs) == 4 and all(j[0] == "torch_compile" for j in jobs)
    assert len(get_impl("torch_compile_dynamic").prewarm_jobs(cases, "cpu")) == 1
    assert get_impl("torch").prewarm_jobs(cases, "cpu") == []
    get_impl("torch_compile").run_prewarm_job(jobs[0])
    meta = envinfo.collect("cpu")
    assert set(meta["impls"]) == set(registry()) and "torch" in meta["versions"]


def test_vllm_ops_library_is_its_provenance(monkeypatch, tmp_path):
    lib = tmp_path / "_C.abi3.so"
    monkeypatch.setenv("RMSNORM_LAB_VLLM_OPS", str(lib))
    assert str(lib) in get_impl("vllm").provenance()["path"]


def x_rows(shape) -> int:
    return int(torch.tensor(shape[:-1]).prod())


def test_torch_compile_dynamic_one_graph_for_many_token_counts():
    """The dynamic-token entry compiles once per (hidden, dtype, residual) and token counts > 1 reuse
    that graph (as vLLM compiles); both outputs checked."""
    fn = get_impl("torch_compile_dynamic").load()
    for residual in (False, True):
        for i, shape in enumerate([(3, 47), (5, 47), (17, 47), (1, 47), (40, 47), (2, 3, 47)]):
            x, w, r = make_inputs(Case(1, x_rows(shape), 47, "float32", residual, ndim=2), "cpu", i)
            x, r = x.reshape(shape), None if r is None else r.reshape(shape)
            got = fn(x.clone(), w, None if r is None else r.clone())
            assert check_outputs(x, w, r, 1e-6, got, 1e-5)["status"] == "ok", (shape, residual)
    keys = [k for k in fn.compile_seconds if k[0][1] == 47]
    assert len(keys) == 4, keys            # (many tokens, one token) x (residual, none)
