"""quack's CuTe-DSL RMSNorm (Hopper and newer)."""
from __future__ import annotations

from .base import Impl, Support, cuda_available


def _load():
    from quack.rmsnorm import rmsnorm_fwd

    def quack_rmsnorm(x, weight, residual=None, eps: float = 1e-6):
        shape = x.shape
        x2 = x.reshape(-1, shape[-1])
        r2 = residual.reshape(-1, shape[-1]) if residual is not None else None
        out, res_out, _ = rmsnorm_fwd(x2, weight, residual=r2, eps=eps)
        if residual is None:
            return out.view(shape)
        return out.view(shape), res_out.view(shape)
    return quack_rmsnorm


def _check() -> Support:
    if not cuda_available():
        return Support.yes()   # the device check reports it
    import torch
    major, _ = torch.cuda.get_device_capability()
    return Support.yes() if major >= 9 else Support.no("needs sm90 or newer")


def _compile_key(case):
    """quack JIT-compiles per dtypes, width, residual and power-of-two bucket of rows."""
    return (case.dtype, case.w_dtype, case.r_dtype if case.residual else "", case.hidden,
            1 << max(0, case.tokens - 1).bit_length())


IMPLS = [
    Impl("quack", "quack", "quack", _load, dtypes=("float32", "float16", "bfloat16"), compile_key=_compile_key,
         requires=("quack", "cutlass"), extra_check=_check, color="#ff7f0e",
         packages=("quack-kernels", "nvidia-cutlass-dsl"),
         numerics="fp32 math, one rounding at the store; fused add keeps the sum in fp32"),
]
