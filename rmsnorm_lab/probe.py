"""Probe mode: where does each implementation break? The support matrix.

``probe_support()`` runs every (implementation, input case) through the one checker
(``check.check_impl``) in a child process (``rmsnorm_lab.isolate``), so a peer that faults the
GPU (illegal or misaligned address) or aborts its process is recorded as ``crash`` with its
message and the probe goes on. Several children run at once (``jobs``), and an implementation that
compiles per case is split among several (``isolate.run_children``, shared with ``check.check_all``);
the rows come out in implementation order, then case order, whatever finished first. The cases
an entry says it cannot take (``Impl.supports``) are run anyway: the matrix shows what happens,
and the ``declared`` column what the entry says.

Statuses are ``check.STATUSES``: ok, wrong, error (it raised: type and text), crash, skip.
The rules for mixed dtypes, non-finite values and an all-zero row with eps = 0 are the
checker's (see ``rmsnorm_lab.check``).

From the command line: ``python -m rmsnorm_lab.probe --impls all --save-path DIR``.
"""
from __future__ import annotations

import math
import os
import sys
import threading
import time
from pathlib import Path

from .cases import Case
from .validate import check_eps, check_positive_float, check_seed, suggest

CSV_NAME = "support_matrix.csv"
COLUMNS = ["impl", "case", "status", "error", "message", "err_out", "err_residual", "tolerance",
           "shape", "dtype", "weight_dtype", "residual_dtype", "layout", "residual", "device", "note",
           "declared", "seconds"]
LARGE_TOKENS = (1 << 31) // 4096 + 3        # x of 4096-wide rows with more than 2**31 elements


def _c(name, hidden=4096, rows=7, **kw) -> Case:
    return Case(1, rows, hidden, name=name, ndim=2, **kw)


def default_cases() -> list[Case]:
    """Odd hidden sizes, dtypes, non-contiguous rows, 3-D, residual is x, 2**31+ elements, misaligned
    pointers, mixed dtypes, a weight on another device, a broadcast weight, eps = 0 with a zero row,
    very wide rows."""
    c = []
    for h in (1, 127, 3584, 5120, 8191, 16385):
        c.append(_c(f"hidden={h}", h))
        c.append(_c(f"hidden={h} +res", h, residual=True))
    for d in ("float16", "bfloat16", "float32", "float64"):
        c.append(_c(f"{d} +res", dtype=d, residual=True))
    c += [
        _c("strided rows", layout="strided_rows"),
        _c("strided rows +res", layout="strided_rows", residual=True),
        _c("transposed", layout="transposed"),
        Case(3, 5, 4096, name="3-D"),
        Case(3, 5, 4096, residual=True, name="3-D +res"),
        _c("residual is x", residual=True, residual_is_x=True),
        _c("2^31+ elements", rows=LARGE_TOKENS, large=True),
        _c("2^31+ elements +res", rows=LARGE_TOKENS, residual=True, large=True),
        _c("misaligned x", misaligned="x"),
        _c("misaligned x +res", residual=True, misaligned="x"),
        _c("misaligned residual", residual=True, misaligned="residual"),
        _c("misaligned weight", misaligned="weight"),
        _c("weight float32", weight_dtype="float32"),
        _c("weight float32 +res", weight_dtype="float32", residual=True),
        _c("weight float16", weight_dtype="float16"),
        _c("residual float32", residual=True, residual_dtype="float32"),
        _c("weight on cpu", weight_device="cpu"),
        _c("broadcast weight", weight_broadcast=True),
        _c("eps=0 zero row", eps=0.0, zero_row=True),
        _c("eps=0 zero row +res", eps=0.0, zero_row=True, residual=True),
        _c("hidden=4100 +res", 4100, residual=True),
        _c("hidden=65536", 65536),
        _c("hidden=65536 +res", 65536, residual=True),
        _c("hidden=131072", 131072),
        _c("hidden=131072 +res", 131072, residual=True),
    ]
    return c


def _resolve_impls(impls) -> list[str]:
    from .impls import resolve_names

    if impls is None or isinstance(impls, str):
        return resolve_names("all" if impls is None else impls)
    if not hasattr(impls, "__iter__"):
        raise TypeError(f"impls: expected 'all', a name or a list of names, got {impls!r}")
    impls = list(impls)
    for n in impls:
        if not isinstance(n, str):
            raise TypeError(f"impls: expected implementation names (str), got {n!r} ({type(n).__name__})")
    return resolve_names(impls)


def _resolve_cases(cases) -> list[Case]:
    if cases is None:
        return default_cases()
    defaults = {c.name: c for c in default_cases()}
    if isinstance(cases, (str, dict, Case)):
        cases = [cases]
    if not hasattr(cases, "__iter__"):
        raise TypeError(f"cases: expected a list of Case / dict / default case names, got {cases!r}")
    out = []
    for c in cases:
        if isinstance(c, Case):
            out.append(c)
        elif isinstance(c, str):
            if c not in defaults:
                raise KeyError(f"cases: unknown case {c!r}; default cases: {', '.join(defaults)}"
                               f"{suggest(c, defaults)}")
            out.append(defaults[c])
        else:
            out.append(Case.from_dict(c))
    if not out:
        raise ValueError("cases: expected at least one case, got an empty list")
    names = [c.label for c in out]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ValueError(f"cases: case names must be unique, got {', '.join(map(repr, dup))} more than once")
    return out


def probe_support(impls="all", cases=None, device="auto", timeout_s: float = 120, save_path=None,
                  seed: int = 0, eps: float = 1e-6, progress: bool = False, imports=(), jobs=None,
                  background: bool = False):
    """The support matrix: each (implementation, case) checked in a child process.

    impls: 'all', a name, or a list of names. cases: None for ``default_cases()``, or a list of
    ``Case`` / dicts of its fields / default case names. device: 'auto', 'cpu', 'cuda' or
    'cuda:N'. timeout_s: per case (loading: ``isolate.LOAD_TIMEOUT_FACTOR`` times it, at least
    ``isolate.LOAD_TIMEOUT_MIN_S``). save_path: a directory
    (``support_matrix.csv`` inside it) or a ``.csv`` file, written atomically. imports: extra
    modules (dotted names or .py paths) imported here and in each child first, e.g. one that
    registers an implementation. jobs: how many children run at once (None:
    ``isolate.default_jobs(device)``: 1.5 per CPU core on CUDA, one per core on the CPU); an implementation
    that compiles per case is split among several children (``isolate.run_children``); the rows do
    not depend on it, and the 2**31+ element cases still run one at a time across children (a lock
    file). background: validate the arguments, then run
    the probe in a thread and return a ``concurrent.futures.Future`` of the DataFrame at once (so
    the work of this process, e.g. ``check.check_all``, runs meanwhile). Returns a tidy DataFrame,
    one row per (impl, case), with ``status`` in ``check.STATUSES`` and ``message`` its reason;
    ``support_matrix(df)`` pivots it. ``.attrs``: ``children`` (where the time went, one dict per
    child process: ``isolate.run_children``'s ``profile``) and ``wall_s``.
    """
    from .device import resolve_device, use_triton_interpreter_on_cpu
    from .isolate import check_jobs, import_all

    imports = import_all(imports)
    names = _resolve_impls(impls)
    case_list = _resolve_cases(cases)
    device = resolve_device(device)
    use_triton_interpreter_on_cpu(device)
    timeout_s = check_positive_float("timeout_s", timeout_s, "seconds")
    seed = check_seed(seed)
    eps = check_eps(eps)
    target = _save_target(save_path) if save_path is not None else None
    jobs = check_jobs(jobs, device)
    args = (names, case_list, device, timeout_s, target, seed, eps, progress, imports, jobs)
    return _probe_in_thread(*args) if background else _probe(*args)


def _probe_in_thread(*args):
    """``_probe(*args)`` in a thread: a ``concurrent.futures.Future`` of its DataFrame, at once."""
    from concurrent.futures import ThreadPoolExecutor

    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="rmsnorm-probe")
    future = pool.submit(_probe, *args)
    pool.shutdown(wait=False)               # the thread ends with the probe
    return future


def _probe(names, case_list, device, timeout_s, target, seed, eps, progress, imports, jobs):
    """probe_support's work, on validated arguments."""
    from .isolate import run_children

    results, work = _probe_plan(names, case_list, device)
    profile: list = []
    t0 = time.perf_counter()
    got = run_children(work, case_list, device, jobs, timeout_s, seed, eps, imports=imports, known_limits=False,
                       log=_progress_log(case_list, progress), profile=profile)
    return _probe_frame(results, got, names, case_list, device, target, profile, time.perf_counter() - t0)


def _progress_log(case_list, progress: bool):
    """run_children's ``log``: one line per row on stderr when ``progress``, else None."""
    if not progress:
        return None
    print_lock = threading.Lock()

    def log(name, i, row):
        line = f"probe {name:22s} {case_list[i].label:24s} {row.get('status')}\n"
        with print_lock:                     # one whole line at a time from every thread
            sys.stderr.write(line)
            sys.stderr.flush()
    return log


def _probe_plan(names, case_list, device) -> tuple:
    """({name: {case index: skip row}} for the cases that cannot run here, [(name, indices to run)])."""
    from .check import skip_check
    from .impls import get_impl

    results, work = {}, []
    for name in names:
        impl = get_impl(name)
        res, todo = {}, []
        for i, case in enumerate(case_list):
            reason, declared = skip_check(impl, case, device, known_limits=False)
            if reason:
                res[i] = {"status": "skip", "reason": reason, "declared": declared}
            else:
                todo.append(i)
        results[name] = res
        if todo:
            work.append((name, todo))
    return results, work


def _probe_frame(results, got, names, case_list, device, target, profile, wall_s):
    """The support matrix's DataFrame from the skip rows and the children's rows; saved to ``target``."""
    import pandas as pd

    for name, res in got.items():
        results[name].update(res)
    rows = []
    for name in names:
        res = results[name]
        for i, case in enumerate(case_list):
            r = res.get(i, {})
            errs = [v for v in (r.get("err_out", math.nan), r.get("err_residual", math.nan)) if not math.isnan(v)]
            rows.append({"impl": name, "case": case.label, "status": r.get("status", "crash"),
                         "error": max(errs) if errs else math.nan, "message": r.get("reason", ""),
                         "err_out": r.get("err_out", math.nan), "err_residual": r.get("err_residual", math.nan),
                         "tolerance": r.get("tolerance", math.nan), "shape": "x".join(map(str, case.shape)),
                         "dtype": case.dtype, "weight_dtype": case.w_dtype,
                         "residual_dtype": case.r_dtype if case.residual else "",
                         "layout": case.layout, "residual": ("x" if case.residual_is_x else "separate")
                         if case.residual else "none", "device": device, "note": r.get("note", ""),
                         "declared": r.get("declared", ""), "seconds": r.get("seconds", math.nan)})
    df = pd.DataFrame(rows, columns=COLUMNS)
    df.attrs["children"] = profile
    df.attrs["wall_s"] = round(wall_s, 2)
    if target is not None:
        from .results import _atomic_write
        _atomic_write(target, df.to_csv(index=False))
        df.attrs["path"] = str(target)
    return df


def check_and_probe(cases, impls="all", device="auto", seed: int = 0, eps: float = 1e-6, probe_cases=None,
                    jobs=None, timeout_s: float = 300, save_path=None, imports=(), isolated=None):
    """``check.check_all(cases, ...)`` and ``probe_support(impls, probe_cases, ...)`` together:
    (check DataFrame, support DataFrame), each as those functions return it.

    When the check runs in children (``isolated``, as ``check_all``'s: None is CUDA with ``jobs`` > 1),
    both run in the same child processes: each implementation is loaded (and a peer that builds on
    load, built) once for its check cases and its probe cases, instead of once for each. Otherwise
    the probe's children run in a thread while the check runs in this process. The inputs and rows are those of the two functions run apart (check case ``i``:
    seed ``seed + i``, its entry's known limits skipped; probe cases: seed ``seed``, run anyway).
    ``timeout_s``: per case (the probe's own default is 120 s). ``.attrs`` of the check frame:
    ``children`` (every child, check and probe cases together) and ``wall_s``; the support frame's
    ``children`` is then empty.
    """
    from .check import _check_args, _check_frame, _check_plan
    from .device import resolve_device, use_triton_interpreter_on_cpu
    from .isolate import run_children

    device = resolve_device(device)
    use_triton_interpreter_on_cpu(device)
    names, cases, jobs, isolated, imports, timeout_s = _check_args(cases, impls, device, jobs, isolated, imports,
                                                                   timeout_s)
    seed, eps = check_seed(seed), check_eps(eps)
    probe_list = _resolve_cases(probe_cases)
    target = _save_target(save_path) if save_path is not None else None
    t0 = time.perf_counter()
    if not isolated:
        future = _probe_in_thread(names, probe_list, device, timeout_s, target, seed, eps, False, imports, jobs)
        check_rows, _ = _check_plan(cases, names, device, seed, eps, False, imports)    # every row made here
        chk = _check_frame(check_rows, {}, cases, names, device, [])
        support = future.result()
        chk.attrs["children"], support.attrs["children"] = support.attrs["children"], []     # every child: here
        chk.attrs["wall_s"] = round(time.perf_counter() - t0, 2)
        return chk, support

    check_rows, check_work = _check_plan(cases, names, device, seed, eps, True, imports)
    probe_rows, probe_work = _probe_plan(names, probe_list, device)
    n = len(cases)                           # one case list: the check's cases, then the probe's
    both = cases + probe_list
    todo = {name: list(idx) for name, idx in check_work}
    for name, idx in probe_work:
        todo.setdefault(name, []).extend(n + i for i in idx)
    work = [(name, todo[name]) for name in names if name in todo]
    profile: list = []
    got = run_children(work, both, device, jobs, timeout_s, [seed + i for i in range(n)] + [seed] * len(probe_list),
                       eps, imports=imports, known_limits=[True] * n + [False] * len(probe_list), profile=profile)
    chk = _check_frame(check_rows, {k: {i: r for i, r in v.items() if i < n} for k, v in got.items()},
                       cases, names, device, profile)
    wall = time.perf_counter() - t0
    support = _probe_frame(probe_rows, {k: {i - n: r for i, r in v.items() if i >= n} for k, v in got.items()},
                           names, probe_list, device, target, [], wall)
    chk.attrs["wall_s"] = round(wall, 2)
    return chk, support


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
    """implementation x case -> 'ok' / 'wrong (err)' / 'error' / 'crash' / 'skip' (cases in probe order)."""
    def cell(r):
        if r["status"] == "wrong" and isinstance(r["error"], float) and not math.isnan(r["error"]):
            return f"wrong ({r['error']:.1e})"
        return r["status"]
    d = df.assign(cell=df.apply(cell, axis=1))
    m = d.pivot(index="impl", columns="case", values="cell")
    return m.reindex(index=list(dict.fromkeys(df["impl"])), columns=list(dict.fromkeys(df["case"])))


# ---------------------------------------------------------------- command line

from .validate import USER_ERRORS, exit_with_error  # noqa: E402
from .validate import OneLineParser as _Parser  # noqa: E402


def main(argv=None, prog: str = "python -m rmsnorm_lab.probe") -> int:
    """The probe's command line (``python -m rmsnorm_lab.probe``; the front door's ``probe``)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    p = _Parser(prog=prog,
                description="Support matrix: every implementation on odd shapes, dtypes and layouts, "
                            "each in a child process (a crash is recorded, not fatal).")
    p.add_argument("--impls", default="all", help="comma-separated implementation names, or 'all'")
    p.add_argument("--cases", nargs="+", default=None, help="default case names (default: all of them)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: auto)")
    p.add_argument("--timeout", type=float, default=120.0, help="seconds per case (default: %(default)s)")
    p.add_argument("--save-path", default=None, help="directory (support_matrix.csv) or .csv file")
    p.add_argument("--jobs", type=int, default=None,
                   help="child processes at once (default: 1.5 per CPU core on CUDA, at most 24; one per core on the CPU)")
    p.add_argument("--list-cases", action="store_true", help="list the default cases, then exit")
    args = p.parse_args(argv)
    if args.list_cases:
        for c in default_cases():
            print(f"{c.name:24s} {c.describe()}{' (CUDA only)' if c.large else ''}")
        return 0
    try:
        df = probe_support(args.impls, args.cases, args.device, args.timeout, args.save_path, progress=True,
                           jobs=args.jobs)
    except USER_ERRORS as e:
        return exit_with_error(prog, e)
    import pandas as pd
    with pd.option_context("display.width", 250, "display.max_columns", 50):
        print(support_matrix(df).T.to_string())
    if "path" in df.attrs:
        print(f"support matrix: {df.attrs['path']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
