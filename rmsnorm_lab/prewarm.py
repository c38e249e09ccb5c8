"""Compile ahead, in parallel worker processes: torch.compile graphs and our kernel's configs.

A long GPU run otherwise spends most of its time compiling, one shape after another (the H100
target run of 2026-11-25: 272 s of 600 in torch.compile, 70 s in our kernel). Workers fill the
on-disk caches (Inductor's FX graph cache, Triton's kernel cache); the measuring process then
loads from them. Timings are unaffected (compile time is kept out of them anyway), but a
``setup_s`` measured after a prewarm is a cache hit, not a cold compile.

Jobs are tuples, so they pickle to ``spawn`` workers:
``("tc", batch, seq, hidden, residual, dtype)`` warms torch.compile's graph for that shape;
``("triton", hidden, residual, dtype, LaunchConfig)`` compiles our kernel with that launch config.
"""
from __future__ import annotations

import time

EPS = 1e-6


def jobs_for(cases, impls) -> list:
    """The jobs a sweep over ``cases`` needs: torch.compile's graphs (if timed) and the configs
    our kernel's table picks (if timed), each once."""
    jobs = []
    if "torch_compile" in impls:
        jobs += [("tc", c.batch, c.seq, c.hidden, c.residual, c.dtype) for c in cases]
    if "triton" in impls:
        from .impls import get_impl
        jobs += get_impl("triton").prewarm_jobs(cases, "cuda")
    return jobs


def warm_job(job) -> str | None:
    """Run one job (in a worker); returns None, or the error as text (the measuring process
    compiles, times and reports that one itself)."""
    try:
        import torch

        if job[0] == "tc":
            from .impls import get_impl
            _, batch, seq, hidden, residual, dtype = job
            fn = get_impl("torch_compile").load()
            dt = getattr(torch, dtype)      # the values don't matter to the graph; shape, dtype, device do
            x = torch.zeros(batch, seq, hidden, dtype=dt, device="cuda")
            w = torch.ones(hidden, dtype=dt, device="cuda")
            fn.warm(x, w, torch.zeros_like(x) if residual else None, EPS)
        elif job[0] == "triton":
            from .impls import get_impl
            get_impl("triton").run_prewarm_job(job)
        else:
            raise ValueError(f"prewarm: unknown job kind {job[0]!r}")
        torch.cuda.synchronize()
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
        with mp.get_context("spawn").Pool(workers) as pool:
            errs = [e for e in pool.imap_unordered(warm_job, jobs, chunksize=2) if e]
    return {"jobs": len(jobs), "failed": len(errs), "seconds": round(time.time() - t0, 1),
            "first_error": errs[0] if errs else ""}
