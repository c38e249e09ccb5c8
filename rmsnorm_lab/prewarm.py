"""Compile ahead, in parallel worker processes, what a run will compile one shape after another.

A GPU run otherwise spends most of its time compiling in sequence (torch.compile graphs per
shape, our kernel per launch config). Workers fill the on-disk caches (Inductor's FX graph cache,
Triton's kernel cache, which persist on the machine and are shared by every process that uses
the same cache directories); the measuring process then loads from them. Timings are unaffected
(compile time is kept out of them anyway), but a ``setup_s`` measured after a prewarm is a cache
hit, not a cold compile.

Each implementation entry says what to compile: ``Impl.prewarm_jobs(cases, device)`` returns
picklable tuples whose first element is its name, and ``Impl.run_prewarm_job(job)`` runs one in a
spawned worker. This module only collects and runs them.

Each worker (``worker_init``) compiles with one Inductor compile thread: several workers each
spawning a compile pool of one process per core would oversubscribe the host.
"""
from __future__ import annotations

import os
import sys
import time


def jobs_for(cases, impls, device: str = "cuda") -> list:
    """The jobs a run over ``cases`` needs, from each named implementation's entry, each once
    (entries without jobs contribute none)."""
    from .impls import get_impl

    jobs: list = []
    seen: set = set()
    for name in impls:
        for job in get_impl(name).prewarm_jobs(list(cases), device) or []:
            job = tuple(job)
            if job[:1] != (name,):
                raise ValueError(f"prewarm: {name}.prewarm_jobs returned {job!r}: a job's first element "
                                 f"must be the implementation's name")
            if job not in seen:
                seen.add(job)
                jobs.append(job)
    return jobs


def single_compile_thread() -> None:
    """Compile with one Inductor thread in this process (torch's default starts a pool of one
    compile process per core; a process among many that compile at once wants one). Call it before
    the first compile: Inductor reads ``TORCHINDUCTOR_COMPILE_THREADS`` when its config is imported
    (not imported here: a process that never compiles need not spend the second it takes), and a
    config already imported is set directly."""
    os.environ["TORCHINDUCTOR_COMPILE_THREADS"] = "1"
    cfg = sys.modules.get("torch._inductor.config")
    if cfg is not None:
        cfg.compile_threads = 1


def worker_init(nice: int = 0) -> None:
    """A prewarm worker's initializer: one compile thread (``single_compile_thread``) and, with
    ``nice`` > 0, a lower CPU priority (POSIX ``nice``; where it is unavailable, none)."""
    single_compile_thread()
    if nice > 0:
        try:
            os.nice(nice)
        except (AttributeError, OSError):
            pass


def warm_job(job) -> str | None:
    """Run one job (in a worker); returns None, or the error as text (the measuring process
    compiles, times and reports that one itself)."""
    try:
        from .impls import get_impl
        if not isinstance(job, tuple) or not job or not isinstance(job[0], str):
            raise ValueError(f"prewarm: a job is a tuple starting with an implementation's name, got {job!r}")
        get_impl(job[0]).run_prewarm_job(job)
        return None
    except Exception as e:  # noqa: BLE001 - reported, never fatal
        return f"{job}: {type(e).__name__}: {e}"[:300]


def prewarm(jobs, workers: int = 8) -> dict:
    """Run ``jobs`` in ``workers`` spawned processes; returns {"jobs", "failed", "seconds", "first_error"}.
    ``workers`` <= 0 or no jobs: does nothing."""
    t0 = time.time()
    errs: list = []
    if workers > 0 and jobs:
        import multiprocessing as mp
        with mp.get_context("spawn").Pool(min(workers, len(jobs)), initializer=worker_init) as pool:
            errs = [e for e in pool.imap_unordered(warm_job, jobs, chunksize=1) if e]
    return {"jobs": len(jobs), "failed": len(errs), "seconds": round(time.time() - t0, 1),
            "first_error": errs[0] if errs else ""}


def default_workers() -> int:
    """Worker processes a prewarm uses by default: about half the CPU cores, 1 to 8."""
    from .device import cpu_cores
    return min(8, max(1, cpu_cores() // 2))


def prewarm_cases(cases, impls, device: str, workers: int = -1) -> dict:
    """Compile ahead for ``cases`` x ``impls`` on a CUDA ``device`` (``workers`` -1: ``default_workers()``);
    on any other device nothing is compiled ahead."""
    if not str(device).startswith("cuda") or workers == 0:
        return {"jobs": 0, "failed": 0, "seconds": 0.0, "first_error": ""}
    jobs = jobs_for(cases, impls, device)
    return prewarm(jobs, workers if workers > 0 else default_workers())
