"""What a result was measured on: GPU, drivers, library versions, commit, command."""
from __future__ import annotations

import datetime as _dt
import os
import platform
import subprocess
import sys
from pathlib import Path

from .impls.base import package_version

PACKAGES = ["torch", "triton", "numpy", "pandas"]     # the lab's own; each implementation adds its own


def impl_provenance() -> dict:
    """name -> what each implementation says it was measured with (``Impl.provenance()``)."""
    from .impls import registry

    out = {}
    for name, impl in registry().items():
        try:
            out[name] = impl.provenance()
        except Exception as e:  # noqa: BLE001 - provenance never stops a run
            out[name] = {"error": f"{type(e).__name__}: {e}"[:300]}
    return out


def git_commit() -> str | None:
    try:
        here = Path(__file__).resolve().parent
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=here, capture_output=True,
                             text=True, timeout=5)
        if out.returncode != 0:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return out.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


def source_hash() -> str:
    """sha256 (first 12 hex) of the package's sources and launch table: which code measured a result,
    also where the checkout has no .git (a copied working tree)."""
    import hashlib
    root = Path(__file__).resolve().parent
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.suffix in (".py", ".json", ".yaml") and "__pycache__" not in p.parts:
            h.update(str(p.relative_to(root)).encode())
            h.update(p.read_bytes())
    return h.hexdigest()[:12]


def launch_table_info(gpu_name: str | None = None) -> dict:
    """Which launch table our Triton kernel reads on this GPU (see kernels.tables.table_info)."""
    from .kernels.tables import table_info
    return table_info(gpu_name)


def collect(device: str, copy_gbps: float | None = None, command: str | None = None) -> dict:
    import torch

    from .device import device_name

    meta = {
        "time": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "device": device,
        "gpu_name": device_name(device),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "versions": {p: package_version(p) for p in PACKAGES},
        "impls": impl_provenance(),
        "cuda": torch.version.cuda,
        "copy_gbps": copy_gbps,
        "git_commit": git_commit() or os.environ.get("RMSNORM_LAB_GIT_COMMIT"),
        "source_sha256": source_hash(),
        "launch_table": None,
        "command": command or " ".join(sys.argv),
    }
    meta["launch_table"] = launch_table_info(meta["gpu_name"] if device.startswith("cuda") else None)
    if device.startswith("cuda"):
        p = torch.cuda.get_device_properties(torch.device(device))
        meta.update(sm_count=p.multi_processor_count, capability=f"{p.major}.{p.minor}",
                    memory_gb=round(p.total_memory / 1e9, 1),
                    l2_mb=round(getattr(p, "L2_cache_size", 0) / 1e6, 1))
        try:
            drv = subprocess.run(["nvidia-smi", "--query-gpu=driver_version,clocks.max.sm,clocks.max.mem",
                                  "--format=csv,noheader"], capture_output=True, text=True, timeout=10)
            meta["nvidia_smi"] = drv.stdout.strip()
        except (OSError, subprocess.SubprocessError):
            meta["nvidia_smi"] = None
    for prov in meta["impls"].values():     # every implementation's packages, in one place too
        meta["versions"].update(prov.get("versions", {}))
    return meta
