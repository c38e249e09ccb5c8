"""Picking the device, and what the device can do."""
from __future__ import annotations

import os
import sys
from pathlib import Path

# The sweep's default grid on a machine without a GPU. Our Triton kernel runs there
# through the Triton interpreter, thousands of times slower than on a GPU: the seed's
# grid (hidden 4096/6144, batch 1..64, seq 64..1024) would take hours, this one minutes.
CPU_GRID = {"hidden": [1024, 4096], "batch": [1], "seq": [4, 16]}


# The CUDA caching allocator's setting for the lab's own processes, unless the user set one. A sweep
# allocates and frees inputs of 0.001-8 GiB a point, hundreds of points in one process; with the
# default fixed-size segments a small tensor that outlives a point pins the rest of a large cached
# block, and a later large point (or a CUDA graph's capture, which cannot give cached blocks back)
# runs out of memory with 100+ GiB "reserved but unallocated". Expandable segments give free pages back
# at any offset. It changes where tensors live, not what a kernel reads or writes.
ALLOC_CONF = "expandable_segments:True"
_ALLOC_VARS = ("PYTORCH_CUDA_ALLOC_CONF", "PYTORCH_ALLOC_CONF")


def use_expandable_segments() -> str:
    """Set ``ALLOC_CONF`` for this process (and its children) before CUDA starts, unless an allocator
    setting is already there (the user's, or the lab's from a parent process); returns the setting the
    allocator runs with, for env.json (which of the two set it is not recorded)."""
    for var in _ALLOC_VARS:
        if os.environ.get(var):
            return f"{var}={os.environ[var]}"
    import torch
    if torch.cuda.is_initialized():
        return "the allocator's default (CUDA had started before the lab could choose)"
    os.environ["PYTORCH_CUDA_ALLOC_CONF"] = ALLOC_CONF
    setter = (getattr(torch._C, "_accelerator_setAllocatorSettings", None)        # torch 2.10+
              or getattr(getattr(torch.cuda, "memory", None), "_set_allocator_settings", None))
    if setter is not None and torch.cuda.is_available():
        try:
            setter(ALLOC_CONF)
        except Exception:  # noqa: BLE001 - the environment variable still applies when CUDA starts
            pass
    return f"PYTORCH_CUDA_ALLOC_CONF={ALLOC_CONF}"


def interpreter_on() -> bool:
    """Whether Triton kernels run on CPU tensors in this process (TRITON_INTERPRET=1)."""
    return os.environ.get("TRITON_INTERPRET") == "1"


def resolve_device(device: str | None = None) -> str:
    """'auto'/None -> 'cuda' when torch sees a GPU, else 'cpu'; validates explicit names."""
    import torch

    from .validate import check_device_name

    if device in (None, "", "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    d = check_device_name("device", str(device) if isinstance(device, torch.device) else device)
    if d == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    kind = d.split(":")[0]
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
    return f"CPU ({platform.machine() or 'unknown'}, {cpu_model()})"


def cpu_cores() -> int:
    """CPU cores this process may run on (its affinity mask, e.g. under taskset or a container's cpuset),
    else the machine's count."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return os.cpu_count() or 2


def physical_cores(cpuinfo: str = "/proc/cpuinfo") -> int | None:
    """Physical CPU cores of the machine (distinct package and core ids in /proc/cpuinfo; with
    simultaneous multithreading, fewer than the logical CPUs), or None where unknown."""
    try:
        text = Path(cpuinfo).read_text()
    except OSError:
        return None
    ids, pkg = set(), None
    for line in text.splitlines():
        key, _, val = line.partition(":")
        key = key.strip()
        if key == "physical id":
            pkg = val.strip()
        elif key == "core id":
            ids.add((pkg, val.strip()))
    return len(ids) or None


def cpu_model(cpuinfo: str = "/proc/cpuinfo") -> str:
    """The CPU's model name: /proc/cpuinfo (Linux), then platform.processor(), then 'unknown'."""
    import platform
    try:
        with open(cpuinfo, encoding="utf-8", errors="replace") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip().lower() in ("model name", "hardware", "cpu model", "processor") \
                        and value.strip() and not value.strip().isdigit():
                    return " ".join(value.split())
    except OSError:
        pass
    return platform.processor() or "unknown"


_said: set[str] = set()


def say_once(text: str | None) -> None:
    """Print ``note: text`` once per process (the CLI and the API entry points share what they said)."""
    if text and text not in _said:
        _said.add(text)
        print(f"note: {text}", flush=True)


def use_triton_interpreter_on_cpu(device: str) -> str | None:
    """On a device without CUDA, run our Triton kernel through the Triton interpreter.

    Sets TRITON_INTERPRET=1 unless it is set already (an explicit 0 is kept) and
    returns a line saying so, or why not; None on CUDA. Triton reads the variable
    when a kernel is defined, so call this before anything imports our kernel:
    the CLI, the API entry points and the notebooks do.
    """
    if str(device).startswith("cuda"):
        return None
    value = os.environ.get("TRITON_INTERPRET")
    if value is None:
        loaded = [m for m, mod in list(sys.modules.items())
                  if m.startswith("rmsnorm_lab.kernels.") and getattr(mod, "triton", None) is not None]
        if loaded:
            return ("our Triton kernel was imported before TRITON_INTERPRET=1 was set, so it cannot run on "
                    "CPU in this process; set TRITON_INTERPRET=1 before importing rmsnorm_lab's kernel")
        os.environ["TRITON_INTERPRET"] = "1"
        value = "1"
    if value == "1":
        return ("no GPU: our Triton kernel runs on CPU through the Triton interpreter (TRITON_INTERPRET=1); "
                "its times are the interpreter's, not a GPU's")
    return f"TRITON_INTERPRET={value}: our Triton kernel needs CUDA and is skipped on {device}"


def slug(text: str) -> str:
    """A folder-safe name: 'NVIDIA H100 80GB HBM3' -> 'nvidia-h100-80gb-hbm3'."""
    import re
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "unknown"
