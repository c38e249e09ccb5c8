"""Liger-Kernel's Triton RMSNorm, called as a user does (its autograd Functions)."""
from __future__ import annotations

from .base import Impl


def _load():
    import torch
    from liger_kernel.ops.fused_add_rms_norm import LigerFusedAddRMSNormFunction
    from liger_kernel.ops.rms_norm import LigerRMSNormFunction

    def liger_rmsnorm(x, weight, residual=None, eps: float = 1e-6):
        with torch.no_grad():
            if residual is None:
                return LigerRMSNormFunction.apply(x, weight, eps, 0.0, "llama", False)
            return LigerFusedAddRMSNormFunction.apply(x, residual, weight, eps, 0.0, "llama", False)
    return liger_rmsnorm


IMPLS = [
    Impl("liger", "Liger", "liger", _load, dtypes=("float32", "float16", "bfloat16"),
         requires=("liger_kernel", "triton"), color="#9467bd", packages=("liger-kernel", "triton"),
         numerics="'llama' casting: fp32 rstd, x*rstd rounded to the input dtype, then times weight"),
]
