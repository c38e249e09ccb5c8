"""Notebook parameters: one schema, clear errors for a wrong type or value.

Every notebook calls ``validate_params({...})`` right after its ``parameters``
cell, so a papermill parameter of the wrong type (``-p hidden_sizes 4096``
passes the *string* "4096") fails at once with a message naming the
parameter, the value given and what is expected.
"""
from __future__ import annotations

import math

_LIST_HINT = ("; pass lists with papermill -y 'NAME: [...]' or -f preset.yaml "
              "(papermill -p passes a string)")


def _fail(exc, name, value, expected, hint=""):
    shown = repr(value)
    if len(shown) > 120:
        shown = shown[:117] + "..."
    raise exc(f"parameter {name!r}: got {shown} ({type(value).__name__}); expected {expected}"
              + hint.replace("NAME", name))


def _int_list(name, v, example="[4096, 6144]"):
    expected = f"a list of positive integers, e.g. {example}"
    if isinstance(v, tuple):
        v = list(v)
    if not isinstance(v, list):
        _fail(TypeError, name, v, expected, _LIST_HINT)
    if not v:
        _fail(ValueError, name, v, expected)
    out = []
    for x in v:
        if isinstance(x, bool) or not isinstance(x, int):
            if isinstance(x, float) and x.is_integer():
                x = int(x)
            else:
                _fail(TypeError, name, v, expected)
        if x <= 0:
            _fail(ValueError, name, v, expected)
        out.append(x)
    return out


def _bool_list(name, v):
    expected = "a list of booleans, e.g. [false, true]"
    if isinstance(v, bool):
        return [v]
    if isinstance(v, tuple):
        v = list(v)
    if not isinstance(v, list) or not v or not all(isinstance(x, bool) for x in v):
        _fail(TypeError if not isinstance(v, list) or v else ValueError, name, v, expected,
              _LIST_HINT if isinstance(v, str) else "")
    return list(dict.fromkeys(v))


def _dtype(name, v):
    from .validate import FLOAT_DTYPES, dtype_name

    expected = "one of float32, float16, bfloat16 (or fp32/fp16/bf16)"
    if not isinstance(v, str):
        _fail(TypeError, name, v, expected)
    try:
        d = dtype_name(v)
    except (TypeError, ValueError):
        _fail(ValueError, name, v, expected)
    if d not in FLOAT_DTYPES[:3]:
        _fail(ValueError, name, v, expected)
    return d


def _dtype_list(name, v):
    expected = "a list of dtype names, e.g. [float32, float16, bfloat16]"
    if isinstance(v, tuple):
        v = list(v)
    if not isinstance(v, list) or not v:
        _fail(TypeError if not isinstance(v, list) else ValueError, name, v, expected, _LIST_HINT)
    return list(dict.fromkeys(_dtype(name, x) for x in v))


def _impls(name, v):
    from .impls import registry

    known = list(registry())
    expected = f"[all] or a list of implementation names from {known}"
    if v == "all" or v == ["all"]:
        return "all"
    if isinstance(v, tuple):
        v = list(v)
    if not isinstance(v, list) or not v:
        _fail(TypeError if not isinstance(v, list) else ValueError, name, v, expected, _LIST_HINT)
    bad = [x for x in v if x not in known]
    if bad:
        _fail(ValueError, name, v, expected + f" (unknown: {bad})")
    return list(dict.fromkeys(v))


def _modes(name, v):
    from .timing import MODES

    expected = f"[] (the device's default) or a list of timing modes from {list(MODES)}"
    if v == "auto" or v == [] or v == ["auto"]:
        return "auto"
    if isinstance(v, tuple):
        v = list(v)
    if not isinstance(v, list) or not v:
        _fail(TypeError if not isinstance(v, list) else ValueError, name, v, expected, _LIST_HINT)
    if any(m not in MODES for m in v):
        _fail(ValueError, name, v, expected)
    return list(dict.fromkeys(v))


def _mode(name, v):
    from .timing import MODES

    expected = f"'' (every mode) or one of {list(MODES)}"
    if not isinstance(v, str):
        _fail(TypeError, name, v, expected)
    if v not in ("",) + tuple(MODES):
        _fail(ValueError, name, v, expected)
    return v


def _str(name, v):
    if not isinstance(v, str):
        _fail(TypeError, name, v, "a string")
    return v


def _str_list(name, v):
    expected = "a list of strings (paths), e.g. ['reports/gpu-a/run1', 'reports/gpu-b/run1']"
    if isinstance(v, tuple):
        v = list(v)
    if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
        _fail(TypeError, name, v, expected, _LIST_HINT if isinstance(v, str) else "")
    return v


def _device(name, v):
    expected = "'auto', 'cpu', 'cuda' or 'cuda:N'"
    if not isinstance(v, str):
        _fail(TypeError, name, v, expected)
    kind = v.strip().lower().split(":")[0]
    if v.strip().lower() != "auto" and kind not in ("cpu", "cuda"):
        _fail(ValueError, name, v, expected)
    return v.strip().lower()


def _bool(name, v):
    if not isinstance(v, bool):
        _fail(TypeError, name, v, "true or false (a boolean)")
    return v


def _nonneg_int(name, v):
    if isinstance(v, bool) or not isinstance(v, int):
        _fail(TypeError, name, v, "a non-negative integer")
    if v < 0:
        _fail(ValueError, name, v, "a non-negative integer")
    return v


def _pos_float(name, v):
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        _fail(TypeError, name, v, "a positive number")
    if not math.isfinite(v) or v <= 0:
        _fail(ValueError, name, v, "a positive finite number")
    return float(v)


# name -> (checker, what it is). Names are shared across notebooks where the meaning is the same.
SCHEMA = {
    "device": (_device, "where to run"),
    "impls": (_impls, "implementations"),
    "seed": (_nonneg_int, "random seed of the inputs"),
    "eps": (_pos_float, "RMSNorm epsilon"),
    "save_dir": (_str, "results directory ('' = default)"),
    # 01_correctness
    "check_dtypes": (_dtype_list, "dtypes checked"),
    "check_hidden_sizes": (lambda n, v: _int_list(n, v, "[64, 100, 1000]"), "hidden sizes checked"),
    "check_batch_sizes": (lambda n, v: _int_list(n, v, "[2]"), "batch sizes checked"),
    "check_seq_lens": (lambda n, v: _int_list(n, v, "[3]"), "sequence lengths checked"),
    "residual": (_bool_list, "residual variants"),
    # 02_performance_sweep
    "dtype": (_dtype, "dtype of the sweep"),
    "hidden_sizes": (_int_list, "hidden sizes of the sweep"),
    "batch_sizes": (lambda n, v: _int_list(n, v, "[1, 4, 16, 64]"), "batch sizes of the sweep"),
    "seq_lens": (lambda n, v: _int_list(n, v, "[64, 128, 256]"), "sequence lengths of the sweep"),
    "modes": (_modes, "timing modes"),
    "budget_ms": (_pos_float, "timing budget per point and mode"),
    "check": (_bool, "correctness check before timing"),
    "progress": (_bool, "progress bar"),
    # 03_compare_runs
    "run_dirs": (_str_list, "result directories to compare"),
    "reports_root": (_str, "where to look for runs"),
    "new_run": (_str, "the run the others are compared with"),
    "mode": (_mode, "timing mode compared"),
}


def validate_params(params: dict) -> dict:
    """Check and normalize notebook parameters; returns a new dict.

    Raises TypeError (wrong type) or ValueError (bad value, unknown name); the
    message names the parameter, the value given and what is expected.
    """
    if not isinstance(params, dict):
        raise TypeError(f"validate_params: expected a dict of parameters, got {type(params).__name__}")
    out = {}
    for name, value in params.items():
        if name not in SCHEMA:
            raise ValueError(f"parameter {name!r}: unknown parameter (got {value!r}); "
                             f"expected one of {sorted(SCHEMA)}")
        out[name] = SCHEMA[name][0](name, value)
    return out
