"""Input checks shared by the API, the CLI and the notebooks.

Every check raises an exception of a fitting type whose message names the
argument, what was given and what is expected: ``TypeError`` for a wrong type or
dtype, ``ValueError`` for a wrong value, shape or device pairing,
``UnsupportedError`` (a ``RuntimeError``) when an implementation cannot run the
inputs here (``UnsupportedDtypeError`` is also a ``TypeError``).

NaN and Inf are not errors: they propagate the way the float64 reference does
(a row holding NaN gives NaN; a row holding +-Inf has rstd 0, so its Inf
elements give NaN and its finite elements give 0).
"""
from __future__ import annotations

import difflib
import math
import numbers
import warnings


class UnsupportedError(RuntimeError):
    """An implementation cannot run these inputs here (the reason is the message); sweeps record a skip."""


class UnsupportedDtypeError(UnsupportedError, TypeError):
    """An implementation does not take this dtype (e.g. float64); also a TypeError."""

FLOAT_DTYPES = ("float32", "float16", "bfloat16", "float64")
# what sweeps, the CLI and the notebooks take: all four (implementations without float64 skip it with a reason)
SWEEP_DTYPES = FLOAT_DTYPES
DTYPE_ALIASES = {
    "fp32": "float32", "float": "float32", "f32": "float32",
    "fp16": "float16", "half": "float16", "f16": "float16",
    "bf16": "bfloat16",
    "fp64": "float64", "double": "float64", "f64": "float64",
}


def accepted_dtypes(allowed=FLOAT_DTYPES) -> str:
    """'float32, float16, bfloat16 (or fp32, float, ...)': exactly the names ``dtype_name`` takes."""
    aliases = [a for a, c in DTYPE_ALIASES.items() if c in allowed]
    return ", ".join(allowed) + (f" (or {', '.join(aliases)})" if aliases else "")


def dtype_name(dtype, allowed=FLOAT_DTYPES) -> str:
    """Canonical name ('bfloat16', ...) of a dtype given as a string or torch.dtype.

    ``allowed``: the canonical names accepted (``SWEEP_DTYPES`` for sweeps: no
    float64). A "did you mean" hint only names accepted dtypes.
    """
    if isinstance(dtype, str):
        key = dtype.strip().lower().removeprefix("torch.")
        key = DTYPE_ALIASES.get(key, key)
        if key in FLOAT_DTYPES and key not in allowed:
            what = "a sweep dtype" if tuple(allowed) == SWEEP_DTYPES else "accepted here"
            raise ValueError(f"dtype: {dtype!r} is not {what}; expected one of {accepted_dtypes(allowed)}")
        if key not in allowed:
            close = difflib.get_close_matches(key, list(allowed), n=2, cutoff=0.6)
            raise ValueError(f"dtype: unknown dtype {dtype!r}; expected one of {accepted_dtypes(allowed)}"
                             + (f"; did you mean {' or '.join(map(repr, close))}?" if close else ""))
        return key
    name = str(dtype).removeprefix("torch.")
    if name not in allowed:
        raise TypeError(f"dtype: expected a floating dtype ({', '.join(allowed)}), got {dtype}")
    return name


def check_dtypes(values, name: str = "dtypes") -> list[str]:
    """A sweep's dtypes (one name or a list) as canonical names, duplicates dropped."""
    if isinstance(values, str) or not hasattr(values, "__iter__"):
        values = [values]
    out = list(dict.fromkeys(dtype_name(v, SWEEP_DTYPES) for v in values))
    if not out:
        raise ValueError(f"{name}: expected at least one dtype of {accepted_dtypes(SWEEP_DTYPES)}, got none")
    return out


def check_modes(modes, device: str, name: str = "modes") -> list[str]:
    """Timing modes for ``device`` (a resolved device name).

    None -> the device's default (cold + graph on CUDA, cold + eager on CPU); a
    string may hold several names. ValueError for an unknown mode, and for
    ``graph`` alone on a device without CUDA (nothing could be measured; next to
    other modes its rows are skips with the reason).
    """
    from .timing import MODES

    if modes is None:
        return ["cold", "graph"] if str(device).startswith("cuda") else ["cold", "eager"]
    if isinstance(modes, str):
        modes = [m for m in modes.replace(",", " ").split() if m]
    modes = list(dict.fromkeys(modes))
    if not modes:
        raise ValueError(f"{name}: expected at least one timing mode of {', '.join(MODES)}, got none")
    for m in modes:
        if m not in MODES:
            raise ValueError(f"{name}: unknown timing mode {m!r}; expected one of {', '.join(MODES)}")
    if modes == ["graph"] and not str(device).startswith("cuda"):    # with other modes: graph rows are skips
        raise ValueError(f"{name}: graph timing needs CUDA (CUDA graphs), device is {device}; "
                         f"nothing would be measured: use cold or eager there")
    return modes


def torch_dtype(dtype):
    import torch
    return getattr(torch, dtype_name(dtype))


def check_eps(eps) -> float:
    """eps as a float; TypeError unless a real number, ValueError unless finite and > 0."""
    if isinstance(eps, bool) or not isinstance(eps, numbers.Real):
        raise TypeError(f"eps: expected a positive float, got {eps!r} ({type(eps).__name__})")
    eps = float(eps)
    if math.isnan(eps) or math.isinf(eps) or eps <= 0:
        raise ValueError(f"eps: expected a positive finite float, got {eps!r}")
    return eps


def check_positive_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        else:
            raise TypeError(f"{name}: expected a positive integer, got {value!r} ({type(value).__name__})")
    value = int(value)
    if value <= 0:
        raise ValueError(f"{name}: expected a positive integer, got {value}")
    return value


def check_nonneg_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name}: expected a non-negative integer, got {value!r} ({type(value).__name__})")
    if value < 0:
        raise ValueError(f"{name}: expected a non-negative integer, got {value}")
    return int(value)


def check_workers(name: str, value) -> int:
    """A worker-process count: -1 (auto), 0 (off) or a positive number."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name}: expected a number of worker processes (-1: auto, 0: off), "
                        f"got {value!r} ({type(value).__name__})")
    if value < -1:
        raise ValueError(f"{name}: expected a number of worker processes (-1: auto, 0: off), got {value}")
    return int(value)


def check_seed(seed, name: str = "seed") -> int:
    return check_nonneg_int(name, seed)


def check_positive_float(name: str, value, unit: str = "") -> float:
    """A positive finite number (int or float) as float; TypeError / ValueError naming ``name``."""
    of = f" of {unit}" if unit else ""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name}: expected a positive number{of}, got {value!r} ({type(value).__name__})")
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name}: expected a positive finite number{of}, got {value!r}")
    return float(value)


def check_bool_list(name: str, values) -> list[bool]:
    """One boolean or a list of them (e.g. the residual variants), duplicates dropped."""
    if isinstance(values, bool):
        values = [values]
    if isinstance(values, str) or not hasattr(values, "__iter__"):
        raise TypeError(f"{name}: expected a list of booleans, got {values!r} ({type(values).__name__})")
    values = list(values)
    if not values:
        raise ValueError(f"{name}: expected at least one boolean, got an empty list")
    for v in values:
        if not isinstance(v, bool):
            raise TypeError(f"{name}: expected booleans, got {v!r} ({type(v).__name__})")
    return list(dict.fromkeys(values))


def check_device_name(name: str, value) -> str:
    """'auto', 'cpu', 'cuda' or 'cuda:N' (lower-cased); whether that device exists is device.resolve_device's."""
    if not isinstance(value, str):
        raise TypeError(f"{name}: expected 'auto', 'cpu', 'cuda' or 'cuda:N', got {value!r} ({type(value).__name__})")
    d = value.strip().lower()
    kind, _, idx = d.partition(":")
    if d != "auto" and (kind not in ("cpu", "cuda") or (":" in d and not idx.isdigit())):
        raise ValueError(f"{name}: expected 'auto', 'cpu', 'cuda' or 'cuda:N', got {value!r}")
    return d


def check_path(name: str, value, allow_none: bool = True) -> str | None:
    import os
    if value is None and allow_none:
        return None
    if not isinstance(value, (str, os.PathLike)):
        raise TypeError(f"{name}: expected a directory path (str){' or None' if allow_none else ''}, "
                        f"got {value!r} ({type(value).__name__})")
    return os.fspath(value)


def check_bool(name: str, value) -> bool:
    if not isinstance(value, bool) and type(value).__name__ != "bool_":      # numpy.bool_ too
        raise TypeError(f"{name}: expected True or False, got {value!r} ({type(value).__name__})")
    return bool(value)


def check_int_list(name: str, values) -> list[int]:
    if isinstance(values, (int, float)) and not isinstance(values, bool):
        values = [values]
    if isinstance(values, str) or not hasattr(values, "__iter__"):
        raise TypeError(f"{name}: expected a list of positive integers, got {values!r}")
    out = [check_positive_int(name, v) for v in values]
    if not out:
        raise ValueError(f"{name}: expected at least one value, got an empty list")
    return out


def check_inputs(x, weight, residual=None, eps: float = 1e-6, *, name: str = "x", mixed_dtypes: bool = False):
    """Validate RMSNorm inputs; returns eps as float. Raises TypeError / ValueError.

    ``x``: a floating tensor (..., hidden) with hidden >= 1 (zero tokens are fine:
    callers return an empty result); ``weight``: (hidden,), same dtype and device;
    ``residual``: None or the same shape, dtype and device as ``x``. With
    ``mixed_dtypes=True`` (a caller that computes in float32 whatever the input
    dtypes) ``weight`` and ``residual`` may have any floating dtype. Non-contiguous
    tensors are accepted (implementations copy them, see ``contiguous_rows``).
    NaN / Inf values are accepted and propagate as in the float64 reference.
    """
    import torch

    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"{name}: expected a floating-point tensor (float32, float16, bfloat16), got {x.dtype}")
    if x.dim() < 1:
        raise ValueError(f"{name}: expected at least 1 dimension (..., hidden), got a 0-d tensor")
    if x.shape[-1] == 0:
        raise ValueError(f"{name}: hidden dimension (last) has size 0; expected hidden >= 1, shape {tuple(x.shape)}")
    if not isinstance(weight, torch.Tensor):
        raise TypeError(f"weight: expected a torch.Tensor, got {type(weight).__name__}")
    if weight.dim() != 1 or weight.shape[0] != x.shape[-1]:
        raise ValueError(f"weight: expected shape ({x.shape[-1]},) to match {name}'s hidden size, "
                         f"got {tuple(weight.shape)}")
    if mixed_dtypes:
        _check_float("weight", weight)
    elif weight.dtype != x.dtype:
        raise TypeError(f"weight: expected dtype {x.dtype} (same as {name}), got {weight.dtype}")
    if weight.device != x.device:
        raise ValueError(f"weight: expected device {x.device} (same as {name}), got {weight.device}"
                         + _two_gpus(x.device, weight.device))
    if residual is not None:
        if not isinstance(residual, torch.Tensor):
            raise TypeError(f"residual: expected a torch.Tensor or None, got {type(residual).__name__}")
        if residual.shape != x.shape:
            raise ValueError(f"residual: expected shape {tuple(x.shape)} (same as {name}), got {tuple(residual.shape)}")
        if mixed_dtypes:
            _check_float("residual", residual)
        elif residual.dtype != x.dtype:
            raise TypeError(f"residual: expected dtype {x.dtype} (same as {name}), got {residual.dtype}")
        if residual.device != x.device:
            raise ValueError(f"residual: expected device {x.device} (same as {name}), got {residual.device}"
                             + _two_gpus(x.device, residual.device))
    return check_eps(eps)


def _check_float(what, t) -> None:
    if not t.is_floating_point():
        raise TypeError(f"{what}: expected a floating-point tensor (float32, float16, bfloat16), got {t.dtype}")


def _two_gpus(a, b) -> str:
    if a.type == b.type == "cuda":
        return "; tensors on two different GPUs: move them to one device first"
    return ""


def check_support(impl, x, name: str = "x") -> None:
    """Raise unless ``impl`` can run on ``x``'s dtype and device here.

    UnsupportedDtypeError (a TypeError) for a dtype it does not take (e.g.
    float64), UnsupportedError (a RuntimeError) otherwise, e.g. "needs CUDA"
    for a CPU tensor given to a CUDA-only implementation.
    """
    dtype = str(x.dtype).removeprefix("torch.")
    device = str(x.device)
    s = impl.available(device)
    if not s:
        raise UnsupportedError(f"{name}: {impl.name} cannot run on a tensor on {device}: {s.reason}")
    s = impl.supports(dtype, device)
    if not s:
        raise UnsupportedDtypeError(f"{name}: {impl.name} cannot take dtype {x.dtype}: {s.reason}")


_warned_noncontig: set[str] = set()


def reset_warnings() -> None:
    """Forget which one-time warnings (``contiguous_rows``) this process gave: they are given again."""
    _warned_noncontig.clear()


def contiguous_rows(t, what: str, impl: str = ""):
    """Return ``t`` with a unit last stride; copy once with a one-time warning otherwise."""
    if t is None or t.is_contiguous():
        return t
    key = f"{impl}:{what}"
    if key not in _warned_noncontig:
        _warned_noncontig.add(key)
        warnings.warn(f"{what} is not contiguous (strides {tuple(t.stride())}); "
                      f"{impl or 'rmsnorm_lab'} copies it to a contiguous tensor", stacklevel=3)
    return t.contiguous()


def suggest(name: str, choices) -> str:
    hint = difflib.get_close_matches(name, list(choices), n=3, cutoff=0.5)
    return f"; did you mean {', '.join(map(repr, hint))}?" if hint else ""


# ---------------------------------------------------------------- command lines

import argparse as _argparse  # noqa: E402  (kept beside the two helpers every command line uses)

USER_ERRORS = (ValueError, TypeError, KeyError, OSError, RuntimeError)


class OneLineParser(_argparse.ArgumentParser):
    """argparse whose errors are one line and exit status 2 (no usage block, no traceback)."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {' '.join(message.split())}\n")


def exit_with_error(prog: str, e: BaseException) -> int:
    """Print ``e`` as one line naming the command and return the exit status of a user error (2)."""
    import sys
    msg = e.args[0] if isinstance(e, KeyError) and e.args else str(e)
    print(f"{prog}: error: {' '.join(str(msg).split()) or type(e).__name__}", file=sys.stderr)
    return 2
