"""rmsnorm-lab: which RMSNorm implementation is correct and fastest for my shapes on my GPU?

The package imports nothing heavy (no torch, no peers) until a function is used,
so ``import rmsnorm_lab`` works on any machine.
"""
from __future__ import annotations

import importlib

__version__ = "0.1.0"

# public name -> module that defines it (resolved on first access)
_LAZY = {
    # the seed's API (vLLM benchmarks/kernels/benchmark_rmsnorm.py)
    "rmsnorm_naive": "seed",
    "rmsnorm_flashinfer": "seed",
    "rmsnorm_vllm": "seed",
    "calculate_diff": "seed",
    "get_benchmark": "seed",
    # the lab's own API
    "run_sweep": "sweep",
    "SweepConfig": "sweep",
    "check_all": "check",
    "check_impl": "check",
    "reference": "reference",
    "registry": "impls",
    "get_impl": "impls",
    "list_impls": "impls",
    "load_results": "results",
    "triton_rmsnorm": "kernels.rmsnorm",
    "probe_support": "probe",
    "RMSNorm": "module",
}

__all__ = sorted(_LAZY) + ["__version__"]


def __getattr__(name: str):
    mod = _LAZY.get(name)
    if mod is None:
        raise AttributeError(f"module 'rmsnorm_lab' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"rmsnorm_lab.{mod}"), name)
    globals()[name] = value
    return value


def __dir__():
    return __all__
