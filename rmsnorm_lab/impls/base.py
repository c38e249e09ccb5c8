"""What an implementation is: a name, whether it can run here (and why not), a call, and what it
knows about itself (role, colour, packages, provenance, the inputs it cannot take, compile-ahead jobs)."""
from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from typing import Callable


@dataclass(frozen=True)
class Support:
    ok: bool
    reason: str = ""
    fault: bool = False         # a refusal because the input is known to fault the GPU context

    @classmethod
    def yes(cls):
        return cls(True, "")

    @classmethod
    def no(cls, reason: str, fault: bool = False):
        if not reason:
            raise ValueError("Support.no: a refusal needs a reason")
        return cls(False, reason, fault)

    def __bool__(self):
        return self.ok


def has_module(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def cuda_available() -> bool:
    if not has_module("torch"):
        return False
    import torch
    return torch.cuda.is_available()



def missing_here(requires, devices, device: str) -> list[str]:
    """Why something that needs the modules ``requires`` and runs on ``devices`` cannot run on ``device``
    here: one reason per missing module, and the device's (empty list: nothing missing)."""
    dev = str(device).split(":")[0]
    reasons = [f"{mod.split('.')[0]} not installed" for mod in requires if not has_module(mod)]
    if dev not in devices:
        reasons.append("needs " + " or ".join(d.upper() for d in devices))
    elif dev == "cuda" and not cuda_available():
        reasons.append("needs CUDA (no GPU visible to torch)")
    return reasons

@dataclass
class Impl:
    """One RMSNorm implementation.

    ``load()`` returns ``fn(x, weight, residual=None, eps=1e-6)`` returning
    ``out`` or ``(out, new_residual)``. When ``inplace_residual`` is true the
    fused-add path writes ``out`` into ``x`` and the new residual into
    ``residual`` (and returns those tensors), as vLLM and FlashInfer do.
    """
    name: str
    label: str
    family: str
    loader: Callable[[], Callable]
    devices: tuple = ("cuda",)
    dtypes: tuple = ("float32", "float16", "bfloat16")
    requires: tuple = ()                # importable modules it needs
    inplace_residual: bool = False
    numerics: str = ""                  # where it rounds, how it accumulates
    extra_check: Callable[[], Support] | None = None
    role: str = "peer"                  # "baseline" (speedups are measured against it), "ours", "peer"
    color: str = ""                     # plot colour
    packages: tuple = ()                # distributions whose versions are its provenance
    case_check: Callable | None = None  # (case, device) -> Support: inputs it is known to fail on
    compile_key: Callable | None = None  # case -> key: cases of one key share a JIT compile (checks split by it)
    load_builds: bool = False           # load() may build native code (nvcc): its child processes start first
    _fn: Callable | None = field(default=None, repr=False)
    _load_error: str | None = field(default=None, repr=False)

    def available(self, device: str = "cuda") -> Support:
        """Can it run on this device kind here? When not, every reason why."""
        reasons = missing_here(self.requires, self.devices, device)
        if self.extra_check is not None:
            s = self.extra_check()
            if not s:
                reasons.insert(0, s.reason)
        if not reasons and self._load_error:
            reasons.append(self._load_error)
        return Support.no("; ".join(reasons)) if reasons else Support.yes()

    def supports(self, case_or_dtype, device: str = "cuda") -> Support:
        """Can it take this input here? ``case_or_dtype``: a ``cases.Case`` (dtypes of x, weight and
        residual, and what the entry knows it fails on) or a dtype name. The reason is never empty."""
        s = self.available(device)
        if not s:
            return s
        if isinstance(case_or_dtype, str):
            return self._dtype_ok(case_or_dtype, device)
        case = case_or_dtype
        for what, dt in (("x", case.dtype), ("weight", case.w_dtype), ("residual", case.r_dtype)):
            if what == "residual" and not case.residual:
                continue
            s = self._dtype_ok(dt, device)
            if not s:
                return s if what == "x" else Support.no(f"{what} {s.reason}")
        if case.weight_device and str(device).split(":")[0] != case.weight_device:
            return Support.no(f"weight on {case.weight_device} while x is on {device}: "
                              "needs every tensor on one device")
        if self.case_check is not None:
            s = self.case_check(case, device)
            if not s:
                return s
        return Support.yes()

    def _dtype_ok(self, dtype: str, device) -> Support:
        if dtype not in self.dtypes:
            return Support.no(f"{dtype} not supported (supports {', '.join(self.dtypes)})")
        if dtype == "bfloat16" and str(device).startswith("cpu") and "bf16-cpu" in self.numerics:
            return Support.no("no bf16 on CPU")
        return Support.yes()

    def provenance(self) -> dict:
        """What a result of this entry was measured with: {"versions": {distribution: version}} and,
        where it matters, which code path ran."""
        return {"versions": {p: package_version(p) for p in self.packages}}

    def prewarm_jobs(self, cases, device: str) -> list:
        """Picklable jobs (tuples starting with this entry's name) that compile ahead for ``cases``."""
        return []

    def run_prewarm_job(self, job) -> None:
        """Run one of ``prewarm_jobs``' jobs (in a spawned worker)."""

    def load(self) -> Callable:
        """Import the library and return the call; the reason is kept if it fails."""
        if self._fn is None:
            try:
                self._fn = self.loader()
            except Exception as e:  # noqa: BLE001 - any failure becomes a reason
                self._load_error = f"failed to load: {type(e).__name__}: {e}".strip()[:500]
                raise
        return self._fn


def package_version(dist: str) -> str | None:
    """The installed version of a distribution, or None."""
    import importlib.metadata as md
    try:
        return md.version(dist)
    except md.PackageNotFoundError:
        return None


# why an entry cannot take a misaligned tensor (``.format(which)``: x, residual or weight); FlashInfer and vLLM share it
MISALIGNED_FAULT = "faults ('CUDA error: misaligned address') when {} does not start on a 16-byte boundary"
