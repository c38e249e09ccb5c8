"""Run the cases of one implementation in a child process and survive what it does to that process.

``run_isolated(name, cases, device, ...)`` starts ``python -m rmsnorm_lab.isolate SPEC OUT``: the
child loads the implementation once, runs ``check.check_impl`` on each case and writes one JSON
event per line (``ready``, then ``start`` / ``done`` per case; ``wait`` before a large case's
lock). The parent reads them as they come.
When the child aborts, segfaults, runs past ``timeout_s`` on a case (or ``LOAD_TIMEOUT_FACTOR``
times that while loading, at least ``LOAD_TIMEOUT_MIN_S``) or reports a CUDA fault, the case it was running becomes a ``crash``
row (signal or exit status and its last words on stderr) and a fresh child runs the rest.

``seeds``: a seed per case (the inputs of case ``i`` are ``make_inputs(case, device, seeds[i])``),
so a case gives the same inputs in whichever child it runs.

``imports``: extra modules (dotted names, or paths of .py files) the child imports before it looks
the implementation up; the entries of their ``IMPLS`` lists join the registry (``import_extra``).

``large_lock``: the path of a lock file shared by children that run at the same time. A child holds
it (``exclusive``) while it builds, runs and frees a ``Case.large`` input on CUDA, so two such inputs
(GiBs each) are never in GPU memory at once; the lock goes with the child if it dies. While a child
waits for it, its case's time-out does not run (the holder's own time-out bounds the wait).

``run_children(work, cases, ...)`` runs the cases of several implementations, several children at
once (``jobs``), and splits an implementation that compiles per case (``Impl.prewarm_jobs``) among
several children (``shard``); ``check.check_all`` and ``probe.probe_support`` both use it. Each
child compiles with one Inductor thread (``prewarm.single_compile_thread``): many children each
starting a compile pool of one process per core would oversubscribe the host.
"""
from __future__ import annotations

import contextlib
import importlib
import importlib.util
import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

FATAL_EXIT = 3      # a child's exit status after it reported a case that broke its GPU context
LOAD_TIMEOUT_FACTOR = 5      # importing / JIT-building a peer may take longer than one case
LOAD_TIMEOUT_MIN_S = 60      # and importing torch and CUDA alone takes seconds on a busy host, whatever the case limit
CHILD_NICE = 5      # run_children's children of entries that do not build on load: a build gets the cores first


def import_extra(spec: str):
    """Import a module by dotted name or by the path of a .py file; the entries in its ``IMPLS``
    list (as in the modules of ``rmsnorm_lab.impls``) join the registry."""
    from .impls import register, registry

    if spec.endswith(".py"):
        p = Path(spec).resolve()
        name = f"_rmsnorm_lab_extra_{p.stem}"
        mod = sys.modules.get(name)
        if mod is None:
            s = importlib.util.spec_from_file_location(name, p)
            if s is None or s.loader is None:
                raise ImportError(f"imports: cannot import {spec!r}")
            mod = importlib.util.module_from_spec(s)
            sys.modules[name] = mod
            s.loader.exec_module(mod)
    else:
        mod = importlib.import_module(spec)
    for impl in getattr(mod, "IMPLS", []):
        if impl.name not in registry():
            register(impl)
    return mod


def import_all(imports) -> list[str]:
    """The ``imports`` argument (one module, or a list of dotted names / .py paths) as a list of
    str, each imported here (``import_extra``)."""
    if isinstance(imports, (str, os.PathLike)):
        imports = [imports]
    if not hasattr(imports, "__iter__"):
        raise TypeError(f"imports: expected a list of module names or .py paths, got {imports!r} "
                        f"({type(imports).__name__})")
    out = []
    for m in imports:
        if not isinstance(m, (str, os.PathLike)):
            raise TypeError(f"imports: expected module names or .py paths, got {m!r} ({type(m).__name__})")
        out.append(os.fspath(m))
    for m in out:
        import_extra(m)
    return out


@contextlib.contextmanager
def exclusive(path):
    """Hold an exclusive ``fcntl.flock`` on the file ``path`` (created if missing) for the body; other
    processes block until it is released. The kernel releases it when the holder dies. ``path``
    None, or no ``fcntl`` on this platform: no lock."""
    try:
        import fcntl
    except ImportError:             # not a POSIX system: run unlocked
        fcntl = None
    if path is None or fcntl is None:
        yield
        return
    with open(path, "a") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


# ---------------------------------------------------------------- the child

def _child_main(spec_path: str, out_path: str) -> int:
    import faulthandler
    faulthandler.enable()               # an abort or segfault leaves its last words on stderr

    from .cases import Case
    from .check import check_impl
    from .impls import get_impl
    from .prewarm import single_compile_thread

    spec = json.loads(Path(spec_path).read_text())
    if spec.get("nice") and hasattr(os, "nice"):       # POSIX only; elsewhere the caller's priority
        os.nice(int(spec["nice"]))
    single_compile_thread()             # before the implementation loads (and compiles anything)
    out = open(out_path, "a", buffering=1)

    def emit(d):
        out.write(json.dumps(d) + "\n")
        out.flush()

    t_load = time.perf_counter()
    for m in spec.get("imports", []):
        import_extra(m)
    device = spec["device"]
    try:
        get_impl(spec["impl"]).load()
    except Exception as e:  # noqa: BLE001 - every case becomes a skip with the reason
        msg = " ".join(f"failed to load: {type(e).__name__}: {e}".split())[:500]
        for i, *_ in spec["cases"]:
            emit({"i": i, "event": "done", "status": "skip", "reason": msg})
        return 0
    emit({"event": "ready", "load_s": round(time.perf_counter() - t_load, 3)})
    for i, cd, seed, known_limits in spec["cases"]:
        case = Case.from_dict(cd)
        big = device.startswith("cuda") and case.large
        if big:
            emit({"i": i, "event": "wait"})
        with exclusive(spec.get("large_lock") if big else None):
            emit({"i": i, "event": "start"})
            t0 = time.perf_counter()
            row = check_impl(spec["impl"], case, device, seed, spec["eps"], known_limits=known_limits)
            fatal = row.pop("fatal", False)
            emit({"i": i, "event": "done", **row, "seconds": round(time.perf_counter() - t0, 3)})
            if fatal:
                return FATAL_EXIT       # the GPU context is unusable: the parent starts a fresh child
            if big:                     # free the inputs before the next child may build its own
                import gc

                import torch
                gc.collect()
                torch.cuda.empty_cache()
    return 0


# ---------------------------------------------------------------- the parent

def crash_message(rc, stderr_text: str, timed_out: str = "") -> str:
    """One line: how the child ended (signal, exit status or time-out) and its last words."""
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
    root = str(Path(__file__).resolve().parents[1])       # the child imports this very package
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.setdefault("PYTHONFAULTHANDLER", "1")
    return env


def _watch(proc, out_path: Path, timeout_s: float, on_done, phases: dict | None = None) -> tuple:
    """Read the child's events until it exits or a phase runs past its limit:
    (exit status, index of the case it was running or None, time-out text or "").
    ``phases``: a dict that gets the seconds from the start to ``ready`` (``ready_s``: starting
    Python, torch and the package, then loading), the child's own loading (``load_s``: importing
    the implementation and building what it builds) and the waits for the large-input lock
    (``wait_s``), each added to what is there."""
    t_start = time.monotonic()
    current, phase_t0, limit = None, t_start, max(timeout_s * LOAD_TIMEOUT_FACTOR, LOAD_TIMEOUT_MIN_S)
    t_wait = None
    pos, buf = 0, ""
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
            kind = ev.pop("event")
            now = time.monotonic()
            if phases is not None and kind == "ready":
                phases["ready_s"] = phases.get("ready_s", 0.0) + now - t_start
                phases["load_s"] = phases.get("load_s", 0.0) + float(ev.get("load_s") or 0.0)
            if phases is not None and kind == "start" and t_wait is not None:
                phases["wait_s"] = phases.get("wait_s", 0.0) + now - t_wait
                t_wait = None
            if kind in ("ready", "start"):
                current = ev.get("i")
                phase_t0, limit = now, timeout_s
            elif kind == "wait":            # waiting for the large-input lock: no time-out
                current, limit, t_wait = ev.get("i"), math.inf, now
            elif kind == "done":
                on_done(ev.pop("i"), ev)
                current = None
        if rc is not None:
            return rc, current, ""
        if time.monotonic() - phase_t0 > limit:
            proc.kill()
            proc.wait()
            return proc.returncode, current, f"timed out after {limit:g} s"
        time.sleep(0.02)


def run_isolated(name: str, cases, device: str, timeout_s: float = 120, seed: int = 0, eps: float = 1e-6,
                 imports=(), known_limits: bool = True, log=None, large_lock=None, seeds=None,
                 phases: dict | None = None, nice: int = 0) -> dict:
    """index -> check row (``check.check_impl``'s, plus ``seconds``) for each case of ``cases`` (a
    list of ``Case``), each run in a child process; a fresh child after each crash. ``log(i, row)``
    is called as each row arrives. ``large_lock``: a lock file path shared with the children of
    other implementations running at the same time (see the module's docstring). ``seeds``: the
    seed of each case (a list as long as ``cases``); None: ``seed`` for every case.
    ``known_limits``: skip the inputs the entry declares it fails on (``check.check_impl``); a bool,
    or a list with one per case. ``nice``: the child lowers its CPU priority by this much first
    (checks time nothing, so no figure depends on it)."""
    results: dict = {}
    seeds = [seed] * len(cases) if seeds is None else [int(s) for s in seeds]
    if len(seeds) != len(cases):
        raise ValueError(f"seeds: expected one seed per case ({len(cases)}), got {len(seeds)}")
    limits = [bool(known_limits)] * len(cases) if isinstance(known_limits, bool) else [bool(k) for k in known_limits]
    if len(limits) != len(cases):
        raise ValueError(f"known_limits: expected one per case ({len(cases)}), got {len(limits)}")
    remaining = list(range(len(cases)))
    env = _child_env()

    def done(i, row):
        results[i] = row
        if log:
            log(i, row)

    with tempfile.TemporaryDirectory(prefix="rmsnorm-isolate-") as td:
        attempt = 0
        while remaining:
            attempt += 1
            spec_path = Path(td) / f"spec{attempt}.json"
            out_path = Path(td) / f"out{attempt}.jsonl"
            err_path = Path(td) / f"err{attempt}.txt"
            spec_path.write_text(json.dumps({"impl": name, "device": device, "eps": eps, "nice": int(nice),
                                             "imports": list(imports),
                                             "large_lock": None if large_lock is None else os.fspath(large_lock),
                                             "cases": [[i, cases[i].to_dict(), seeds[i], limits[i]]
                                                       for i in remaining]}))
            out_path.touch()
            with open(err_path, "w") as errf:
                proc = subprocess.Popen([sys.executable, "-m", "rmsnorm_lab.isolate", str(spec_path), str(out_path)],
                                        stdin=subprocess.DEVNULL, stdout=errf, stderr=subprocess.STDOUT, env=env)
                try:
                    rc, current, timed_out = _watch(proc, out_path, timeout_s, done, phases)
                except BaseException:       # interrupted (Ctrl-C, a failing log callback): no orphan child
                    proc.kill()
                    proc.wait()
                    raise
            stderr_text = err_path.read_text(errors="replace")
            left = [i for i in remaining if i not in results]
            if timed_out and current is not None:
                timed_out += f" (case {cases[current].label!r})"
            elif timed_out:
                timed_out += " (loading)"
            if current is not None and current in left:
                done(current, {"status": "crash", "reason": crash_message(rc, stderr_text, timed_out)})
            elif left and rc == FATAL_EXIT and not timed_out and len(left) < len(remaining):
                pass                # the fault was reported against its case: a fresh child runs the rest
            elif left:
                # died while loading or between cases: no case to blame, so blame them all (no endless loop)
                msg = crash_message(rc, stderr_text, timed_out) if (rc != 0 or timed_out) else \
                    "child process exited without running this case"
                for i in left:
                    done(i, {"status": "crash", "reason": msg})
            remaining = [i for i in remaining if i not in results]
    return results

# ---------------------------------------------------------------- many children

MAX_JOBS = 24               # children at once by default, at most (``default_jobs``)
COMPILES_PER_CHILD = 24     # compile jobs one child takes on before its entry is split (``shard``): a child
                            # costs ~10 s to start on a busy host (torch, CUDA, the library), a compile ~0.7 s
CHILD_START_S, LIBRARY_S, COMPILE_S, CASE_S = 10.0, 8.0, 0.7, 0.1   # a child's cost model (seconds seen on an
                            # H200's 16-core host): start, importing a library beyond torch, one compile job, one case


def default_jobs(device: str) -> int:
    """How many children run at once by default: on CUDA 1.5 per CPU core, 1 to ``MAX_JOBS`` (each
    child imports torch and compiles on one core, and spends much of its time waiting: on imports, the
    GPU, a build lock; 8 and 16 children kept a 16-core H200 host 34-49% busy); one per core on the
    CPU, where the cases themselves run on the cores."""
    from .device import cpu_cores
    if not str(device).startswith("cuda"):
        return max(1, min(MAX_JOBS, cpu_cores()))
    return max(1, min(MAX_JOBS, cpu_cores() * 3 // 2))


def check_jobs(jobs, device: str) -> int:
    """``jobs`` validated (a positive int), or ``default_jobs(device)`` for None."""
    if jobs is None:
        return default_jobs(device)
    if isinstance(jobs, bool) or not isinstance(jobs, int):
        raise TypeError(f"jobs: expected a positive int or None, got {jobs!r} ({type(jobs).__name__})")
    if jobs < 1:
        raise ValueError(f"jobs: expected a positive int or None, got {jobs!r}")
    return jobs


def _compile_jobs(entry, cases, device) -> frozenset:
    """What compiling ``cases`` takes: the entry's prewarm jobs, else its JIT compile keys."""
    jobs = frozenset(tuple(j) for j in entry.prewarm_jobs(list(cases), device) or ())
    if not jobs and entry.compile_key is not None:
        jobs = frozenset(("key", entry.compile_key(c)) for c in cases)
    return jobs


def shard(name: str, cases, todo, device: str, jobs: int, per_child: int | None = None) -> list:
    """Split the cases ``todo`` (indices into ``cases``) of implementation ``name`` among children:
    an entry that compiles per case (``Impl.prewarm_jobs`` of these cases, else its JIT
    ``Impl.compile_key``s: n jobs) gets
    ceil(n / ``per_child``) children, at most ``jobs``; the cases that share a compile job stay in
    one child, and the children get about as many cases each (a job's cases may still compile apart:
    a compiler that specializes on strides or alignment, which the job does not name). An entry
    without compile jobs, or ``jobs`` 1, gets one child. Returns lists of indices, each ascending."""
    from .impls import get_impl

    todo = list(todo)
    per_child = COMPILES_PER_CHILD if per_child is None else per_child
    if jobs <= 1 or len(todo) <= 1:
        return [todo]
    entry = get_impl(name)
    groups: list = []           # [compile jobs, cases]: a case joins a group when it adds no job to it
    try:
        for i in todo:
            for g in groups:
                if _compile_jobs(entry, [cases[j] for j in g[1]] + [cases[i]], device) == g[0]:
                    g[1].append(i)
                    break
            else:
                groups.append([_compile_jobs(entry, [cases[i]], device), [i]])
    except Exception:  # noqa: BLE001 - a hook that fails, or jobs that cannot be compared: one child
        return [todo]
    n_jobs = len(frozenset().union(*(g[0] for g in groups)))
    n = min(jobs, len(groups), math.ceil(n_jobs / max(1, per_child)))
    if n <= 1:
        return [todo]
    parts: list = [[] for _ in range(n)]
    for _, idx in sorted(groups, key=lambda g: -len(g[1])):        # largest group first, to the smallest part
        min(parts, key=len).extend(idx)
    return [sorted(p) for p in parts if p]


def child_cost(name: str, part, cases, device: str) -> float:
    """Seconds a child running ``part`` (indices into ``cases``) of implementation ``name`` is expected
    to take: ``CHILD_START_S``, ``LIBRARY_S`` when it imports a library beyond torch (``Impl.requires``),
    ``COMPILE_S`` per compile job of its cases (``Impl.prewarm_jobs``, else its JIT compile keys) and
    ``CASE_S`` per case. Only used to start the longest children first."""
    from .impls import get_impl, registry

    n_jobs, library = 0, False
    if name in registry():
        entry = get_impl(name)
        library = any(m != "torch" for m in entry.requires)
        try:
            n_jobs = len(_compile_jobs(entry, [cases[i] for i in part], device))
        except Exception:  # noqa: BLE001 - a failing hook: no compile jobs assumed
            n_jobs = 0
    return CHILD_START_S + LIBRARY_S * library + COMPILE_S * n_jobs + CASE_S * len(part)


def expected_failures(name: str, cases, todo, device: str, limits) -> list:
    """The indices in ``todo`` run despite a known limit (``limits[i]`` false) that implementation
    ``name`` says faults the GPU context (``Impl.supports`` -> ``Support.fault``): the cases likely to
    crash its child."""
    from .impls import get_impl, registry

    if name not in registry():
        return []
    entry = get_impl(name)
    if not entry.available(device):
        return []
    out = []
    for i in todo:
        if limits[i]:
            continue
        try:
            s = entry.supports(cases[i], device)
            if not s and s.fault:
                out.append(i)
        except Exception:  # noqa: BLE001 - a failing check: run it with the others
            pass
    return out


def run_children(work, cases, device: str, jobs: int = 1, timeout_s: float = 120, seeds=0, eps: float = 1e-6,
                 imports=(), known_limits: bool = True, log=None, per_child: int | None = None,
                 profile: list | None = None) -> dict:
    """Run ``work`` (a list of (implementation name, indices into ``cases``)) in child processes,
    ``jobs`` at once; each implementation's cases split among children by ``shard``. ``seeds``: one
    seed for every case, or a list with one per case of ``cases``. ``log(name, i, row)`` as each row
    arrives. The 2**31+ element cases run one at a time across all these children (a lock file).
    ``known_limits``: a bool, or a list with one per case of ``cases`` (``run_isolated``).

    Returns {name: {index: row}} (``run_isolated``'s rows); the rows do not depend on ``jobs``.
    A case run despite a limit its entry knows of (``known_limits`` false for it) that the entry says
    faults the GPU context (``expected_failures``: e.g. a misaligned input) gets a child of its own, so
    that its crash costs no other case a fresh child (FlashInfer's CUDA child took five in a row,
    ~8 s each).
    The children of an entry that builds on load (``Impl.load_builds``: its build is the longest
    wait, and the library's own lock makes its other children wait for it) start first, then the others,
    the longest first by ``child_cost`` (so the last to start are short). ``profile``: a list that gets
    one dict per child, in order of start (its ``impl``, ``cases``, ``start_s`` and ``end_s`` from the
    first child's start, ``ready_s``: from its start until it had loaded the implementation, of which
    ``load_s`` the loading itself (imports and builds), ``wait_s``: waiting for the large-input lock,
    ``case_s``: the seconds its cases took; a fresh child after a crash adds its own to the same dict).
    With ``jobs`` > 1 the children of entries that do not build run at ``CHILD_NICE``: an nvcc build
    (in a child, or made ahead by the report runner) is the longest path and shares the host with
    ~1.5 children per core; the checks time nothing, so the priority moves no figure.
    """
    from concurrent.futures import ThreadPoolExecutor

    from .impls import get_impl, registry

    cases = list(cases)
    seeds = [seeds] * len(cases) if isinstance(seeds, int) else list(seeds)
    limits = [known_limits] * len(cases) if isinstance(known_limits, bool) else list(known_limits)
    units = []
    for name, todo in work:
        alone = expected_failures(name, cases, todo, device, limits) if jobs > 1 else []
        skip = set(alone)
        rest = [i for i in todo if i not in skip]
        parts = (shard(name, cases, rest, device, jobs, per_child) if rest else []) + [[i] for i in alone]
        builds = get_impl(name).load_builds if name in registry() else False
        nice = 0 if builds or jobs <= 1 else CHILD_NICE
        units += [(not builds, -child_cost(name, p, cases, device), name, p, nice) for p in parts]
    units = [u[2:] for u in sorted(units, key=lambda u: u[:2])]      # stable: work order among equals
    results: dict = {name: {} for name, _ in work}

    with tempfile.TemporaryDirectory(prefix="rmsnorm-children-") as td:
        lock_path = os.path.join(td, "large.lock")

        t_first = time.perf_counter()

        def one(name, part, nice):
            def on_row(j, row):
                if log:
                    log(name, part[j], row)
            t0 = time.perf_counter()
            phases: dict = {}
            got = run_isolated(name, [cases[i] for i in part], device, timeout_s, eps=eps, imports=imports,
                               known_limits=[limits[i] for i in part], log=on_row, large_lock=lock_path,
                               seeds=[seeds[i] for i in part], phases=phases, nice=nice)
            if profile is not None:
                profile.append({"impl": name, "cases": len(part), "start_s": round(t0 - t_first, 2),
                                "end_s": round(time.perf_counter() - t_first, 2), "nice": nice,
                                **{k: round(phases.get(k, 0.0), 2) for k in ("ready_s", "load_s", "wait_s")},
                                "case_s": round(sum(float(r.get("seconds") or 0) for r in got.values()), 2)})
            return name, {part[j]: row for j, row in got.items()}

        if jobs <= 1 or len(units) <= 1:
            done = [one(*u) for u in units]
        else:
            pool = ThreadPoolExecutor(max_workers=min(jobs, len(units)), thread_name_prefix="rmsnorm-child")
            try:
                futures = [pool.submit(one, *u) for u in units]
                done = [f.result() for f in futures]
            except BaseException:           # interrupted: start no more children
                pool.shutdown(wait=True, cancel_futures=True)
                raise
            pool.shutdown()
        for name, rows in done:
            results[name].update(rows)
    if profile is not None:
        profile.sort(key=lambda u: u["start_s"])
    return results


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if len(argv) != 2:
        print("python -m rmsnorm_lab.isolate: error: expects SPEC_JSON OUT_JSONL", file=sys.stderr)
        return 2
    return _child_main(argv[0], argv[1])


if __name__ == "__main__":
    raise SystemExit(main())
