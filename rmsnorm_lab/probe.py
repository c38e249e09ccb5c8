"""Probe mode: where does each implementation break? The support matrix.

``probe_support()`` runs every (implementation, input case) in a child process,
so a peer that faults the GPU (illegal or misaligned address) or aborts its
process is recorded as ``crash`` with its message and the probe goes on. One
child runs all the cases of one implementation (one start-up cost per
implementation); after a crash a fresh child finishes the remaining cases.

Status of each cell:

- ``ok``       output (and new residual) within the dtype's tolerance of the float64 reference
- ``wrong``    it ran, but the answer is off (``error`` holds the relative error, ``message`` why)
- ``refused``  it raised an exception (``message``: type and text)
- ``crash``    the child process died (signal / exit status and its last words), ran past
               ``timeout_s``, or a CUDA fault poisoned its context
- ``skip``     cannot run here (``message``: the reason, e.g. not installed, needs CUDA, dtype)

From the command line: ``python -m rmsnorm_lab.probe --impls all --save-path DIR``.

For tests only: with ``RMSNORM_LAB_TEST_CRASH_IMPL`` set, a hidden implementation
``_crash`` exists (never in the registry listing). It computes HF RMSNorm but
misbehaves at chosen hidden sizes: the value ``1`` means
``127=abort,1=refuse,5120=wrong``; any ``HIDDEN=ACTION`` list (actions abort,
refuse, wrong, hang, fault: an illegal memory access on CUDA) sets its own table.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from .validate import check_eps, check_seed, dtype_name, suggest

STATUSES = ("ok", "wrong", "refused", "crash", "skip")
FATAL_EXIT = 3      # a child's exit status after it reported a case that broke its GPU context
LAYOUTS = ("contiguous", "strided_rows", "transposed")
RESIDUALS = ("none", "separate", "alias")
CRASH_ENV = "RMSNORM_LAB_TEST_CRASH_IMPL"
CSV_NAME = "support_matrix.csv"
COLUMNS = ["impl", "case", "status", "error", "message", "err_out", "err_residual", "tolerance",
           "shape", "dtype", "layout", "residual", "device", "note", "seconds"]
LOAD_TIMEOUT_FACTOR = 5      # importing / JIT-building a peer may take longer than one case
_FAULT_WORDS = ("cuda error", "illegal memory access", "misaligned address", "illegal address",
                "device-side assert", "unspecified launch failure", "cuda_error", "an illegal instruction")


@dataclass(frozen=True)
class ProbeCase:
    """One input case: x of ``shape`` (last dim = hidden) in ``dtype``, laid out as ``layout``.

    layout: ``contiguous``; ``strided_rows`` (each row a slice of a wider buffer, row
    stride > hidden); ``transposed`` (a transposed view: the hidden dim is not unit-stride).
    residual: ``none``; ``separate`` (its own tensor, same layout); ``alias`` (``residual is x``).
    large: more than 2**31 elements (int32 offset overflow); CUDA only, checked on sampled rows.
    """
    name: str
    shape: tuple = (7, 4096)
    dtype: str = "bfloat16"
    layout: str = "contiguous"
    residual: str = "none"
    large: bool = False

    @property
    def hidden(self) -> int:
        return self.shape[-1]

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["shape"] = list(self.shape)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "ProbeCase":
        if not isinstance(d, dict):
            raise TypeError(f"cases: expected a ProbeCase, a dict or a default case name, got {d!r}")
        known = ("name", "shape", "dtype", "layout", "residual", "large")
        for k in d:
            if k not in known:
                raise TypeError(f"cases: unknown case field {k!r}; expected {', '.join(known)}{suggest(k, known)}")
        d = dict(d)
        shape = d.get("shape", (7, 4096))
        if isinstance(shape, int) or not hasattr(shape, "__iter__"):
            raise TypeError(f"cases: shape: expected a tuple of positive integers, got {shape!r}")
        shape = tuple(shape)
        if not shape or any(isinstance(s, bool) or not isinstance(s, int) or s <= 0 for s in shape):
            raise ValueError(f"cases: shape: expected a non-empty tuple of positive integers, got {shape!r}")
        d["shape"] = shape
        d["dtype"] = dtype_name(d.get("dtype", "bfloat16"))
        if d.get("layout", "contiguous") not in LAYOUTS:
            raise ValueError(f"cases: layout: expected one of {', '.join(LAYOUTS)}, got {d['layout']!r}")
        if d.get("residual", "none") not in RESIDUALS:
            raise ValueError(f"cases: residual: expected one of {', '.join(RESIDUALS)}, got {d['residual']!r}")
        d.setdefault("name", _auto_name(d))
        return cls(**d)


def _auto_name(d: dict) -> str:
    parts = ["x".join(map(str, d["shape"])), d["dtype"]]
    if d.get("layout", "contiguous") != "contiguous":
        parts.append(d["layout"])
    if d.get("residual", "none") != "none":
        parts.append(f"res={d['residual']}")
    return " ".join(parts)


LARGE_TOKENS = (1 << 31) // 4096 + 3        # x of 4096-wide rows with more than 2**31 elements


def default_cases() -> list[ProbeCase]:
    """The issue's cases: odd hidden sizes, dtypes, non-contiguous rows, 3-D, 2**31+ elements, residual is x."""
    c = []
    for h in (1, 127, 3584, 5120, 8191, 16385):
        c.append(ProbeCase(f"hidden={h}", (7, h)))
        c.append(ProbeCase(f"hidden={h} +res", (7, h), residual="separate"))
    for d in ("float16", "bfloat16", "float32", "float64"):
        c.append(ProbeCase(f"{d} +res", (7, 4096), d, residual="separate"))
    c += [
        ProbeCase("strided rows", (7, 4096), layout="strided_rows"),
        ProbeCase("strided rows +res", (7, 4096), layout="strided_rows", residual="separate"),
        ProbeCase("transposed", (7, 4096), layout="transposed"),
        ProbeCase("3-D", (3, 5, 4096)),
        ProbeCase("3-D +res", (3, 5, 4096), residual="separate"),
        ProbeCase("residual is x", (7, 4096), residual="alias"),
        ProbeCase("2^31+ elements", (LARGE_TOKENS, 4096), large=True),
        ProbeCase("2^31+ elements +res", (LARGE_TOKENS, 4096), residual="separate", large=True),
    ]
    return c


# ---------------------------------------------------------------- implementations (and the test hook)

def _test_table() -> dict:
    spec = os.environ.get(CRASH_ENV, "")
    if spec in ("", "0", "false", "False"):
        return {}
    if spec in ("1", "true", "True"):
        spec = "127=abort,1=refuse,5120=wrong"
    table = {}
    for part in spec.split(","):
        h, _, action = part.partition("=")
        table[int(h)] = action.strip()
    return table


def _load_crash():
    from .impls.torch_impls import hf_rmsnorm

    table = _test_table()

    def crash_rmsnorm(x, weight, residual=None, eps: float = 1e-6):
        action = table.get(x.shape[-1])
        if action == "abort" or (action == "fault" and not x.is_cuda):
            os.abort()
        if action == "fault":
            _cuda_fault(x)
        if action == "hang":
            time.sleep(3600)
        if action == "refuse":
            raise ValueError(f"x: _crash refuses hidden={x.shape[-1]}")
        got = hf_rmsnorm(x, weight, residual, eps)
        if action == "wrong":
            return tuple(t * 1.5 for t in got) if isinstance(got, tuple) else got * 1.5
        return got
    return crash_rmsnorm


def _cuda_fault(x):
    """Read far out of bounds on the GPU: an illegal memory access, as a broken peer would make."""
    import torch
    import triton
    import triton.language as tl

    @triton.jit
    def _oob(X):
        v = tl.load(X + (1 << 40))
        tl.store(X, v)
    _oob[(1,)](x)
    torch.cuda.synchronize()


def _hidden_impls() -> dict:
    if not _test_table():
        return {}
    from .impls.base import Impl
    return {"_crash": Impl("_crash", "test: aborts / refuses / wrong on chosen sizes", "test", _load_crash,
                           devices=("cpu", "cuda"), dtypes=("float32", "float16", "bfloat16", "float64"),
                           requires=("torch",), numerics="HF semantics, except where it misbehaves on purpose")}


def _get(name: str):
    hidden = _hidden_impls()
    if name in hidden:
        return hidden[name]
    from .impls import get_impl
    return get_impl(name)


def _resolve_impls(impls) -> list[str]:
    from .impls import resolve_names

    hidden = _hidden_impls()
    if isinstance(impls, str):
        if impls == "all":
            return resolve_names("all")
        impls = [n for n in impls.replace(",", " ").split() if n]
    if impls is None:
        return resolve_names("all")
    if not hasattr(impls, "__iter__"):
        raise TypeError(f"impls: expected 'all', a name or a list of names, got {impls!r}")
    impls = list(impls)
    for n in impls:
        if not isinstance(n, str):
            raise TypeError(f"impls: expected implementation names (str), got {n!r} ({type(n).__name__})")
    out = []
    normal = [n for n in impls if n not in hidden]
    resolved = resolve_names(normal) if normal else []
    for n in impls:
        if n not in out and (n in hidden or n in resolved):
            out.append(n)
    if not out:
        raise ValueError("impls: expected at least one implementation name")
    return out


def _resolve_cases(cases) -> list[ProbeCase]:
    if cases is None:
        return default_cases()
    defaults = {c.name: c for c in default_cases()}
    if isinstance(cases, (str, dict, ProbeCase)):
        cases = [cases]
    if not hasattr(cases, "__iter__"):
        raise TypeError(f"cases: expected a list of ProbeCase / dict / default case names, got {cases!r}")
    out = []
    for c in cases:
        if isinstance(c, ProbeCase):
            out.append(c)
        elif isinstance(c, str):
            if c not in defaults:
                raise KeyError(f"cases: unknown case {c!r}; default cases: {', '.join(defaults)}"
                               f"{suggest(c, defaults)}")
            out.append(defaults[c])
        else:
            out.append(ProbeCase.from_dict(c))
    if not out:
        raise ValueError("cases: expected at least one case, got an empty list")
    names = [c.name for c in out]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ValueError(f"cases: case names must be unique, got {', '.join(map(repr, dup))} more than once")
    return out


def _skip_reason(impl, case: ProbeCase, device: str) -> str:
    if case.large and not device.startswith("cuda"):
        gib = case.numel * _itemsize(case.dtype) / 2**30
        return (f"needs CUDA: {case.numel:,} elements (> 2**31, {gib:.0f} GiB per tensor) "
                f"are probed on a GPU only")
    s = impl.supports(case.dtype, device)
    return "" if s else s.reason


def _itemsize(dtype: str) -> int:
    return {"float32": 4, "float16": 2, "bfloat16": 2, "float64": 8}[dtype]


# ---------------------------------------------------------------- the child: run cases, report each

def build_inputs(case: ProbeCase, device: str = "cpu", seed: int = 0):
    """(x, weight, residual) for a case, laid out as it says (residual is x for 'alias')."""
    import torch

    dt = getattr(torch, case.dtype)
    shape, n = tuple(case.shape), case.hidden
    if case.large:
        g = torch.Generator(device=device).manual_seed(seed)

        def rnd():
            return torch.empty(shape, dtype=dt, device=device).normal_(generator=g)
    else:
        g = torch.Generator().manual_seed(seed)

        def base(sh):
            return torch.randn(sh, generator=g, dtype=torch.float32).to(device=device, dtype=dt)

        def rnd():
            if case.layout == "strided_rows":
                return base(shape[:-1] + (n + 64,))[..., :n]
            if case.layout == "transposed":
                return base(shape[::-1]).permute(*reversed(range(len(shape))))
            return base(shape)
    x = rnd()
    gw = torch.Generator().manual_seed(seed + 1)
    w = (1.0 + 0.5 * torch.randn(n, generator=gw, dtype=torch.float32)).to(device=device, dtype=dt)
    r = None if case.residual == "none" else (x if case.residual == "alias" else rnd())
    return x, w, r


def _is_fault(e: BaseException, on_cuda: bool) -> bool:
    if not on_cuda:
        return False
    msg = f"{type(e).__name__} {e}".lower()
    if type(e).__name__ == "AcceleratorError" or any(w in msg for w in _FAULT_WORDS):
        return True
    try:                                   # a sticky error poisons the context
        import torch
        torch.cuda.synchronize()
        return False
    except Exception:  # noqa: BLE001
        return True


def run_case(fn, impl, case: ProbeCase, device: str, seed: int = 0, eps: float = 1e-6) -> dict:
    """Run one case in this process: {'status', 'error', 'message', ...}; 'fatal' when the GPU context is gone."""
    import warnings

    import torch

    from . import validate
    from .reference import TOLERANCE, reference, rel_error

    on_cuda = device.startswith("cuda")
    tol = TOLERANCE[case.dtype]
    res = {"status": "", "error": float("nan"), "message": "", "err_out": float("nan"),
           "err_residual": float("nan"), "tolerance": tol, "note": ""}
    if case.large and on_cuda:
        need = case.numel * _itemsize(case.dtype) * (4 if case.residual == "separate" else 2) * 1.1
        free, _ = torch.cuda.mem_get_info(torch.device(device))
        if free < need:
            res.update(status="skip", message=f"needs ~{need / 2**30:.0f} GiB free GPU memory, "
                                              f"{free / 2**30:.0f} GiB free")
            return res
    try:
        x, w, r = build_inputs(case, device, seed)
    except Exception as e:  # noqa: BLE001 - e.g. out of memory building the inputs
        res.update(status="skip", message=f"could not build the inputs: {type(e).__name__}: {e}"[:500])
        return res
    n = case.hidden
    if case.large:                      # reference on the first and last rows (where offsets overflow)
        rows = x.numel() // n
        idx = torch.tensor([0, 1, rows // 2, rows - 2, rows - 1], device=x.device)

        def sample(t):
            return t.reshape(-1, n)[idx]
        ref = reference(sample(x), w, None if r is None else sample(r), eps)
        pristine = None
    else:
        def sample(t):
            return t
        ref = reference(x, w, r, eps)
        pristine = (x.clone(), None if r is None or r is x else r.clone())
    validate._warned_noncontig.clear()          # so each case reports its own copy warnings
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            got = fn(x, w, r, eps)
            if on_cuda:
                torch.cuda.synchronize()
    except Exception as e:  # noqa: BLE001 - a refusal or a fault, recorded
        msg = " ".join(f"{type(e).__name__}: {e}".split())[:500]
        if _is_fault(e, on_cuda):
            res.update(status="crash", message=msg, fatal=True)
        else:
            res.update(status="refused", message=msg)
        return res
    res["note"] = " | ".join(dict.fromkeys(" ".join(str(c.message).split()) for c in caught))[:300]
    problems = []
    try:
        outs = got if isinstance(got, tuple) else (got,)
        if r is not None and len(outs) < 2:
            res.update(status="wrong", message="expected (out, new_residual) with a residual")
            return res
        refs = ref if r is not None else (ref,)
        for label, key, o, rf in zip(("output", "new residual"), ("err_out", "err_residual"), outs, refs):
            if not isinstance(o, torch.Tensor):
                problems.append(f"{label} is a {type(o).__name__}, not a tensor")
                continue
            if o.numel() != x.numel():
                problems.append(f"{label} shape {tuple(o.shape)} != input shape {tuple(x.shape)}")
                continue
            if o.dtype != x.dtype:
                problems.append(f"{label} dtype {o.dtype} != input dtype {x.dtype}")
            res[key] = rel_error(sample(o.reshape(x.shape)), rf)
            if not res[key] <= tol:
                problems.append(f"{label} error {res[key]:.3g} > {tol:g}")
        if len(outs) >= 2 and isinstance(outs[1], torch.Tensor) and problems and \
                outs[0].data_ptr() == outs[1].data_ptr():
            problems.append("output and new residual are the same memory (written in place)")
        if pristine is not None and not (impl.inplace_residual and r is not None):
            if not torch.equal(x, pristine[0]) or (pristine[1] is not None and not torch.equal(r, pristine[1])):
                problems.append("changed an input it does not document changing")
        if on_cuda:
            torch.cuda.synchronize()
    except Exception as e:  # noqa: BLE001
        msg = " ".join(f"{type(e).__name__}: {e}".split())[:500]
        if _is_fault(e, on_cuda):
            res.update(status="crash", message=msg, fatal=True)
            return res
        problems.append(f"checking the output failed: {msg}")
    errs = [v for v in (res["err_out"], res["err_residual"]) if not math.isnan(v)]
    res["error"] = max(errs) if errs else float("nan")
    res.update(status="wrong" if problems else "ok", message="; ".join(problems))
    return res


def _child_main(spec_path: str, out_path: str) -> int:
    import faulthandler
    faulthandler.enable()               # an abort or segfault leaves its last words on stderr

    spec = json.loads(Path(spec_path).read_text())
    out = open(out_path, "a", buffering=1)

    def emit(d):
        out.write(json.dumps(d) + "\n")
        out.flush()

    impl = _get(spec["impl"])
    device = spec["device"]
    try:
        fn = impl.load()
    except Exception as e:  # noqa: BLE001 - every case becomes a skip with the reason
        msg = " ".join(f"failed to load: {type(e).__name__}: {e}".split())[:500]
        for i, _ in spec["cases"]:
            emit({"i": i, "event": "done", "status": "skip", "message": msg})
        return 0
    emit({"event": "ready"})
    for i, cd in spec["cases"]:
        case = ProbeCase.from_dict(cd)
        emit({"i": i, "event": "start"})
        t0 = time.perf_counter()
        res = run_case(fn, impl, case, device, spec["seed"], spec["eps"])
        fatal = res.pop("fatal", False)
        emit({"i": i, "event": "done", **res, "seconds": round(time.perf_counter() - t0, 3)})
        if fatal:
            return FATAL_EXIT           # the GPU context is unusable: the parent starts a fresh child
        if device.startswith("cuda") and case.large:
            import gc

            import torch
            gc.collect()
            torch.cuda.empty_cache()
    return 0


# ---------------------------------------------------------------- the parent: children, timeouts, rows

def _crash_message(rc, stderr_text: str, timed_out: str = "") -> str:
    if timed_out:
        head = timed_out
    elif rc is not None and rc < 0:
        try:
            head = f"child process killed by {signal.Signals(-rc).name}"
        except ValueError:
            head = f"child process killed by signal {-rc}"
    else:
        head = f"child process exited with status {rc}"
    lines = [ln.strip() for ln in stderr_text.splitlines() if ln.strip()]
    key = [ln for ln in lines if any(w in ln.lower() for w in ("error", "abort", "fault", "fatal", "assert"))]
    tail = (key or lines)[-3:]
    return (head + (": " + " | ".join(tail) if tail else ""))[:500]


def _child_env() -> dict:
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.setdefault("PYTHONFAULTHANDLER", "1")
    return env


def _run_impl(name: str, cases: list[ProbeCase], todo: list[int], device: str, timeout_s: float,
              seed: int, eps: float, log=None) -> dict:
    """index -> result dict, for the cases ``todo`` of one implementation (fresh child after each crash)."""
    results: dict = {}
    remaining = list(todo)
    env = _child_env()
    with tempfile.TemporaryDirectory(prefix="rmsnorm-probe-") as td:
        attempt = 0
        while remaining:
            attempt += 1
            spec_path = Path(td) / f"spec{attempt}.json"
            out_path = Path(td) / f"out{attempt}.jsonl"
            err_path = Path(td) / f"err{attempt}.txt"
            spec_path.write_text(json.dumps({"impl": name, "device": device, "seed": seed, "eps": eps,
                                             "cases": [[i, cases[i].to_dict()] for i in remaining]}))
            out_path.touch()
            with open(err_path, "w") as errf:
                proc = subprocess.Popen([sys.executable, "-m", "rmsnorm_lab.probe", "--child",
                                         str(spec_path), str(out_path)],
                                        stdin=subprocess.DEVNULL, stdout=errf, stderr=subprocess.STDOUT, env=env)
                current, phase_t0, limit = None, time.monotonic(), timeout_s * LOAD_TIMEOUT_FACTOR
                timed_out, pos, buf = "", 0, ""
                while True:
                    rc = proc.poll()
                    with open(out_path) as f:
                        f.seek(pos)
                        chunk = f.read()
                        pos = f.tell()
                    buf += chunk
                    *lines, buf = buf.split("\n")
                    for ln in lines:
                        if not ln.strip():
                            continue
                        ev = json.loads(ln)
                        if ev["event"] in ("ready", "start"):
                            current = ev.get("i")
                            phase_t0, limit = time.monotonic(), timeout_s
                        elif ev["event"] == "done":
                            ev.pop("event")
                            i = ev.pop("i")
                            results[i] = ev
                            current = None
                            if log:
                                log(name, cases[i].name, ev["status"])
                    if rc is not None:
                        break
                    if time.monotonic() - phase_t0 > limit:
                        what = f"case {cases[current].name!r}" if current is not None else "loading"
                        timed_out = f"timed out after {limit:g} s ({what})"
                        proc.kill()
                        proc.wait()
                        rc = proc.returncode
                        break
                    time.sleep(0.02)
            stderr_text = err_path.read_text(errors="replace")
            left = [i for i in remaining if i not in results]
            if current is not None and current in left:
                results[current] = {"status": "crash", "message": _crash_message(rc, stderr_text, timed_out)}
                if log:
                    log(name, cases[current].name, "crash")
            elif left and rc == FATAL_EXIT and not timed_out and len(left) < len(remaining):
                pass                # the fault was reported against its case: a fresh child runs the rest
            elif left and (rc != 0 or timed_out):
                # died while loading or between cases: no case to blame, so blame them all (no endless loop)
                msg = _crash_message(rc, stderr_text, timed_out)
                for i in left:
                    results[i] = {"status": "crash", "message": msg}
            elif left:
                for i in left:
                    results[i] = {"status": "crash", "message": "child process exited without running this case"}
            remaining = [i for i in remaining if i not in results]
    return results


def probe_support(impls="all", cases=None, device="auto", timeout_s: float = 120, save_path=None,
                  seed: int = 0, eps: float = 1e-6, progress: bool = False):
    """The support matrix: each (implementation, case) run in a child process.

    impls: 'all', a name, or a list of names. cases: None for ``default_cases()``,
    or a list of ``ProbeCase`` / dicts of its fields / default case names.
    device: 'auto', 'cpu', 'cuda' or 'cuda:N'. timeout_s: per case (loading a
    peer gets 5x). save_path: a directory (``support_matrix.csv`` inside it) or
    a ``.csv`` file, written atomically. Returns a tidy DataFrame, one row per
    (impl, case), with ``status`` in ok / wrong / refused / crash / skip;
    ``support_matrix(df)`` pivots it.
    """
    import pandas as pd

    from .device import resolve_device

    names = _resolve_impls(impls)
    case_list = _resolve_cases(cases)
    device = resolve_device(device)
    if isinstance(timeout_s, bool) or not isinstance(timeout_s, (int, float)):
        raise TypeError(f"timeout_s: expected a positive number of seconds, got {timeout_s!r} "
                        f"({type(timeout_s).__name__})")
    if not (math.isfinite(timeout_s) and timeout_s > 0):
        raise ValueError(f"timeout_s: expected a positive finite number of seconds, got {timeout_s!r}")
    seed = check_seed(seed)
    eps = check_eps(eps)
    target = _save_target(save_path) if save_path is not None else None

    def log(impl, case, status):
        if progress:
            print(f"probe {impl:16s} {case:24s} {status}", file=sys.stderr, flush=True)

    rows = []
    for name in names:
        impl = _get(name)
        res: dict = {}
        todo = []
        for i, case in enumerate(case_list):
            reason = _skip_reason(impl, case, device)
            if reason:
                res[i] = {"status": "skip", "message": reason}
            else:
                todo.append(i)
        if todo:
            res.update(_run_impl(name, case_list, todo, device, float(timeout_s), seed, eps, log))
        for i, case in enumerate(case_list):
            r = res[i]
            rows.append({"impl": name, "case": case.name, "status": r.get("status", "crash"),
                         "error": r.get("error", float("nan")), "message": r.get("message", ""),
                         "err_out": r.get("err_out", float("nan")),
                         "err_residual": r.get("err_residual", float("nan")),
                         "tolerance": r.get("tolerance", float("nan")),
                         "shape": "x".join(map(str, case.shape)), "dtype": case.dtype, "layout": case.layout,
                         "residual": case.residual, "device": device, "note": r.get("note", ""),
                         "seconds": r.get("seconds", float("nan"))})
    df = pd.DataFrame(rows, columns=COLUMNS)
    if target is not None:
        from .results import _atomic_write
        _atomic_write(target, df.to_csv(index=False))
        df.attrs["path"] = str(target)
    return df


def _save_target(save_path) -> Path:
    from .results import check_writable

    if not isinstance(save_path, (str, os.PathLike)):
        raise TypeError(f"save_path: expected a directory or .csv path, got {save_path!r} "
                        f"({type(save_path).__name__})")
    p = Path(save_path).expanduser()
    if p.suffix.lower() == ".csv":
        check_writable(p.parent)
        if p.is_dir():
            raise IsADirectoryError(f"save_path: {str(p)!r} is a directory, expected a .csv file path")
        return p
    return check_writable(p) / CSV_NAME


def support_matrix(df):
    """implementation x case -> 'ok' / 'wrong (err)' / 'refused' / 'crash' / 'skip' (cases in probe order)."""
    def cell(r):
        if r["status"] == "wrong" and isinstance(r["error"], float) and not math.isnan(r["error"]):
            return f"wrong ({r['error']:.1e})"
        return r["status"]
    d = df.assign(cell=df.apply(cell, axis=1))
    m = d.pivot(index="impl", columns="case", values="cell")
    return m.reindex(index=list(dict.fromkeys(df["impl"])), columns=list(dict.fromkeys(df["case"])))


# ---------------------------------------------------------------- command line

class _Parser(argparse.ArgumentParser):
    def error(self, message):               # one line, exit status 2, no traceback
        self.exit(2, f"{self.prog}: error: {message}\n")


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--child"]:
        if len(argv) != 3:
            print("python -m rmsnorm_lab.probe: error: --child expects SPEC_JSON OUT_JSONL", file=sys.stderr)
            return 2
        return _child_main(argv[1], argv[2])
    p = _Parser(prog="python -m rmsnorm_lab.probe",
                description="Support matrix: every implementation on odd shapes, dtypes and layouts, "
                            "each in a child process (a crash is recorded, not fatal).")
    p.add_argument("--impls", default="all", help="comma-separated implementation names, or 'all'")
    p.add_argument("--cases", nargs="+", default=None, help="default case names (default: all of them)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: auto)")
    p.add_argument("--timeout", type=float, default=120.0, help="seconds per case (default: %(default)s)")
    p.add_argument("--save-path", default=None, help="directory (support_matrix.csv) or .csv file")
    p.add_argument("--list-cases", action="store_true", help="list the default cases, then exit")
    args = p.parse_args(argv)
    if args.list_cases:
        for c in default_cases():
            print(f"{c.name:24s} {'x'.join(map(str, c.shape)):14s} {c.dtype:9s} {c.layout:12s} "
                  f"residual={c.residual}{' (CUDA only)' if c.large else ''}")
        return 0
    try:
        df = probe_support(args.impls, args.cases, args.device, args.timeout, args.save_path, progress=True)
    except (ValueError, TypeError, KeyError, OSError, RuntimeError) as e:
        msg = e.args[0] if isinstance(e, KeyError) and e.args else str(e)
        print(f"python -m rmsnorm_lab.probe: error: {' '.join(str(msg).split())}", file=sys.stderr)
        return 2
    import pandas as pd
    with pd.option_context("display.width", 250, "display.max_columns", 50):
        print(support_matrix(df).T.to_string())
    if "path" in df.attrs:
        print(f"support matrix: {df.attrs['path']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
