"""vLLM's CUDA kernels: through an installed vllm, or the op library at $RMSNORM_LAB_VLLM_OPS."""
from __future__ import annotations

import os

from .base import MISALIGNED_FAULT, Impl, Support, has_module

ENV = "RMSNORM_LAB_VLLM_OPS"


def _ops():
    """(rms_norm, fused_add_rms_norm) from vllm._custom_ops or the op library named by $RMSNORM_LAB_VLLM_OPS."""
    path = os.environ.get(ENV)
    if path:
        import torch
        if not os.path.exists(path):
            raise FileNotFoundError(f"{ENV}={path}: no such file")
        torch.ops.load_library(path)
        for ns in ("_C", "_C_stable_libtorch"):
            space = getattr(torch.ops, ns)
            try:
                return space.rms_norm, space.fused_add_rms_norm
            except (AttributeError, RuntimeError):
                continue
        raise RuntimeError(f"{path} loaded but registers no rms_norm op in torch.ops._C")
    from vllm import _custom_ops as ops
    return ops.rms_norm, ops.fused_add_rms_norm


def _load():
    import torch
    rms_norm, fused_add = _ops()

    def vllm_rmsnorm(x, weight, residual=None, eps: float = 1e-6):
        if residual is None:
            out = torch.empty_like(x)
            rms_norm(out, x, weight, eps)
            return out
        fused_add(x, residual, weight, eps)    # in place
        return x, residual
    return vllm_rmsnorm


def _check() -> Support:
    path = os.environ.get(ENV)
    if path:
        return Support.yes() if os.path.exists(path) else Support.no(f"{ENV}={path}: no such file")
    if not has_module("vllm"):
        return Support.no(f"vllm not installed (or set {ENV} to vLLM's op library)")
    return Support.yes()


def _limits(case, device) -> Support:
    """What vLLM's kernels are known to fail on (seen on an H200)."""
    if case.misaligned:
        return Support.no(MISALIGNED_FAULT.format(case.misaligned), fault=True)
    if case.w_dtype != case.dtype:
        return Support.no(f"refuses a {case.w_dtype} weight with {case.dtype} x (one dtype for all tensors)")
    return Support.yes()


class _VLLM(Impl):
    def provenance(self) -> dict:
        p = super().provenance()
        path = os.environ.get(ENV)
        if path:
            p["path"] = f"op library {path} ({ENV})"
        elif has_module("vllm"):
            p["path"] = "vllm._custom_ops"
        return p


IMPLS = [
    _VLLM("vllm", "vLLM", "vllm", _load, dtypes=("float32", "float16", "bfloat16"), color="#d62728",
         requires=("torch",), inplace_residual=True, extra_check=_check, packages=("vllm",),
         case_check=_limits,
         numerics="fp32 accumulation; rounds x*rstd to the input dtype before the weight; "
                  "fused add normalizes the sum rounded to the input dtype"),
]
