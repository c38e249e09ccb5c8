"""Picking the device, and what the device can do."""
from __future__ import annotations


def resolve_device(device: str | None = None) -> str:
    """'auto'/None -> 'cuda' when torch sees a GPU, else 'cpu'; validates explicit names."""
    import torch

    if device in (None, "", "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    d = str(device).strip().lower()
    kind = d.split(":")[0]
    if kind not in ("cpu", "cuda"):
        raise ValueError(f"device: expected 'auto', 'cpu', 'cuda' or 'cuda:N', got {device!r}")
    if kind == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError(f"device: {device!r} requested but torch sees no CUDA GPU "
                               f"(torch {torch.__version__}); use --device cpu or auto")
        if ":" in d:
            idx = d.split(":", 1)[1]
            if not idx.isdigit() or int(idx) >= torch.cuda.device_count():
                raise ValueError(f"device: {device!r} is not a visible GPU (found {torch.cuda.device_count()})")
    return d


def device_name(device: str) -> str:
    import torch

    if device.startswith("cuda"):
        return torch.cuda.get_device_name(torch.device(device))
    import platform
    return f"CPU ({platform.machine()}, {platform.processor() or 'unknown'})"


def slug(text: str) -> str:
    """A folder-safe name: 'NVIDIA H100 80GB HBM3' -> 'nvidia-h100-80gb-hbm3'."""
    import re
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "unknown"
