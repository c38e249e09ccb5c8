"""Implementations built on PyTorch alone: HuggingFace naive, F.rms_norm, torch.compile."""
from __future__ import annotations

import time

from .base import Impl


def hf_rmsnorm(x, weight, residual=None, eps: float = 1e-6):
    """HuggingFace LlamaRMSNorm semantics (the seed's ``rmsnorm_naive``), without nn.Module overhead.

    Upcast to fp32, add the residual in fp32 (new residual = sum rounded to the
    input dtype), normalize the fp32 sum, round to the input dtype, times weight.
    """
    import torch

    orig = x.dtype
    h = x.to(torch.float32)
    new_res = None
    if residual is not None:
        h = h + residual.to(torch.float32)
        new_res = h.to(orig)
    var = h.pow(2).mean(dim=-1, keepdim=True)
    h = h * torch.rsqrt(var + eps)
    out = weight * h.to(orig)
    return out if residual is None else (out, new_res)


def _load_hf():
    return hf_rmsnorm


def _load_torch():
    import torch
    import torch.nn.functional as F

    def torch_rmsnorm(x, weight, residual=None, eps: float = 1e-6):
        if residual is None:
            return F.rms_norm(x, (x.shape[-1],), weight, eps)
        s = x + residual
        return F.rms_norm(s, (x.shape[-1],), weight, eps), s
    _ = torch
    return torch_rmsnorm


class CompiledHF:
    """``hf_rmsnorm`` under ``torch.compile(dynamic=False)``; compile time kept apart.

    One compiled graph per (shape, dtype, device, residual); ``compile_seconds``
    holds the time of the first call of each.
    """

    def __init__(self):
        import torch
        import torch._dynamo

        # one graph per shape (dynamic=False): lift dynamo's recompile limits, which would
        # otherwise fall back to eager HF after 8 shapes (seen on the H100, 2026-11-24)
        cfg = torch._dynamo.config
        for name in ("recompile_limit", "cache_size_limit", "accumulated_recompile_limit",
                     "accumulated_cache_size_limit"):
            if hasattr(cfg, name):
                setattr(cfg, name, max(getattr(cfg, name), 1_000_000))
        self._compiled = torch.compile(hf_rmsnorm, dynamic=False)
        self._seen: set = set()
        self.compile_seconds: dict = {}

    def warm(self, x, weight, residual=None, eps=1e-6) -> float:
        import torch
        key = (tuple(x.shape), x.dtype, str(x.device), residual is not None, eps)
        if key in self._seen:
            return 0.0
        t0 = time.perf_counter()
        self._compiled(x, weight, residual, eps)
        if x.is_cuda:
            torch.cuda.synchronize()
        dt = time.perf_counter() - t0
        self._seen.add(key)
        self.compile_seconds[key] = dt
        return dt

    def __call__(self, x, weight, residual=None, eps: float = 1e-6):
        self.warm(x, weight, residual, eps)
        return self._compiled(x, weight, residual, eps)


def _load_compile():
    return CompiledHF()


IMPLS = [
    Impl("huggingface", "HuggingFace", "torch", _load_hf, devices=("cpu", "cuda"),
         dtypes=("float32", "float16", "bfloat16", "float64"), requires=("torch",),
         numerics="fp32 math; rounds x*rstd to the input dtype, then multiplies by weight in that dtype"),
    Impl("torch", "torch F.rms_norm", "torch", _load_torch, devices=("cpu", "cuda"),
         dtypes=("float32", "float16", "bfloat16", "float64"), requires=("torch",),
         numerics="residual added in the input dtype (rounded), then aten rms_norm (fp32 accumulation)"),
    Impl("torch_compile", "torch.compile(HF)", "torch", _load_compile, devices=("cpu", "cuda"),
         dtypes=("float32", "float16", "bfloat16", "float64"), requires=("torch",),
         numerics="Inductor-fused HF graph: fp32 math, HF's rounding points"),
]
