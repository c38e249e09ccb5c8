"""Implementations built on PyTorch alone: HuggingFace naive, F.rms_norm, torch.compile."""
from __future__ import annotations

import time
from dataclasses import dataclass

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


def lift_recompile_limits(limit: int = 1_000_000) -> None:
    """One graph per shape (``dynamic=False``): raise dynamo's recompile limits (per function and in
    total) to at least ``limit``; at torch's defaults a compiled function falls back to eager after
    8 shapes (256 in all)."""
    import torch._dynamo
    cfg = torch._dynamo.config
    for name in ("recompile_limit", "cache_size_limit", "accumulated_recompile_limit",
                 "accumulated_cache_size_limit"):
        if hasattr(cfg, name):
            setattr(cfg, name, max(getattr(cfg, name), limit))


class CompiledHF:
    """``hf_rmsnorm`` under ``torch.compile``; compile time kept apart.

    ``dynamic=False``: one graph per (shape, dtype, device, residual). ``dynamic=True``: the token
    dimension is dynamic, as vLLM compiles (inputs seen as (tokens, hidden), dim 0 marked dynamic,
    ``dynamic=None``): one graph per (hidden, dtype, device, residual), plus the size-1 token count
    that dynamo specializes. ``compile_seconds`` holds the time of the first call of each graph.
    """

    def __init__(self, dynamic: bool = False):
        import torch

        lift_recompile_limits()
        self.dynamic = dynamic
        self._compiled = torch.compile(hf_rmsnorm, dynamic=None if dynamic else False)
        self._seen: set = set()
        self.compile_seconds: dict = {}

    def _key(self, x, weight, residual, eps) -> tuple:
        tokens = tuple(x.shape) if not self.dynamic else (min(x.numel() // max(1, x.shape[-1]), 2), x.shape[-1])
        return (tokens, x.dtype, weight.dtype, None if residual is None else residual.dtype,
                str(x.device), eps)

    def _call(self, x, weight, residual, eps):
        if not self.dynamic:
            return self._compiled(x, weight, residual, eps)
        import torch._dynamo

        shape, n = x.shape, x.shape[-1]
        x2 = x.reshape(-1, n)
        r2 = None if residual is None else residual.reshape(-1, n)
        torch._dynamo.maybe_mark_dynamic(x2, 0)
        if r2 is not None:
            torch._dynamo.maybe_mark_dynamic(r2, 0)
        got = self._compiled(x2, weight, r2, eps)
        if residual is None:
            return got.view(shape)
        return got[0].view(shape), got[1].view(shape)

    def warm(self, x, weight, residual=None, eps=1e-6) -> float:
        """Compile (once per graph) and return the seconds it took; 0.0 when already compiled."""
        import torch
        key = self._key(x, weight, residual, eps)
        if key in self._seen:
            return 0.0
        t0 = time.perf_counter()
        self._call(x, weight, residual, eps)
        if x.is_cuda:
            torch.cuda.synchronize()
        dt = time.perf_counter() - t0
        self._seen.add(key)
        self.compile_seconds[key] = dt
        return dt

    def __call__(self, x, weight, residual=None, eps: float = 1e-6):
        self.warm(x, weight, residual, eps)
        return self._call(x, weight, residual, eps)


PREWARM_EPS = 1e-6


@dataclass
class CompiledImpl(Impl):
    """A torch.compile entry: compiles ahead per case in spawned workers (``prewarm_jobs``)."""
    dynamic: bool = False

    def prewarm_jobs(self, cases, device: str) -> list:
        jobs, seen = [], set()
        for c in cases:
            graph = (c.hidden, bool(c.residual), c.dtype, min(c.tokens, 2)) if self.dynamic else c.key()
            if graph not in seen:
                seen.add(graph)
                jobs.append((self.name, c.batch, c.seq, c.hidden, bool(c.residual), c.dtype))
        return jobs

    def run_prewarm_job(self, job) -> None:
        import torch

        _, batch, seq, hidden, residual, dtype = job
        fn = self.load()
        dt = getattr(torch, dtype)      # the values don't matter to the graph; shape, dtype, device do
        dev = "cuda" if torch.cuda.is_available() else "cpu"
        x = torch.zeros(batch, seq, hidden, dtype=dt, device=dev)
        w = torch.ones(hidden, dtype=dt, device=dev)
        fn.warm(x, w, torch.zeros_like(x) if residual else None, PREWARM_EPS)
        if x.is_cuda:
            torch.cuda.synchronize()


def _load_compile():
    return CompiledHF()


def _load_compile_dynamic():
    return CompiledHF(dynamic=True)


ALL_DTYPES = ("float32", "float16", "bfloat16", "float64")
IMPLS = [
    Impl("huggingface", "HuggingFace", "torch", _load_hf, devices=("cpu", "cuda"),
         dtypes=ALL_DTYPES, requires=("torch",), role="baseline", color="#1f77b4", packages=("torch",),
         numerics="fp32 math; rounds x*rstd to the input dtype, then multiplies by weight in that dtype"),
    Impl("torch", "torch F.rms_norm", "torch", _load_torch, devices=("cpu", "cuda"),
         dtypes=ALL_DTYPES, requires=("torch",), color="#7f7f7f", packages=("torch",),
         numerics="residual added in the input dtype (rounded), then aten rms_norm (fp32 accumulation)"),
    CompiledImpl("torch_compile", "torch.compile(HF)", "torch", _load_compile, devices=("cpu", "cuda"),
                 dtypes=ALL_DTYPES, requires=("torch",), color="#8c564b", packages=("torch", "triton"),
                 numerics="Inductor-fused HF graph per exact shape: fp32 math, HF's rounding points"),
    CompiledImpl("torch_compile_dynamic", "torch.compile(HF, dynamic tokens)", "torch", _load_compile_dynamic,
                 devices=("cpu", "cuda"), dtypes=ALL_DTYPES, requires=("torch",), color="#c49c94", dynamic=True,
                 packages=("torch", "triton"),
                 numerics="Inductor-fused HF graph with a dynamic token dimension (as vLLM compiles): "
                          "fp32 math, HF's rounding points"),
]
