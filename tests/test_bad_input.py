"""Bad input, through the public API and the CLI: a fitting exception type whose
message names the argument, what was given and what is expected.

Each parametrized id below is one distinct bad input (more than 30 in all).
"""
import math
import os
import subprocess
import sys
import warnings

import pytest
import torch

import rmsnorm_lab as L
from rmsnorm_lab import cli
from rmsnorm_lab.reference import reference
from rmsnorm_lab.validate import UnsupportedDtypeError, UnsupportedError

H = 8


def _x(*shape, dtype=torch.float32):
    return torch.randn(*(shape or (2, 3, H)), dtype=dtype)


def _w(n=H, dtype=torch.float32):
    return 1 + 0.5 * torch.randn(n, dtype=dtype)


def _fake_two_gpus():
    """x on cuda:0, weight on cuda:1: real ones on a 2-GPU machine, fake tensors where there is no GPU."""
    if torch.cuda.device_count() >= 2:
        return torch.empty(2, H, device="cuda:0"), torch.empty(H, device="cuda:1")
    if torch.cuda.is_available():
        pytest.skip("one GPU: neither real nor fake tensors can sit on cuda:1")
    from torch._subclasses.fake_tensor import FakeTensorMode
    with FakeTensorMode(allow_non_fake_inputs=True):
        return torch.empty(2, H, device="cuda:0"), torch.empty(H, device="cuda:1")


# (id, call -> (x, weight, residual, eps), exception type, message part)
TENSOR_CASES = [
    ("x-not-a-tensor", lambda: ([[1.0] * H], _w(), None, 1e-6), TypeError, "x: expected a torch.Tensor, got list"),
    ("x-int64", lambda: (torch.ones(2, H, dtype=torch.int64), _w(), None, 1e-6), TypeError,
     "x: expected a floating-point tensor"),
    ("x-bool", lambda: (torch.ones(2, H, dtype=torch.bool), _w(), None, 1e-6), TypeError, "got torch.bool"),
    ("x-int8", lambda: (torch.ones(2, H, dtype=torch.int8), _w(), None, 1e-6), TypeError, "got torch.int8"),
    ("x-complex", lambda: (torch.ones(2, H, dtype=torch.complex64), _w(), None, 1e-6), TypeError,
     "got torch.complex64"),
    ("x-0d", lambda: (torch.tensor(1.0), _w(1), None, 1e-6), ValueError, "x: expected at least 1 dimension"),
    ("x-hidden-0", lambda: (torch.empty(4, 0), _w(0), None, 1e-6), ValueError,
     "x: hidden dimension (last) has size 0"),
    ("weight-not-a-tensor", lambda: (_x(), [1.0] * H, None, 1e-6), TypeError, "weight: expected a torch.Tensor"),
    ("weight-wrong-length", lambda: (_x(), _w(H + 1), None, 1e-6), ValueError,
     f"weight: expected shape ({H},) to match x's hidden size, got ({H + 1},)"),
    ("weight-2d", lambda: (_x(), _w().view(2, H // 2), None, 1e-6), ValueError, "got (2, 4)"),
    ("weight-dtype", lambda: (_x(), _w(dtype=torch.float16), None, 1e-6), TypeError,
     "weight: expected dtype torch.float32 (same as x), got torch.float16"),
    ("weight-int", lambda: (_x(), torch.ones(H, dtype=torch.int32), None, 1e-6), TypeError,
     "got torch.int32"),
    ("weight-device", lambda: (_x(), torch.empty(H, device="meta"), None, 1e-6), ValueError,
     "weight: expected device cpu (same as x), got meta"),
    ("two-gpus", lambda: (*_fake_two_gpus(), None, 1e-6), ValueError, "tensors on two different GPUs"),
    ("residual-not-a-tensor", lambda: (_x(), _w(), 1.0, 1e-6), TypeError,
     "residual: expected a torch.Tensor or None, got float"),
    ("residual-shape", lambda: (_x(), _w(), _x(2, 4, H), 1e-6), ValueError,
     f"residual: expected shape (2, 3, {H}) (same as x), got (2, 4, {H})"),
    ("residual-broadcastable", lambda: (_x(), _w(), _x(1, 1, H), 1e-6), ValueError, "residual: expected shape"),
    ("residual-dtype", lambda: (_x(), _w(), _x(dtype=torch.bfloat16), 1e-6), TypeError,
     "residual: expected dtype torch.float32 (same as x), got torch.bfloat16"),
    ("residual-device", lambda: (_x(), _w(), torch.empty(2, 3, H, device="meta"), 1e-6), ValueError,
     "residual: expected device cpu"),
    ("eps-zero", lambda: (_x(), _w(), None, 0.0), ValueError, "eps: expected a positive finite float, got 0.0"),
    ("eps-negative", lambda: (_x(), _w(), None, -1e-6), ValueError, "got -1e-06"),
    ("eps-nan", lambda: (_x(), _w(), None, float("nan")), ValueError, "got nan"),
    ("eps-inf", lambda: (_x(), _w(), None, math.inf), ValueError, "got inf"),
    ("eps-str", lambda: (_x(), _w(), None, "1e-6"), TypeError, "eps: expected a positive float, got '1e-6' (str)"),
    ("eps-none", lambda: (_x(), _w(), None, None), TypeError, "got None (NoneType)"),
    ("eps-bool", lambda: (_x(), _w(), None, True), TypeError, "got True (bool)"),
]

API = {"rmsnorm_naive": lambda *a: L.rmsnorm_naive(*a), "triton_rmsnorm": lambda *a: L.triton_rmsnorm(*a)}


@pytest.mark.parametrize("api", list(API))
@pytest.mark.parametrize("make,exc,part", [c[1:] for c in TENSOR_CASES], ids=[c[0] for c in TENSOR_CASES])
def test_tensor_inputs(api, make, exc, part):
    args = make()
    if api == "triton_rmsnorm" and "(same as x), got torch." in part and "dtype" in part:
        # our kernel takes weight / residual dtypes other than x's (tests/test_kernel_inputs.py)
        got = API[api](*args)
        assert (got if args[2] is None else got[0]).dtype == args[0].dtype
        return
    with pytest.raises(exc) as ei:
        API[api](*args)
    assert part in str(ei.value)


def test_float64_refused_by_triton_others_run():
    x, w = _x(dtype=torch.float64), _w(dtype=torch.float64)
    with pytest.raises(UnsupportedDtypeError) as ei:
        L.triton_rmsnorm(x, w)
    assert isinstance(ei.value, TypeError)
    assert "x: the triton kernel supports float32, float16, bfloat16; got torch.float64" in str(ei.value)
    out = L.rmsnorm_naive(x, w)                # HF takes fp64
    assert out.dtype == torch.float64


def test_float64_sweep_skips_with_reason_others_run(tmp_path):
    df = L.calculate_diff(1, 4, H, use_residual=False, dtype="float64", device="cpu",
                          impls=["torch", "triton"], verbose=False)
    st = dict(zip(df["impl"], df["status"]))
    assert st == {"torch": "ok", "triton": "skip"}
    assert "float64 not supported" in df.set_index("impl").loc["triton", "reason"]
    sw = L.run_sweep(hidden=[H], batch=[1], seq=[4], dtypes=["float64"], residual=[False],
                     impls=["torch", "triton"], device="cpu", modes=["eager"], budget_ms=1, progress=False)
    st = dict(zip(sw["impl"], sw["status"]))
    assert st == {"torch": "ok", "triton": "skip"}
    assert "float64 not supported" in sw.set_index("impl").loc["triton", "error"]


@pytest.mark.parametrize("fn", ["rmsnorm_flashinfer", "rmsnorm_vllm"])
def test_cpu_tensor_to_cuda_only_impl(fn):
    with pytest.raises(UnsupportedError) as ei:
        getattr(L, fn)(_x(), _w())
    assert isinstance(ei.value, RuntimeError)
    msg = str(ei.value)
    assert msg.startswith("x: ") and "cannot run on a tensor on cpu" in msg and "needs CUDA" in msg


def test_cpu_tensor_to_triton_without_interpreter(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    with pytest.raises(UnsupportedError) as ei:
        L.triton_rmsnorm(_x(), _w())
    assert "needs CUDA (or TRITON_INTERPRET=1 for CPU tensors), got a tensor on cpu" in str(ei.value)


def test_triton_out_wrong_shape():
    with pytest.raises(ValueError) as ei:
        L.triton_rmsnorm(_x(), _w(), out=torch.empty(2, H))
    assert "out: expected a contiguous torch.float32 tensor of shape (2, 3, 8)" in str(ei.value)


# ---------------------------------------------------------------- zero tokens, strides

def test_zero_tokens_returns_empty_and_launches_nothing(monkeypatch):
    from rmsnorm_lab.impls import get_impl
    from rmsnorm_lab.kernels import launch as tk

    def boom(*a, **k):
        raise AssertionError("launched on zero tokens")
    monkeypatch.setattr(tk, "launch", boom)
    monkeypatch.setattr(get_impl("huggingface"), "load", boom)
    x, w = torch.empty(0, H), _w()
    for out in (L.triton_rmsnorm(x, w), L.rmsnorm_naive(x, w)):
        assert out.shape == (0, H)
    x3 = torch.empty(2, 0, H)
    out, res = L.triton_rmsnorm(x3, w, torch.empty(2, 0, H))
    assert out.shape == res.shape == (2, 0, H)
    out, res = L.rmsnorm_naive(x3, w, torch.empty(2, 0, H))
    assert out.shape == res.shape == (2, 0, H)


def test_noncontiguous_copied_once_with_warning():
    from rmsnorm_lab import validate
    validate._warned_noncontig.discard("triton:x")
    base = torch.randn(H, 6)
    x = base.t()                                   # (6, H) transposed view
    w = _w()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        a = L.triton_rmsnorm(x, w)
        b = L.triton_rmsnorm(x, w)
    msgs = [str(c.message) for c in caught if "not contiguous" in str(c.message)]
    assert len(msgs) == 1 and "x is not contiguous (strides (1, 6)); triton copies it" in msgs[0]
    ref = reference(x, w)
    assert torch.allclose(a, ref.float(), atol=1e-5) and torch.equal(a, b)


def test_api_never_mutates_and_handles_strided_rows():
    buf = torch.randn(5, H + 3)
    x = buf[:, :H]                                 # strided rows
    r = torch.randn(5, H + 3)[:, 1:H + 1]
    x0, r0, w = x.clone(), r.clone(), _w()
    out, new_r = L.rmsnorm_naive(x, w, r)
    ref, ref_r = reference(x, w, r)
    assert torch.allclose(out, ref.float(), atol=1e-5) and torch.allclose(new_r, ref_r.float(), atol=1e-6)
    assert torch.equal(x, x0) and torch.equal(r, r0)


# ---------------------------------------------------------------- run_sweep / SweepConfig / calculate_diff

def _unwritable(tmp_path):
    f = tmp_path / "a_file"
    f.write_text("x")
    return str(f / "sub")                          # a directory below a regular file: cannot be created


SWEEP_CASES = [
    ("hidden-zero", dict(hidden=[0]), ValueError, "hidden_size: expected a positive integer, got 0"),
    ("hidden-negative", dict(hidden=[-4]), ValueError, "hidden_size: expected a positive integer, got -4"),
    ("hidden-empty", dict(hidden=[]), ValueError, "hidden_size: expected at least one value"),
    ("batch-float", dict(batch=[1.5]), TypeError, "batch_size: expected a positive integer, got 1.5 (float)"),
    ("seq-str", dict(seq="abc"), TypeError, "seq_len: expected a list of positive integers, got 'abc'"),
    ("seq-none-item", dict(seq=[None]), TypeError, "seq_len: expected a positive integer, got None"),
    ("tokens-zero", dict(tokens=[0]), ValueError, "tokens: expected a positive integer, got 0"),
    ("dtype-unknown", dict(dtypes=["float8"]), ValueError, "dtype: unknown dtype 'float8'; expected one of"),
    ("dtype-typo", dict(dtypes=["flaot16"]), ValueError, "did you mean 'float16'"),
    ("dtype-torch-int", dict(dtypes=[torch.int32]), TypeError, "dtype: expected a floating dtype"),
    ("impl-unknown", dict(impls=["vllmm"]), KeyError, "unknown implementation 'vllmm'"),
    ("impl-typo-suggests", dict(impls=["flashinfer_cud"]), KeyError, "did you mean 'flashinfer_cuda'"),
    ("impls-empty", dict(impls=""), ValueError, "impls: expected at least one implementation name"),
    ("mode-unknown", dict(modes=["warm"]), ValueError, "modes: unknown timing mode 'warm'"),
    ("residual-str", dict(residual=["yes"]), TypeError, "residual: expected booleans, got 'yes' (str)"),
    ("device-unknown", dict(device="tpu"), ValueError, "device: expected 'auto', 'cpu', 'cuda' or 'cuda:N', got 'tpu'"),
    ("eps-zero", dict(eps=0), ValueError, "eps: expected a positive finite float, got 0.0"),
    ("budget-zero", dict(budget_ms=0), ValueError, "budget_ms: expected a positive finite number"),
    ("budget-nan", dict(budget_ms=float("nan")), ValueError, "got nan"),
    ("budget-str", dict(budget_ms="40"), TypeError, "budget_ms: expected a positive number of milliseconds, got '40'"),
    ("seed-negative", dict(seed=-1), ValueError, "seed: expected a non-negative integer, got -1"),
    ("seed-float", dict(seed=0.5), TypeError, "seed: expected a non-negative integer, got 0.5 (float)"),
    ("check-str", dict(check="yes"), TypeError, "check: expected True or False, got 'yes'"),
    ("save-path-type", dict(save_path=3), TypeError, "save_path: expected a directory path"),
    ("unknown-kwarg", dict(hiden=[8]), TypeError, "run_sweep: unknown parameter 'hiden'"),
]


@pytest.mark.parametrize("kw,exc,part", [c[1:] for c in SWEEP_CASES], ids=[c[0] for c in SWEEP_CASES])
def test_run_sweep_bad_config(kw, exc, part):
    with pytest.raises(exc) as ei:
        L.run_sweep(**{"device": "cpu", "impls": ["torch"], **kw})
    assert part in (ei.value.args[0] if isinstance(ei.value, KeyError) else str(ei.value))


def test_run_sweep_unknown_kwarg_suggests():
    with pytest.raises(TypeError, match="did you mean 'hidden'"):
        L.run_sweep(hiden=[8])


def test_sweep_config_save_path_unwritable(tmp_path):
    with pytest.raises(PermissionError) as ei:
        L.SweepConfig(device="cpu", save_path=_unwritable(tmp_path)).validate()
    assert "save_path: cannot write to" in str(ei.value)
    f = tmp_path / "plain_file"
    f.write_text("x")
    with pytest.raises(NotADirectoryError, match="save_path: .* exists and is not a directory"):
        L.SweepConfig(device="cpu", save_path=str(f)).validate()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU message")
def test_device_cuda_without_gpu():
    with pytest.raises(RuntimeError, match="device: 'cuda' requested but torch sees no CUDA GPU"):
        L.SweepConfig(device="cuda").validate()


DIFF_CASES = [
    ("batch-zero", dict(batch_size=0), ValueError, "batch_size: expected a positive integer, got 0"),
    ("hidden-str", dict(hidden_size="4096"), TypeError, "hidden_size: expected a positive integer, got '4096' (str)"),
    ("dtype-unknown", dict(dtype="fp8"), ValueError, "dtype: unknown dtype 'fp8'"),
    ("use-residual-str", dict(use_residual="yes"), TypeError, "use_residual: expected True or False, got 'yes'"),
    ("eps-negative", dict(eps=-1.0), ValueError, "eps: expected a positive finite float, got -1.0"),
    ("seed-negative", dict(seed=-3), ValueError, "seed: expected a non-negative integer, got -3"),
    ("impl-unknown", dict(impls=["hugginface"]), KeyError, "did you mean 'huggingface'"),
    ("device-unknown", dict(device="gpu0"), ValueError, "device: expected"),
]


@pytest.mark.parametrize("kw,exc,part", [c[1:] for c in DIFF_CASES], ids=[c[0] for c in DIFF_CASES])
def test_calculate_diff_bad(kw, exc, part):
    args = {"batch_size": 1, "seq_len": 4, "hidden_size": H, "device": "cpu", "verbose": False, **kw}
    with pytest.raises(exc) as ei:
        L.calculate_diff(**args)
    assert part in (ei.value.args[0] if isinstance(ei.value, KeyError) else str(ei.value))


PROBE_CASES = [
    ("timeout-zero", dict(timeout_s=0), ValueError, "timeout_s: expected a positive finite number of seconds, got 0"),
    ("timeout-str", dict(timeout_s="60"), TypeError, "timeout_s: expected a positive number of seconds, got '60'"),
    ("case-unknown", dict(cases=["hidden=4097"]), KeyError, "cases: unknown case 'hidden=4097'"),
    ("case-seq-zero", dict(cases=[{"batch": 1, "seq": 0, "hidden": 8}]), ValueError,
     "case: seq: expected a positive integer, got 0"),
    ("case-layout", dict(cases=[{"batch": 1, "seq": 2, "hidden": 8, "layout": "diagonal"}]), ValueError,
     "case: layout: expected one of"),
    ("case-field", dict(cases=[{"shape": (2, 8)}]), TypeError, "unknown case field 'shape'"),
    ("case-missing", dict(cases=[{"hidden": 8}]), TypeError, "case: missing field(s) batch, seq"),
    ("case-misaligned", dict(cases=[{"batch": 1, "seq": 2, "hidden": 8, "misaligned": "w"}]), ValueError,
     "case: misaligned: expected one of x, residual, weight"),
    ("case-alias-no-res", dict(cases=[{"batch": 1, "seq": 2, "hidden": 8, "residual_is_x": True}]), ValueError,
     "need residual=True"),
    ("impl-unknown", dict(impls=["triton_lab"]), KeyError, "unknown implementation 'triton_lab'"),
]


@pytest.mark.parametrize("kw,exc,part", [c[1:] for c in PROBE_CASES], ids=[c[0] for c in PROBE_CASES])
def test_probe_support_bad(kw, exc, part):
    with pytest.raises(exc) as ei:
        L.probe_support(**{"impls": ["huggingface"], "device": "cpu", **kw})
    assert part in (ei.value.args[0] if isinstance(ei.value, KeyError) else str(ei.value))


# ---------------------------------------------------------------- the CLI: exit 2, one line, no traceback

def _cli(argv, capsys):
    try:
        code = cli.main(argv)
    except SystemExit as e:                        # argparse errors
        code = e.code
    err = capsys.readouterr().err
    return code, err


CLI_CASES = [
    ("batch-zero", ["--batch-size", "0"], "argument --batch-size: expected a positive integer, got 0"),
    ("seq-negative", ["--seq-len", "-3"], "argument --seq-len: expected a positive integer, got -3"),
    ("hidden-float", ["--hidden-size", "4.5"], "argument --hidden-size: expected a positive integer, got '4.5'"),
    ("hidden-word", ["--hidden-size", "big"], "argument --hidden-size: expected a positive integer, got 'big'"),
    ("seed-negative", ["--seed", "-1"], "argument --seed: expected a non-negative integer, got -1"),
    ("timing-unknown", ["--timing", "warm"], "argument --timing: invalid choice: 'warm'"),
    ("impl-unknown", ["--impls", "liger,quak"], "impls: unknown implementation 'quak'"),
    ("dtype-unknown", ["--dtype", "float8"], "dtype: unknown dtype 'float8'"),
    ("device-unknown", ["--device", "tpu"], "device: expected 'auto', 'cpu', 'cuda' or 'cuda:N', got 'tpu'"),
]


@pytest.mark.parametrize("argv,part", [c[1:] for c in CLI_CASES], ids=[c[0] for c in CLI_CASES])
def test_cli_bad_args(argv, part, capsys, tmp_path):
    code, err = _cli(argv + ["--save-path", str(tmp_path), "--no-plots"], capsys)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and part in lines[0], err
    assert "Traceback" not in err


def test_cli_impl_suggestion(capsys, tmp_path):
    code, err = _cli(["--impls", "quak", "--save-path", str(tmp_path)], capsys)
    assert code == 2 and "did you mean 'quack'" in err


def test_cli_save_path_unwritable(capsys, tmp_path):
    code, err = _cli(["--device", "cpu", "--save-path", _unwritable(tmp_path)], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "save_path: cannot write to" in err


def test_cli_subprocess_no_traceback(tmp_path):
    env = {**os.environ, "PYTHONPATH": os.path.dirname(os.path.dirname(os.path.abspath(__file__)))}
    p = subprocess.run([sys.executable, "-m", "rmsnorm_lab", "--device", "cpu", "--dtype", "fp8",
                        "--save-path", str(tmp_path)], capture_output=True, text=True, env=env, timeout=120)
    assert p.returncode == 2
    assert p.stderr.strip().count("\n") == 0 and "dtype: unknown dtype 'fp8'" in p.stderr
    assert "Traceback" not in p.stderr and p.stdout == ""
