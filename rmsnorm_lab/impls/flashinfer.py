"""FlashInfer: the default path a user gets (CuTe-DSL when nvidia-cutlass-dsl is present) and its CUDA JIT kernels."""
from __future__ import annotations

from .base import MISALIGNED_FAULT, Impl, Support, has_module


def _as2d(t):
    return t.reshape(-1, t.shape[-1])


def _load_default():
    import flashinfer.norm as fn

    def flashinfer_rmsnorm(x, weight, residual=None, eps: float = 1e-6):
        if residual is None:
            return fn.rmsnorm(_as2d(x), weight, eps).view(x.shape)
        fn.fused_add_rmsnorm(_as2d(x), _as2d(residual), weight, eps)   # in place
        return x, residual
    return flashinfer_rmsnorm


def _load_cuda():
    import torch
    import flashinfer.norm as fn
    from flashinfer.utils import device_support_pdl

    mod = fn.get_norm_module()      # JIT-builds the CUDA kernels on first use (nvcc)
    pdl: dict = {}

    def flashinfer_cuda_rmsnorm(x, weight, residual=None, eps: float = 1e-6):
        dev = x.device
        if dev not in pdl:
            pdl[dev] = device_support_pdl(dev)
        if residual is None:
            out = torch.empty_like(x)
            mod.rmsnorm(_as2d(out), _as2d(x), weight, eps, pdl[dev])
            return out
        mod.fused_add_rmsnorm(_as2d(x), _as2d(residual), weight, eps, pdl[dev])
        return x, residual
    return flashinfer_cuda_rmsnorm


def path_name() -> str:
    """Which kernel flashinfer.norm.rmsnorm runs here: 'cute-dsl' or 'cuda'."""
    if not has_module("flashinfer"):
        return "flashinfer not installed"
    import flashinfer.norm as fn
    return "cuda" if getattr(fn, "_USE_CUDA_NORM", True) else "cute-dsl"


def _cuda_limits(case, device) -> Support:
    """What FlashInfer's CUDA kernels are known to fail on (seen on an H200, flashinfer-python 0.6.x)."""
    if case.misaligned:
        return Support.no(MISALIGNED_FAULT.format(case.misaligned), fault=True)
    if case.w_dtype != case.dtype:
        return Support.no(f"a {case.w_dtype} weight with {case.dtype} x gives NaN (reads the weight as x's dtype)")
    # the support matrix's widths on an H200: 16385 passes with a residual, 65536 without; at 131072 the
    # case that ran first in a shared child faulted it (without a residual in one report, with one in the next)
    if case.hidden >= 131072:
        return Support.no(f"hidden {case.hidden}: fails with 'invalid argument' and may fault the GPU context "
                          "(seen at 131072)", fault=True)
    if case.residual and case.hidden >= 65536:
        return Support.no(f"hidden {case.hidden} with a residual: the fused add fails with 'invalid argument' "
                          "(seen at 65536)")
    return Support.yes()


def _default_limits(case, device) -> Support:
    return _cuda_limits(case, device) if path_name() == "cuda" else Support.yes()


def _compile_key(case):
    """FlashInfer's CuTe-DSL kernels compile per dtype, width and fused add (rows are symbolic);
    its CUDA kernels (without nvidia-cutlass-dsl) are one module."""
    if not has_module("cutlass"):
        return ()
    return (case.dtype, case.w_dtype, case.hidden, case.residual)


class _FlashInfer(Impl):
    def provenance(self) -> dict:
        p = super().provenance()
        p["path"] = path_name() if self.name == "flashinfer" else "cuda"
        return p


PACKAGES = ("flashinfer-python", "flashinfer-cubin", "nvidia-cutlass-dsl")
IMPLS = [
    _FlashInfer("flashinfer", "FlashInfer (default path)", "flashinfer", _load_default,
         dtypes=("float16", "bfloat16"), requires=("flashinfer",), inplace_residual=True, color="#2ca02c",
         packages=PACKAGES, case_check=_default_limits, compile_key=_compile_key,
         numerics="fp32 math, one rounding at the store; fused add keeps the sum in fp32. "
                  "CuTe-DSL kernels when nvidia-cutlass-dsl is installed, else the CUDA ones"),
    _FlashInfer("flashinfer_cuda", "FlashInfer CUDA (JIT)", "flashinfer", _load_cuda, load_builds=True,
         dtypes=("float16", "bfloat16"), requires=("flashinfer",), inplace_residual=True, color="#98df8a",
         packages=PACKAGES, case_check=_cuda_limits,
         numerics="fp32 math, vectorized CUDA kernel (norm.cuh), built by nvcc on first use"),
]
