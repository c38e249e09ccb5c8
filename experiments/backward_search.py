"""Which launch of our Triton backward is fastest per shape, against quack's backward in the same process?

For each (dtype, hidden, tokens, residual) it times every launch of
``rmsnorm_lab.kernels.training._backward`` in a grid (rows per tile x warps x programs per SM x pipeline
stages x one or two column blocks: a non-power-of-two width such as 5120 can run as 4096 + 1024 instead
of 8192 with 3072 masked; from 8192 columns (``--wide-from``) also one pass or two (s and dy re-read,
and w too); a two-pass launch with several programs per SM gets a
register cap (maxnreg) so that they fit an SM's 65536 registers, and is left out under 64 registers),
first in graph mode, then the fastest few, the policy's own launch (``bwd_launch``) and quack in cold
mode too. The kernels compile first in parallel worker processes (Triton's on-disk cache), so the
timing process only loads them. Inputs are generated on the GPU. Writes ``search.csv`` (one row per
launch, shape and mode; ``matches``: ds and dw within two ulps of the policy's launch) and prints, per
shape, the policy's launch, the best one and quack, with % of copy bandwidth.

    python experiments/backward_search.py --hidden 2048,4096,5120 --tokens 4096,65536 --out /tmp/bs
    python experiments/backward_search.py --hidden 16384 --warps 8,16,32 --rows 1 --stages 1 --dry-run

``--rows``, ``--warps``, ``--stages``, ``--reload``, ``--per-sm`` narrow the grid, and ``--wide-from``
sets the width from which two-pass launches join it (two passes at 5120: ``--hidden 5120 --wide-from 2048``);
``--dry-run`` prints the launches and compile jobs it would run (no GPU needed).
"""
from __future__ import annotations

import argparse
import csv
import itertools
import math
import os
import time

FIELDS = ["dtype", "hidden", "tokens", "residual", "launch", "block_n", "tail", "rows", "warps", "per_sm",
          "stages", "reload", "maxnreg", "sum_cols", "sum_rows", "mode", "us", "pct_copy", "policy", "matches"]
WIDE = 8192              # default of --wide-from: from this width the grid also has two-pass launches
REGS_PER_SM = 65536      # 32-bit registers an SM holds (H100, H200)
MIN_REGS = 64            # a register cap below this is left out


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(v) for v in text.split(","))


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dtype", default="bfloat16", help="one or more, e.g. bfloat16,float16 (searched in turn)")
    p.add_argument("--hidden", default="2048,4096,5120,6144,8192,16384")
    p.add_argument("--tokens", default="4096,16384,65536")
    p.add_argument("--residual", default="0,1", help="0, 1 or 0,1")
    p.add_argument("--rows", default="1,2,4,8,16", help="rows per tile in the grid")
    p.add_argument("--warps", default="4,8,16,32", help="warps per program in the grid")
    p.add_argument("--stages", default="1,2", help="pipeline stages in the grid")
    p.add_argument("--wide-from", type=int, default=WIDE,
                   help="the width from which two-pass launches join the grid")
    p.add_argument("--reload", default="0,1,2", help="0 one pass, 1 s and dy re-read, 2 w too (from --wide-from)")
    p.add_argument("--per-sm", default="1,2,4", help="programs per SM in the grid")
    p.add_argument("--sum", default="",
                   help="instead of the grid, the policy's launch with these tiles of dw's second step "
                        "(columns x partial rows a load), e.g. 64x32,0x0 (0x0: sum_launch's choice); all timed cold too")
    p.add_argument("--top", type=int, default=4, help="launches per shape also timed cold")
    p.add_argument("--workers", type=int, default=max(1, (os.cpu_count() or 2) - 2))
    p.add_argument("--budget-ms", type=float, default=15.0)
    p.add_argument("--sm", type=int, default=132, help="SM count for --dry-run (a real run asks the GPU)")
    p.add_argument("--dry-run", action="store_true", help="print the launch and compile-job counts and stop")
    p.add_argument("--out", default="backward-search")
    args = p.parse_args(argv)
    for name in ("rows", "warps", "stages", "reload", "per_sm"):
        setattr(args, name, _ints(getattr(args, name)))
    try:
        args.sum = [tuple(int(v) for v in t.split("x")) for t in args.sum.split(",")] if args.sum else []
    except ValueError:
        p.error(f"--sum: expected COLSxROWS[,COLSxROWS...], e.g. 64x32,0x0; got {args.sum!r}")
    if any(len(t) != 2 or any(v < 0 or v & (v - 1) for v in t) for t in args.sum):
        p.error(f"--sum: columns and rows must be 0 (sum_launch's choice) or powers of two; got {args.sum}")
    return args


def sum_grid(policy, sums) -> dict:
    """{the policy's launch with each (sum_cols, sum_rows): -1} (``--sum``)."""
    import dataclasses
    return {dataclasses.replace(policy, sum_cols=c, sum_rows=r): -1 for c, r in sums}


def column_blocks(hidden: int) -> list[tuple[int, int]]:
    """(block_n, tail) choices: one power-of-two block, and for other widths a power of two + a tail."""
    from rmsnorm_lab.kernels.config import next_pow2
    out = [(next_pow2(hidden), 0)]
    low = 1 << (hidden.bit_length() - 1)
    if low != hidden:
        out.append((low, next_pow2(hidden - low)))
    return out


def compile_shapes(hidden: int, args):
    """(block_n, tail, rows, warps, stages, reload) with 4-64 elements of each tensor per thread;
    reload other than 0 from ``--wide-from`` columns."""
    wide = hidden >= getattr(args, "wide_from", WIDE)
    for (block, tail), rows, warps, stages in itertools.product(column_blocks(hidden), args.rows, args.warps,
                                                                args.stages):
        if 4 <= rows * (block + tail) / (warps * 32) <= 64:
            for reload in (0, 1, 2) if wide else (0,):
                if reload in args.reload:
                    yield block, tail, rows, warps, stages, reload


def reg_cap(per_sm: int, warps: int) -> int | None:
    """maxnreg so that per_sm programs of ``warps`` warps fit an SM's registers: 0 (the compiler's own
    limit) for one program or where that fits, None where the cap would be under MIN_REGS."""
    cap = REGS_PER_SM // (per_sm * warps * 32) // 8 * 8
    if per_sm == 1 or cap >= 255:
        return 0
    return cap if cap >= MIN_REGS else None


def launch_grid(hidden: int, tokens: int, sm: int, args) -> dict:
    """{TrainLaunch: programs per SM} of the grid at one shape. One-pass launches keep the compiler's
    register choice at every per_sm (as the earlier searches ran them)."""
    from rmsnorm_lab.kernels.training import TrainLaunch
    out = {}
    for block, tail, rows, warps, stages, reload in compile_shapes(hidden, args):
        tiles = -(-tokens // rows)
        for per_sm in args.per_sm:
            cap = reg_cap(per_sm, warps) if reload else 0
            if cap is None:
                continue
            programs = max(1, min(tiles, per_sm * sm))
            out.setdefault(TrainLaunch(block, rows, warps, programs, stages, tail, reload, cap), per_sm)
    return out


def compile_key(c) -> tuple:
    """What a compiled kernel depends on (all but the program count)."""
    return c.block_n, c.tail, c.rows, c.warps, c.stages, c.reload, c.maxnreg


def compile_jobs(args, dtypes, hiddens, tokens, residuals, sm) -> list[tuple]:
    from rmsnorm_lab.kernels.training import bwd_launch
    jobs = {}
    for dtype, h, res in itertools.product(dtypes, hiddens, residuals):
        for n in tokens:
            for c in [*([] if args.sum else launch_grid(h, n, sm, args)), bwd_launch(h, n, sm, res)]:
                jobs.setdefault((dtype, h, res, *compile_key(c)), None)
    return list(jobs)


def warm(job) -> str | None:
    """Compile one launch (in a worker) by running it on a small input; None or the error."""
    try:
        import torch

        from rmsnorm_lab import backward as B
        from rmsnorm_lab.kernels.training import TrainLaunch, _backward
        dtype, hidden, residual, block, tail, rows, warps, stages, reload, maxnreg = job
        x, w, _, dy, d_res = B.make_grad_inputs(64, hidden, dtype, residual, "cuda")
        rstd = torch.ones(64, device="cuda")
        _backward(dy, x, w, rstd, d_res, TrainLaunch(block, rows, warps, 2, stages, tail, reload, maxnreg))
        torch.cuda.synchronize()
        return None
    except Exception as e:  # noqa: BLE001
        return f"{job}: {type(e).__name__}: {e}"[:300]


def device_inputs(tokens: int, hidden: int, dtype: str, residual: bool, seed: int = 0):
    """(x, w, r, dy, d_res) as ``backward.make_grad_inputs`` draws them, generated on the GPU (a CPU
    generator takes seconds per 65536 x 16384 tensor)."""
    import torch
    g = torch.Generator(device="cuda").manual_seed(seed)
    dt = getattr(torch, dtype)

    def rnd(scale=1.0):
        return (torch.randn(tokens, hidden, generator=g, device="cuda") * scale).to(dt)
    x = rnd()
    w = (torch.rand(hidden, generator=g, device="cuda") * 1.5 + 0.25).to(dt)
    r = rnd() if residual else None
    dy = rnd()
    d_res = rnd(0.5) if residual else None
    return x, w, r, dy, d_res


def _close(a, b) -> bool:
    import torch
    eps = torch.finfo(a.dtype).eps
    return bool(torch.allclose(a.float(), b.float(), rtol=2 * eps, atol=2 * eps))


def main(argv=None) -> int:
    args = parse_args(argv)
    dtypes = args.dtype.split(",")
    hiddens = list(_ints(args.hidden))
    tokens = list(_ints(args.tokens))
    residuals = [bool(v) for v in _ints(args.residual)]
    if args.dry_run:
        def grid(h, n, res):
            from rmsnorm_lab.kernels.training import bwd_launch
            return sum_grid(bwd_launch(h, n, args.sm, res), args.sum) if args.sum else launch_grid(h, n, args.sm, args)
        for h, n, res in itertools.product(hiddens, tokens, residuals):
            print(f"{h:6} x {n:6}{' +res' if res else '     '}: {len(grid(h, n, res))} launches")
        total = sum(len(grid(h, n, r)) for h, n, r in itertools.product(hiddens, tokens, residuals))
        jobs = compile_jobs(args, dtypes, hiddens, tokens, residuals, args.sm)
        print(f"{len(dtypes)} dtype(s): {total * len(dtypes)} launches timed, {len(jobs)} compile jobs")
        return 0

    import multiprocessing as mp

    from rmsnorm_lab.device import use_expandable_segments
    use_expandable_segments()                    # before CUDA starts (65536-token shapes ran out of memory)
    import torch

    from rmsnorm_lab import backward as B
    from rmsnorm_lab.bandwidth import measure_copy_bandwidth
    from rmsnorm_lab.kernels import training as T
    from rmsnorm_lab.prewarm import worker_init
    from rmsnorm_lab.timing import Runner, time_runner

    os.makedirs(args.out, exist_ok=True)
    sm = torch.cuda.get_device_properties(0).multi_processor_count
    jobs = compile_jobs(args, dtypes, hiddens, tokens, residuals, sm)
    t0 = time.perf_counter()
    with mp.get_context("spawn").Pool(args.workers, initializer=worker_init) as pool:
        errs = [e for e in pool.imap_unordered(warm, jobs, chunksize=1) if e]
    print(f"compiled {len(jobs)} launches in {time.perf_counter() - t0:.0f} s; {len(errs)} failed"
          + (f" ({errs[0]})" if errs else ""), flush=True)
    copy = measure_copy_bandwidth("cuda")
    B.warm_graph_capture()
    quack = B.SUBJECTS.get("quack")
    rows_out: list[dict] = []

    def timed(fn, x, w, mode):
        return time_runner(Runner(fn, x, w, None, 1e-6, False), mode, "cuda", budget_ms=args.budget_ms).median_us

    for dtype in dtypes:
        quack_ops = quack.load() if quack is not None and quack.supports("cuda", dtype) else None
        for h, n, res in itertools.product(hiddens, tokens, residuals):
            t_shape = time.perf_counter()
            x, w, r, dy, d_res = device_inputs(n, h, dtype, res, seed=0)
            if res:
                _, s, rstd = T.fused_add_rmsnorm_fwd(x, r, w, 1e-6)
            else:
                s, (_, rstd) = x, T.rmsnorm_fwd(x, w, 1e-6)
            policy = T.bwd_launch(h, n, sm, res)
            ref_ds, ref_dw = T._backward(dy, s, w, rstd, d_res, policy)
            launches = sum_grid(policy, args.sum) if args.sum else launch_grid(h, n, sm, args)
            launches.setdefault(policy, -1)
            base = {"dtype": dtype, "hidden": h, "tokens": n, "residual": res}
            nbytes = lambda c: B.bwd_bytes(n, h, x.element_size(), res,  # noqa: E731
                                           partial_rows=c.programs)
            graph = {}
            for c in launches:
                try:
                    graph[c] = timed(lambda *_a, c=c: T._backward(dy, s, w, rstd, d_res, c), x, w, "graph")
                except Exception as e:  # noqa: BLE001 - a launch that fails (registers, resources) is left out
                    print(f"  {h} x {n} {c}: {type(e).__name__}: {str(e)[:120]}", flush=True)
            best = sorted(graph, key=graph.get)[:len(graph) if args.sum else args.top]
            cold = {}
            for c in dict.fromkeys(best + [policy]):
                cold[c] = timed(lambda *_a, c=c: T._backward(dy, s, w, rstd, d_res, c), x, w, "cold")
            for c, us in graph.items():
                ds, dw = T._backward(dy, s, w, rstd, d_res, c) if c in cold else (None, None)
                ok = "" if ds is None else _close(ds, ref_ds) and _close(dw, ref_dw)
                for mode, t in (("graph", us), ("cold", cold.get(c))):
                    if t is None:
                        continue
                    rows_out.append({**base, "launch": "ours", "block_n": c.block_n, "tail": c.tail,
                                     "rows": c.rows, "warps": c.warps, "per_sm": launches[c], "stages": c.stages,
                                     "reload": c.reload, "maxnreg": c.maxnreg, "sum_cols": c.sum_cols,
                                     "sum_rows": c.sum_rows, "mode": mode,
                                     "us": round(t, 3),
                                     "pct_copy": round(100 * nbytes(c) / (t * 1e-6) / 1e9 / copy, 1),
                                     "policy": c == policy, "matches": ok})
            q = {}
            if quack_ops is not None:
                st = quack_ops.fwd(x, w, r, 1e-6)
                for mode in ("graph", "cold"):
                    q[mode] = timed(lambda *_a: quack_ops.bwd(st, dy, d_res), x, w, mode)
                    rows_out.append({**base, "launch": "quack", "mode": mode, "us": round(q[mode], 3),
                                     "pct_copy": round(100 * nbytes(policy) / (q[mode] * 1e-6) / 1e9 / copy, 1)})
                del st
            if args.sum:
                print("   " + "  ".join(f"sum {c.sum_cols}x{c.sum_rows}: {cold[c]:.1f} / {graph[c]:.1f}"
                                        for c in cold if c in graph), flush=True)
            bc = min(cold, key=cold.get)
            pct = 100 * nbytes(bc) / (cold[bc] * 1e-6) / 1e9 / copy
            print(f"{dtype:8} {h:6} x {n:6}{' +res' if res else '     '}  policy {cold[policy]:8.1f} / "
                  f"{graph.get(policy, math.nan):8.1f}  best {cold[bc]:8.1f} / {graph[bc]:8.1f} "
                  f"{bc.block_n}+{bc.tail} r{bc.rows} w{bc.warps} p{bc.programs} s{bc.stages} "
                  f"R{bc.reload} m{bc.maxnreg}  quack {q.get('cold', math.nan):8.1f} / "
                  f"{q.get('graph', math.nan):8.1f}  best/quack {cold[bc] / q.get('cold', math.nan):.3f}  "
                  f"{pct:.0f}% copy  ({len(graph)} launches, {time.perf_counter() - t_shape:.0f} s)", flush=True)
            with open(os.path.join(args.out, "search.csv"), "w", newline="") as f:
                wr = csv.DictWriter(f, fieldnames=FIELDS, extrasaction="ignore")
                wr.writeheader()
                wr.writerows(rows_out)
            del x, w, r, dy, d_res, s, rstd, ref_ds, ref_dw
            torch.cuda.empty_cache()
    print(f"copy {copy:.0f} GB/s; {torch.cuda.get_device_name(0)}; cold / graph µs", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
