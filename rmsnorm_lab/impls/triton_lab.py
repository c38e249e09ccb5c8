"""The lab's own Triton kernel as a registry entry."""
from __future__ import annotations

from .base import Impl, Support

EPS = 1e-6


def _load():
    from ..kernels.launch import fast
    # the cached per-call path; it checks through its plan key and sends what it cannot take to the
    # checked path (CPU tensors under the interpreter, strided or misaligned views) or refuses it
    return fast


def _devices():
    from ..device import interpreter_on
    return ("cpu", "cuda") if interpreter_on() else ("cuda",)


def compile_config(hidden: int, residual: bool, dtype: str, config, device: str = "cuda"):
    """Compile (and launch once, on a few rows) our kernel for one config on ``device``; returns the compiled
    kernel (its ``n_regs``, ``metadata.shared``), which does not depend on the row count."""
    import torch

    from ..kernels.config import as_config
    from ..kernels.launch import launch
    cfg = as_config(config)
    dt = getattr(torch, dtype)
    x = torch.randn(max(1, cfg.rows), hidden, dtype=dt, device=device)
    w = torch.randn(hidden, dtype=dt, device=device)
    r = torch.randn_like(x) if residual else None
    got = launch(x, w, torch.empty_like(x), r, None if r is None else torch.empty_like(x), EPS, cfg)
    return got[0] if got else None


class _TritonImpl(Impl):
    def available(self, device: str = "cuda") -> Support:
        dev = str(device).split(":")[0]
        self.devices = _devices()
        s = super().available(device)
        if not s and dev == "cpu" and "needs CUDA" in s.reason:
            return Support.no(s.reason.replace("needs CUDA", "needs CUDA (or TRITON_INTERPRET=1 for CPU tensors)"))
        return s

    def provenance(self) -> dict:
        """The Triton version and which launch table runs on this machine's GPU (tables.table_info)."""
        from ..kernels.launch import device_name_of
        from ..kernels.tables import table_info
        gpu = None
        try:
            import torch
            gpu = device_name_of("cuda") if torch.cuda.is_available() else None
        except Exception:  # noqa: BLE001 - provenance never fails a run
            pass
        return {**super().provenance(), "launch_table": table_info(gpu)}

    def prewarm_jobs(self, cases, device="cuda") -> list:
        """("triton", hidden, residual, dtype, LaunchConfig): each config the table picks for ``cases``, once."""
        if not str(device).startswith("cuda"):
            return []
        from ..kernels.launch import device_name_of
        from ..kernels.tables import pick
        import torch
        name = device_name_of(device) if torch.cuda.is_available() else None    # the table the GPU reads
        return sorted({(self.name, c.hidden, c.residual, c.dtype, pick(c.hidden, c.tokens, c.itemsize, c.residual,
                                                                       name)) for c in cases})

    def run_prewarm_job(self, job) -> None:
        """Compile one job's config on the current GPU (fills Triton's on-disk cache)."""
        _, hidden, residual, dtype, cfg = job
        compile_config(hidden, residual, dtype, cfg)


_ENTRY = _TritonImpl("triton", "rmsnorm-lab Triton", "triton", _load, devices=("cpu", "cuda"),
                     requires=("triton",), inplace_residual=True, role="ours", color="#000000", packages=("triton",),
                     numerics="fp32 math, one rounding at the store; fused add normalizes the fp32 sum "
                              "and writes out/new residual in place (like vLLM/FlashInfer); weight and "
                              "residual may be any float dtype; CPU via the interpreter")
IMPLS = [_ENTRY]
