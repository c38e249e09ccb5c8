"""The lab's Triton RMSNorm, checked: ``triton_rmsnorm(x, weight, residual=None, eps=1e-6)``.

Returns ``out`` or ``(out, new_residual)``. Pass ``out=x, residual_out=residual`` for the in-place fused
add that vLLM and FlashInfer do. The weight's and the residual's dtypes are independent of x's (any of
float32, float16, bfloat16, as torch allows): every load is widened to fp32, out is written in x's dtype
and the new residual in the residual's. Works on CUDA tensors, and on CPU tensors under
``TRITON_INTERPRET=1`` (how CI tests it).
"""
from __future__ import annotations

from ..device import interpreter_on
from ..validate import UnsupportedDtypeError, UnsupportedError, check_eps, contiguous_rows
from . import launch as _launch

DTYPE_NAMES = "float32, float16, bfloat16"


def _floats():
    import torch
    return (torch.float32, torch.float16, torch.bfloat16)


def _check_tensor(name, t, x, floats):
    """weight / residual: a tensor of a supported float dtype on x's device (the shape is checked by the caller)."""
    import torch
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor{' or None' if name == 'residual' else ''}, "
                        f"got {type(t).__name__}")
    if t.dtype not in floats:
        raise TypeError(f"{name}: expected dtype {DTYPE_NAMES} (independent of x's), got {t.dtype}")
    if t.device != x.device:
        two = ("; tensors on two different GPUs: move them to one device first"
               if t.device.type == x.device.type == "cuda" else "")
        raise ValueError(f"{name}: expected device {x.device} (same as x), got {t.device}{two}")


def check_kernel_inputs(x, weight, residual=None, eps: float = 1e-6) -> float:
    """What the kernel takes; returns eps as a float. TypeError / ValueError naming the argument;
    UnsupportedDtypeError for an x dtype it does not take; UnsupportedError for a CPU tensor without
    TRITON_INTERPRET=1. weight: (hidden,), residual: x's shape; both any of float32 / float16 / bfloat16
    on x's device (strided ones are copied by the checked path)."""
    import torch

    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x: expected a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"x: expected a floating-point tensor ({DTYPE_NAMES}), got {x.dtype}")
    if x.dim() < 1:
        raise ValueError("x: expected at least 1 dimension (..., hidden), got a 0-d tensor")
    if x.shape[-1] == 0:
        raise ValueError(f"x: hidden dimension (last) has size 0; expected hidden >= 1, shape {tuple(x.shape)}")
    floats = _floats()
    if not isinstance(weight, torch.Tensor):
        raise TypeError(f"weight: expected a torch.Tensor, got {type(weight).__name__}")
    if weight.dim() != 1 or weight.shape[0] != x.shape[-1]:
        raise ValueError(f"weight: expected shape ({x.shape[-1]},) to match x's hidden size, "
                         f"got {tuple(weight.shape)}")
    if residual is not None:
        if isinstance(residual, torch.Tensor) and residual.shape != x.shape:
            raise ValueError(f"residual: expected shape {tuple(x.shape)} (same as x), got {tuple(residual.shape)}")
        _check_tensor("residual", residual, x, floats)
    if x.dtype not in floats:
        raise UnsupportedDtypeError(f"x: the triton kernel supports {DTYPE_NAMES}; got {x.dtype}")
    _check_tensor("weight", weight, x, floats)
    if not x.is_cuda and not interpreter_on():
        raise UnsupportedError("x: the triton kernel needs CUDA (or TRITON_INTERPRET=1 for CPU tensors), "
                               f"got a tensor on {x.device}")
    return check_eps(eps)


def triton_rmsnorm(x, weight, residual=None, eps: float = 1e-6, *, out=None, residual_out=None, config=None):
    """RMSNorm (optionally fused with the residual add) with the lab's Triton kernel.

    Math in fp32, one rounding at the store; the fused add normalizes the fp32 sum and stores the sum
    rounded to the residual's dtype. weight and residual may have other float dtypes than x (out: x's dtype,
    residual_out: the residual's). Inputs are checked (TypeError / ValueError naming the argument; float64 x
    raises UnsupportedDtypeError, a CPU tensor without TRITON_INTERPRET=1 raises UnsupportedError "needs
    CUDA"). Zero tokens return empty tensors and launch nothing. Non-contiguous inputs (a strided view, a
    stride-0 broadcast weight) are copied once (with a one-time warning). config: a LaunchConfig (None: the
    table's pick). NaN / Inf propagate to their row as in the float64 reference.
    """
    eps = check_kernel_inputs(x, weight, residual, eps)
    import torch

    shape = x.shape
    n = shape[-1]
    if out is None:
        out = torch.empty(shape, dtype=x.dtype, device=x.device)
    _check_out(out, shape, x.dtype, x.device, "out")
    if residual is not None:
        if residual_out is None:
            residual_out = torch.empty(shape, dtype=residual.dtype, device=x.device)
        _check_out(residual_out, shape, residual.dtype, x.device, "residual_out")
    if x.numel() == 0:                      # zero tokens: nothing to launch
        return out if residual is None else (out, residual_out)
    xc = contiguous_rows(x, "x", "triton")
    w = contiguous_rows(weight, "weight", "triton")
    rc = contiguous_rows(residual, "residual", "triton")
    x2, y2 = xc.reshape(-1, n), out.view(-1, n)
    r2 = None if rc is None else rc.reshape(-1, n)
    ro2 = None if rc is None else residual_out.view(-1, n)
    with _launch.on_device(x):
        _launch.launch(x2, w, y2, r2, ro2, eps, config)
    return out if residual is None else (out, residual_out)


def registry_call(x, weight, residual=None, eps: float = 1e-6):
    """The registry's contract on the checked path (any layout): out written into x and the new residual into
    the residual where they are contiguous (in place, like vLLM / FlashInfer), else fresh tensors."""
    if residual is None:
        return triton_rmsnorm(x, weight, None, eps)
    alias = residual.data_ptr() == x.data_ptr()      # residual is x: x must end up holding x + x
    return triton_rmsnorm(x, weight, residual, eps, out=x if (x.is_contiguous() and not alias) else None,
                          residual_out=residual if residual.is_contiguous() else None)


def _check_out(t, shape, dtype, device, name):
    if t.shape != shape or t.dtype != dtype or t.device != device or not t.is_contiguous():
        raise ValueError(f"{name}: expected a contiguous {dtype} tensor of shape {tuple(shape)} on {device}, "
                         f"got {t.dtype} {tuple(t.shape)} on {t.device} (contiguous={t.is_contiguous()})")
