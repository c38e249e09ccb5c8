"""The registry: every implementation the lab knows, by name."""
from __future__ import annotations

from .base import Impl, Support

_REGISTRY: dict[str, Impl] | None = None

ORDER = ["huggingface", "torch", "torch_compile", "torch_compile_dynamic", "flashinfer", "flashinfer_cuda", "vllm", "liger", "quack", "triton"]


def registry() -> dict[str, Impl]:
    """name -> Impl, in a stable order (the baseline first: speedups are measured against it)."""
    global _REGISTRY
    if _REGISTRY is None:
        from . import flashinfer, liger, quack, torch_impls, triton_lab, vllm
        impls = {}
        for mod in (torch_impls, flashinfer, vllm, liger, quack, triton_lab):
            for impl in mod.IMPLS:
                impls[impl.name] = impl
        _REGISTRY = {n: impls[n] for n in ORDER if n in impls}
    return _REGISTRY


def get_impl(name: str) -> Impl:
    from ..validate import suggest
    reg = registry()
    if name not in reg:
        raise KeyError(f"impls: unknown implementation {name!r}; known: {', '.join(reg)}{suggest(name, reg)}")
    return reg[name]


def register(impl: Impl) -> Impl:
    """Add an entry (e.g. a test's implementation) to the registry; returns it."""
    registry()[impl.name] = impl
    return impl


def by_role(role: str) -> list[str]:
    """Names of the entries with this role ("baseline", "ours", "peer"), in registry order."""
    return [n for n, impl in registry().items() if impl.role == role]


def resolve_names(names) -> list[str]:
    """Validate a list (or comma-separated string, or 'all') of implementation names."""
    reg = registry()
    if names is None or names == "all" or names == ["all"]:
        return list(reg)
    if isinstance(names, str):
        names = [n for n in names.replace(",", " ").split() if n]
    out = []
    for n in names:
        get_impl(n)
        if n not in out:
            out.append(n)
    if not out:
        raise ValueError("impls: expected at least one implementation name")
    return out


def load_available(names, device: str = "cuda", log=print) -> dict:
    """name -> (callable, writes its inputs in place) for each name that can run on ``device``; the
    others are left out with their reason passed to ``log`` (the GPU scripts' subjects)."""
    out = {}
    for n in names:
        impl = get_impl(n)
        s = impl.available(device)
        if s:
            out[n] = (impl.load(), impl.inplace_residual)
        else:
            log(f"  {n} skipped: {s.reason}")
    return out


def list_impls(device: str = "cuda"):
    """A table (list of dicts) of every implementation and whether it can run on ``device`` here."""
    rows = []
    for impl in registry().values():
        s = impl.available(device)
        rows.append({"impl": impl.name, "label": impl.label, "available": s.ok, "reason": s.reason,
                     "dtypes": ",".join(impl.dtypes), "inplace_residual": impl.inplace_residual,
                     "numerics": impl.numerics, "role": impl.role})
    return rows


__all__ = ["Impl", "Support", "registry", "register", "by_role", "get_impl", "resolve_names", "load_available",
           "list_impls"]
