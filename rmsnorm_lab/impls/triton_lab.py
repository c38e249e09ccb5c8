"""The lab's own Triton kernel as a registry entry."""
from __future__ import annotations

import os

from .base import Impl, Support


def _load():
    import torch

    from ..kernels.triton_rmsnorm import launch, triton_rmsnorm

    def triton_lab_rmsnorm(x, weight, residual=None, eps: float = 1e-6):
        # fast path: contiguous inputs go straight to the cached launch
        if x.is_contiguous() and (residual is None or residual.is_contiguous()) and x.is_cuda:
            n = x.shape[-1]
            x2 = x.view(-1, n)
            if residual is None:
                out = torch.empty_like(x)
                launch(x2, weight, out.view(-1, n), None, None, eps)
                return out
            r2 = residual.view(-1, n)
            launch(x2, weight, x2, r2, r2, eps)       # in place, like vLLM / FlashInfer
            return x, residual
        if residual is None:
            return triton_rmsnorm(x, weight, None, eps)
        return triton_rmsnorm(x, weight, residual, eps)
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
