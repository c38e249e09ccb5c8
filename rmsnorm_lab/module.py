"""``RMSNorm``: an nn.Module backed by our Triton training kernels (forward and backward).

    norm = rmsnorm_lab.RMSNorm(4096, eps=1e-6, dtype=torch.bfloat16, device="cuda")
    out = norm(x)                          # as HuggingFace's LlamaRMSNorm returns
    out, residual = norm(x, residual)      # as vLLM's RMSNorm returns: residual = x + residual

Math in fp32 with one rounding at the store (the fused add normalizes the fp32 sum
and returns the sum rounded to the residual's dtype). The weight may have another
dtype than ``x`` (e.g. a float32 master weight with bfloat16 activations): the
output has ``x``'s dtype, the weight's gradient the weight's dtype.

``backend``: ``"triton"`` (our kernels: CUDA tensors, or CPU tensors under
``TRITON_INTERPRET=1``), ``"torch"`` (the same math in plain PyTorch ops, any
device) or ``"auto"`` (our kernels where they can run, else the torch path, said once
with a warning). ``backend_in_use`` names what the last call ran.
"""
from __future__ import annotations

import warnings

import torch
from torch import nn

BACKENDS = ("auto", "triton", "torch")


def torch_rmsnorm(x, weight, residual=None, eps: float = 1e-6):
    """The torch path: the kernels' numerics (fp32 math, one rounding) in PyTorch ops, differentiable."""
    s = x.float()
    new_res = None
    if residual is not None:
        s = s + residual.float()
        new_res = s.to(residual.dtype)
    out = (s * torch.rsqrt(s.pow(2).mean(-1, keepdim=True) + eps) * weight.float()).to(x.dtype)
    return out if residual is None else (out, new_res)


class RMSNorm(nn.Module):
    """RMSNorm over the last dimension with a learnable ``weight`` (initialized to ones).

    forward(x, residual=None) -> out, or (out, new_residual) when a residual is given.
    """

    def __init__(self, hidden_size: int, eps: float = 1e-6, *, dtype=None, device=None, backend: str = "auto"):
        super().__init__()
        from .validate import check_eps, check_positive_int
        self.hidden_size = check_positive_int("hidden_size", hidden_size)
        self.eps = check_eps(eps)
        if backend not in BACKENDS:
            raise ValueError(f"backend: expected one of {', '.join(BACKENDS)}, got {backend!r}")
        self.backend = backend
        self.weight = nn.Parameter(torch.ones(self.hidden_size, dtype=dtype, device=device))
        self.backend_in_use: str | None = None
        self._warned = False

    def extra_repr(self) -> str:
        return f"{self.hidden_size}, eps={self.eps}, backend={self.backend!r}"

    def _pick(self, x) -> str:
        """'triton' or 'torch' for a call on x; auto falls back to torch (with a one-time warning)."""
        if self.backend == "torch":
            return "torch"
        from .device import interpreter_on
        runs = x.is_cuda or (x.device.type == "cpu" and interpreter_on())
        if self.backend == "triton" or runs:
            return "triton"     # "triton" on a device it cannot run on raises a clear error in the op
        if not self._warned:
            self._warned = True
            warnings.warn(f"RMSNorm: our Triton kernels need CUDA (or TRITON_INTERPRET=1 for CPU tensors); "
                          f"tensors on {x.device} use the torch path", stacklevel=3)
        return "torch"

    def forward(self, x, residual=None):
        use = self._pick(x)
        if use == "torch":
            self.backend_in_use = "torch"
            return torch_rmsnorm(x, self.weight, residual, self.eps)
        from .kernels.training import rmsnorm
        self.backend_in_use = "triton" if x.is_cuda else "triton-interpreter"
        return rmsnorm(x, self.weight, residual, self.eps)
