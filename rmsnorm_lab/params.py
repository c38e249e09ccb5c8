"""Notebook parameters: one schema, clear errors for a wrong type or value.

Every notebook calls ``validate_params({...})`` right after its ``parameters``
cell. The checks are rmsnorm_lab.validate's (the API's and the CLI's), reworded
to name the parameter, so a papermill parameter of the wrong type (``-p hidden_sizes 4096``
passes the *string* "4096") fails at once with a message naming the
parameter, the value given and what is expected.
"""
from __future__ import annotations

from . import validate as V

_LIST_HINT = ("; pass lists with papermill -y 'NAME: [...]' or -f preset.yaml "
              "(papermill -p passes a string)")


def _fail(exc, name, value, expected, hint=""):
    shown = repr(value)
    if len(shown) > 120:
        shown = shown[:117] + "..."
    raise exc(f"parameter {name!r}: got {shown} ({type(value).__name__}); expected {expected}"
              + hint.replace("NAME", name))


def _via(check, expected, list_hint=False):
    """A parameter checker from one of rmsnorm_lab.validate's: its TypeError / ValueError,
    reworded to name the parameter, the value given and what is expected."""
    def checker(name, v):
        if isinstance(v, tuple):
            v = list(v)
        try:
            return check(name, v)
        except (TypeError, ValueError) as e:
            _fail(type(e), name, v, expected, _LIST_HINT if list_hint and isinstance(v, str) else "")
    return checker


def _int_list(example="[4096, 6144]"):
    return _via(V.check_int_list, f"a list of positive integers, e.g. {example}", list_hint=True)


def _dtype(name, v):
    if not isinstance(v, str):
        _fail(TypeError, name, v, f"one of {V.accepted_dtypes(V.SWEEP_DTYPES)}")
    return _via(lambda n, x: V.dtype_name(x, V.SWEEP_DTYPES), f"one of {V.accepted_dtypes(V.SWEEP_DTYPES)}")(name, v)


def _dtype_list(name, v):
    expected = f"a list of dtype names from {V.accepted_dtypes(V.SWEEP_DTYPES)}, e.g. [float32, bfloat16]"
    if not isinstance(v, list):
        _fail(TypeError, name, v, expected, _LIST_HINT)
    return _via(lambda n, x: V.check_dtypes(x, n), expected)(name, v)


def _impls(name, v):
    from .backward import SUBJECTS
    from .impls import registry
    from .variants import SUBJECT_NAMES

    known = list(dict.fromkeys([*registry(), *SUBJECT_NAMES, *SUBJECTS]))   # which ones a run takes: its variant / pass
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
    if not isinstance(v, (list, tuple)):
        _fail(TypeError, name, v, expected, _LIST_HINT)
    return _via(lambda n, x: V.check_modes(x, "cuda", n), expected)(name, v)   # the device: validate_params


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


def _variant(name, v):
    from .points import VARIANT_CHOICES, check_variant
    return _via(lambda n, x: check_variant(x, n), f"one of {list(VARIANT_CHOICES)}")(name, v)


def _pass(name, v):
    from .points import PASS_CHOICES, check_passes
    expected = f"one of {list(PASS_CHOICES)}"
    if not isinstance(v, str):
        _fail(TypeError, name, v, expected)
    return _via(lambda n, x: check_passes(x, n)[0], expected)(name, v)


def _tokens(name, v):
    if v == [] or v == ():
        return []
    return _int_list("[1, 17, 333] ([] : batch_sizes x seq_lens)")(name, v)


def _models(name, v):
    from .models import check_models
    expected = "[] (none), [all] or a list of model names from `python -m rmsnorm_lab list --models`"
    if v == [] or v == ():
        return []
    if isinstance(v, str):
        _fail(TypeError, name, v, expected, _LIST_HINT)
    try:
        return check_models(list(v) if isinstance(v, tuple) else v, name)
    except (TypeError, ValueError) as e:
        hint = str(e).partition("; did you mean")
        _fail(type(e), name, v, expected, "".join(hint[1:]))


def _models_split(name, v):
    from .models import SPLITS, check_split
    return _via(lambda n, x: check_split(x, n), f"one of {list(SPLITS)}")(name, v)


_device = _via(V.check_device_name, "'auto', 'cpu', 'cuda' or 'cuda:N'")
_bool = _via(V.check_bool, "true or false (a boolean)")
_bool_list = _via(V.check_bool_list, "a list of booleans, e.g. [false, true]", list_hint=True)
_nonneg_int = _via(V.check_nonneg_int, "a non-negative integer")
_pos_float = _via(V.check_positive_float, "a positive number (finite, > 0)")
_eps = _via(lambda n, x: V.check_eps(x), "a positive finite number, e.g. 1e-6")


# name -> (checker, what it is). Names are shared across notebooks where the meaning is the same.
SCHEMA = {
    "device": (_device, "where to run"),
    "impls": (_impls, "implementations"),
    "seed": (_nonneg_int, "random seed of the inputs"),
    "eps": (_eps, "RMSNorm epsilon"),
    "save_dir": (_str, "results directory ('' = default)"),
    # 01_correctness
    "check_dtypes": (_dtype_list, "dtypes checked"),
    "check_hidden_sizes": (_int_list("[64, 100, 1000]"), "hidden sizes checked"),
    "check_batch_sizes": (_int_list("[2]"), "batch sizes checked"),
    "check_seq_lens": (_int_list("[3]"), "sequence lengths checked"),
    "residual": (_bool_list, "residual variants"),
    # 02_performance_sweep
    "dtype": (_dtype, "dtype of the sweep"),
    "hidden_sizes": (_int_list(), "hidden sizes of the sweep"),
    "batch_sizes": (_int_list("[1, 4, 16, 64]"), "batch sizes of the sweep"),
    "seq_lens": (_int_list("[64, 128, 256]"), "sequence lengths of the sweep"),
    "tokens": (_tokens, "token counts of the sweep instead of batch_sizes x seq_lens ([]: those)"),
    "models": (_models, "real models whose hidden sizes replace hidden_sizes ([]: none; [all])"),
    "models_split": (_models_split, "with models: the token counts tune | validate | all"),
    "modes": (_modes, "timing modes"),
    "budget_ms": (_pos_float, "timing budget per point and mode"),
    "check": (_bool, "correctness check before timing"),
    "variant": (_variant, "which norm: plain, gemma, qk-norm, fp8-static, fp8-per-token"),
    "pass_": (_pass, "which pass: fwd, bwd or fwd+bwd"),
    "head_dim": (_via(V.check_positive_int, "a positive integer (qk-norm's head size)"), "qk-norm's head size"),
    "progress": (_bool, "progress bar"),
    "prewarm": (_via(V.check_workers, "-1 (auto), 0 (off) or a number of worker processes"),
                "worker processes compiling ahead"),
    # 03_compare_runs
    "run_dirs": (_str_list, "result directories to compare"),
    "reports_root": (_str, "where to look for runs"),
    "new_run": (_str, "the run the others are compared with"),
    "mode": (_mode, "timing mode compared"),
}


def _check_variant_params(out: dict) -> None:
    """What the variant / pass parameters require of the others (each error names the parameter)."""
    from . import points
    if not ({"variant", "pass_", "head_dim"} & set(out)):
        return
    variant, passes = out.get("variant", points.PLAIN), [out.get("pass_", "fwd")]
    checks = [("head_dim", lambda: "hidden_sizes" in out and points.check_head_dim(
                  out.get("head_dim", points.DEFAULT_HEAD_DIM), out["hidden_sizes"], variant)),
              ("pass_", lambda: points.check_combination(variant, passes, [out.get("dtype", "bfloat16")],
                                                        out.get("residual", [False]))),
              ("impls", lambda: isinstance(out.get("impls"), list) and points.resolve_impls(out["impls"], variant,
                                                                                         passes))]
    for name, check in checks:
        try:
            check()
        except (TypeError, ValueError, KeyError) as e:
            msg = str(e.args[0] if isinstance(e, KeyError) and e.args else e)
            head, sep, rest = msg.partition(": ")
            heads = {"passes": "pass_", "dtypes": "dtype", "residual": "residual", "head_dim": "head_dim",
                     "impls": "impls"}
            if sep and head in heads:
                name, msg = heads[head], rest
            raise (ValueError if isinstance(e, KeyError) else type(e))(f"parameter {name!r}: {msg}") from None


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
    _check_variant_params(out)
    if out.get("models") and out.get("tokens"):
        raise ValueError(f"parameter 'tokens': got {out['tokens']!r} with models; the models' token counts come "
                         f"from models_split: leave tokens [] (or models [] to sweep hidden_sizes x tokens)")
    if isinstance(out.get("modes"), list) and out.get("device") == "cpu":   # ('auto': the sweep checks)
        try:
            V.check_modes(out["modes"], "cpu", "modes")
        except ValueError as e:
            raise ValueError(f"parameter 'modes': {str(e).removeprefix('modes: ')}") from None
    return out
