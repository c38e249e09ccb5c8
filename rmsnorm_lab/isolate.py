"""Run the cases of one implementation in a child process and survive what it does to that process.

``run_isolated(name, cases, device, ...)`` starts ``python -m rmsnorm_lab.isolate SPEC OUT``: the
child loads the implementation once, runs ``check.check_impl`` on each case and writes one JSON
event per line (``ready``, then ``start`` / ``done`` per case; ``wait`` before a large case's
lock). The parent reads them as they come.
When the child aborts, segfaults, runs past ``timeout_s`` on a case (or ``LOAD_TIMEOUT_FACTOR``
times that while loading) or reports a CUDA fault, the case it was running becomes a ``crash``
row (signal or exit status and its last words on stderr) and a fresh child runs the rest.

``imports``: extra modules (dotted names, or paths of .py files) the child imports before it looks
the implementation up; the entries of their ``IMPLS`` lists join the registry (``import_extra``).

``large_lock``: the path of a lock file shared by children that run at the same time. A child holds
it (``exclusive``) while it builds, runs and frees a ``Case.large`` input on CUDA, so two such inputs
(GiBs each) are never in GPU memory at once; the lock goes with the child if it dies. While a child
waits for it, its case's time-out does not run (the holder's own time-out bounds the wait).
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

    spec = json.loads(Path(spec_path).read_text())
    out = open(out_path, "a", buffering=1)

    def emit(d):
        out.write(json.dumps(d) + "\n")
        out.flush()

    for m in spec.get("imports", []):
        import_extra(m)
    device = spec["device"]
    try:
        get_impl(spec["impl"]).load()
    except Exception as e:  # noqa: BLE001 - every case becomes a skip with the reason
        msg = " ".join(f"failed to load: {type(e).__name__}: {e}".split())[:500]
        for i, _ in spec["cases"]:
            emit({"i": i, "event": "done", "status": "skip", "reason": msg})
        return 0
    emit({"event": "ready"})
    for i, cd in spec["cases"]:
        case = Case.from_dict(cd)
        big = device.startswith("cuda") and case.large
        if big:
            emit({"i": i, "event": "wait"})
        with exclusive(spec.get("large_lock") if big else None):
            emit({"i": i, "event": "start"})
            t0 = time.perf_counter()
            row = check_impl(spec["impl"], case, device, spec["seed"], spec["eps"],
                             known_limits=spec.get("known_limits", True))
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


def _watch(proc, out_path: Path, timeout_s: float, on_done) -> tuple:
    """Read the child's events until it exits or a phase runs past its limit:
    (exit status, index of the case it was running or None, time-out text or "")."""
    current, phase_t0, limit = None, time.monotonic(), timeout_s * LOAD_TIMEOUT_FACTOR
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
            if kind in ("ready", "start"):
                current = ev.get("i")
                phase_t0, limit = time.monotonic(), timeout_s
            elif kind == "wait":            # waiting for the large-input lock: no time-out
                current, limit = ev.get("i"), math.inf
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
                 imports=(), known_limits: bool = True, log=None, large_lock=None) -> dict:
    """index -> check row (``check.check_impl``'s, plus ``seconds``) for each case of ``cases`` (a
    list of ``Case``), each run in a child process; a fresh child after each crash. ``log(i, row)``
    is called as each row arrives. ``large_lock``: a lock file path shared with the children of
    other implementations running at the same time (see the module's docstring)."""
    results: dict = {}
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
            spec_path.write_text(json.dumps({"impl": name, "device": device, "seed": seed, "eps": eps,
                                             "imports": list(imports), "known_limits": known_limits,
                                             "large_lock": None if large_lock is None else os.fspath(large_lock),
                                             "cases": [[i, cases[i].to_dict()] for i in remaining]}))
            out_path.touch()
            with open(err_path, "w") as errf:
                proc = subprocess.Popen([sys.executable, "-m", "rmsnorm_lab.isolate", str(spec_path), str(out_path)],
                                        stdin=subprocess.DEVNULL, stdout=errf, stderr=subprocess.STDOUT, env=env)
                try:
                    rc, current, timed_out = _watch(proc, out_path, timeout_s, done)
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


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if len(argv) != 2:
        print("python -m rmsnorm_lab.isolate: error: expects SPEC_JSON OUT_JSONL", file=sys.stderr)
        return 2
    return _child_main(argv[0], argv[1])


if __name__ == "__main__":
    raise SystemExit(main())
