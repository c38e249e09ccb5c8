"""A test-only implementation, ``crashy``: HF RMSNorm that misbehaves at chosen hidden sizes.

``probe_support(..., imports=[PATH])`` registers it here and in the support matrix's children
(``rmsnorm_lab.isolate.import_extra`` registers a module's ``IMPLS``). Its table (hidden -> action):
abort the process, refuse (raise), answer wrong (x 1.5), hang, or fault (an illegal memory access
on CUDA; an abort on CPU).
"""
import os
import time

from rmsnorm_lab.impls.base import Impl

NAME = "crashy"
PATH = os.path.abspath(__file__)
ACTIONS = {127: "abort", 1: "refuse", 5120: "wrong", 129: "hang", 131: "fault"}


def _cuda_fault(x):
    """Read far out of bounds on the GPU: an illegal memory access, as a broken peer would make."""
    import torch
    import triton
    import triton.language as tl

    @triton.jit
    def _oob(X):
        v = tl.load(X + (1 << 40))
        tl.store(X, v)
    _oob[(1,)](x)
    torch.cuda.synchronize()


def _load():
    from rmsnorm_lab.impls.torch_impls import hf_rmsnorm

    def crashy_rmsnorm(x, weight, residual=None, eps: float = 1e-6):
        action = ACTIONS.get(x.shape[-1])
        if action == "abort" or (action == "fault" and not x.is_cuda):
            os.abort()
        if action == "fault":
            _cuda_fault(x)
        if action == "hang":
            time.sleep(3600)
        if action == "refuse":
            raise ValueError(f"x: crashy refuses hidden={x.shape[-1]}")
        got = hf_rmsnorm(x, weight, residual, eps)
        if action == "wrong":
            return tuple(t * 1.5 for t in got) if isinstance(got, tuple) else got * 1.5
        return got
    return crashy_rmsnorm


IMPLS = [Impl(NAME, "test: aborts / refuses / wrong / hangs on chosen sizes", "test", _load,
            devices=("cpu", "cuda"), dtypes=("float32", "float16", "bfloat16", "float64"), requires=("torch",),
            numerics="HF semantics, except where it misbehaves on purpose")]
