"""The lab's own Triton kernel as a registry entry."""
from __future__ import annotations

import os

from .base import Impl, Support


def _load():
    from ..kernels.triton_rmsnorm import fast_rmsnorm, triton_rmsnorm

    def triton_lab_rmsnorm(x, weight, residual=None, eps: float = 1e-6):
        # contiguous CUDA inputs take the cached launch; anything else the checked path
        if x.is_cuda and x.is_contiguous() and (residual is None or residual.is_contiguous()):
            return fast_rmsnorm(x, weight, residual, eps)
        if residual is None:
            return triton_rmsnorm(x, weight, None, eps)
        alias = residual.data_ptr() == x.data_ptr()    # residual is x: x must end up holding x + x
        return triton_rmsnorm(x, weight, residual, eps, out=x if (x.is_contiguous() and not alias) else None,
                              residual_out=residual if residual.is_contiguous() else None)
    return triton_lab_rmsnorm


def _devices():
    return ("cpu", "cuda") if os.environ.get("TRITON_INTERPRET") == "1" else ("cuda",)


class _TritonImpl(Impl):
    def available(self, device: str = "cuda") -> Support:
        dev = str(device).split(":")[0]
        self.devices = _devices()
        s = super().available(device)
        if not s and dev == "cpu" and "needs CUDA" in s.reason:
            return Support.no(s.reason.replace("needs CUDA", "needs CUDA (or TRITON_INTERPRET=1 for CPU tensors)"))
        return s


IMPLS = [
    _TritonImpl("triton", "rmsnorm-lab Triton", "triton", _load, devices=("cpu", "cuda"),
                requires=("triton",), inplace_residual=True,
                numerics="fp32 math, one rounding at the store; fused add normalizes the fp32 sum "
                         "and writes out/new residual in place (like vLLM/FlashInfer); CPU via the interpreter"),
]
