"""Which launch of our Triton backward is fastest per shape, against quack's backward in the same process?

For each (hidden, tokens, residual) it times every launch of ``rmsnorm_lab.kernels.training._backward``
in a grid (rows per tile x warps x programs per SM x pipeline stages x one or two column blocks:
a non-power-of-two width such as 5120 can run as 4096 + 1024 instead of 8192 with 3072 masked),
first in graph mode, then the fastest few, the policy's own launch (``bwd_launch``) and quack in cold
mode too. The kernels compile first in parallel worker processes (Triton's on-disk cache), so the
timing process only loads them. Writes ``search.csv`` (one row per launch, shape and mode) and
prints, per shape, the policy's launch, the best one and quack, with % of copy bandwidth.

    python experiments/backward_search.py --hidden 2048,4096,5120 --tokens 4096,65536 --out /tmp/bs
"""
from __future__ import annotations

import argparse
import csv
import itertools
import math
import os
import time

FIELDS = ["dtype", "hidden", "tokens", "residual", "launch", "block_n", "tail", "rows", "warps", "per_sm",
          "stages", "mode", "us", "pct_copy", "policy", "matches"]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dtype", default="bfloat16")
    p.add_argument("--hidden", default="2048,4096,5120,6144,8192,16384")
    p.add_argument("--tokens", default="4096,16384,65536")
    p.add_argument("--residual", default="0,1", help="0, 1 or 0,1")
    p.add_argument("--top", type=int, default=4, help="launches per shape also timed cold")
    p.add_argument("--workers", type=int, default=max(1, (os.cpu_count() or 2) - 2))
    p.add_argument("--budget-ms", type=float, default=15.0)
    p.add_argument("--out", default="backward-search")
    return p.parse_args(argv)


def column_blocks(hidden: int) -> list[tuple[int, int]]:
    """(block_n, tail) choices: one power-of-two block, and for other widths a power of two + a tail."""
    from rmsnorm_lab.kernels.config import next_pow2
    out = [(next_pow2(hidden), 0)]
    low = 1 << (hidden.bit_length() - 1)
    if low != hidden:
        out.append((low, next_pow2(hidden - low)))
    return out


def compile_shapes(hidden: int):
    """(block_n, tail, rows, warps, stages) with 4-64 elements of each tensor per thread."""
    for (block, tail), rows, warps, stages in itertools.product(column_blocks(hidden), (1, 2, 4, 8, 16),
                                                                (4, 8, 16, 32), (1, 2)):
        per_thread = rows * (block + tail) / (warps * 32)
        if 4 <= per_thread <= 64:
            yield block, tail, rows, warps, stages


def warm(job) -> str | None:
    """Compile one launch (in a worker) by running it on a small input; None or the error."""
    try:
        import torch

        from rmsnorm_lab import backward as B
        from rmsnorm_lab.kernels.training import TrainLaunch, _backward
        dtype, hidden, residual, block, tail, rows, warps, stages = job
        x, w, _, dy, d_res = B.make_grad_inputs(64, hidden, dtype, residual, "cuda")
        rstd = torch.ones(64, device="cuda")
        _backward(dy, x, w, rstd, d_res, TrainLaunch(block, rows, warps, 2, stages, tail))
        torch.cuda.synchronize()
        return None
    except Exception as e:  # noqa: BLE001
        return f"{job}: {type(e).__name__}: {e}"[:300]


def main(argv=None) -> int:
    args = parse_args(argv)
    import multiprocessing as mp

    import torch

    from rmsnorm_lab import backward as B
    from rmsnorm_lab.bandwidth import measure_copy_bandwidth
    from rmsnorm_lab.kernels import training as T
    from rmsnorm_lab.prewarm import worker_init
    from rmsnorm_lab.timing import Runner, time_runner

    hiddens = [int(v) for v in args.hidden.split(",")]
    tokens = [int(v) for v in args.tokens.split(",")]
    residuals = [bool(int(v)) for v in args.residual.split(",")]
    os.makedirs(args.out, exist_ok=True)
    sm = torch.cuda.get_device_properties(0).multi_processor_count
    jobs = [(args.dtype, h, r, *c) for h in hiddens for r in residuals for c in compile_shapes(h)]
    t0 = time.perf_counter()
    with mp.get_context("spawn").Pool(args.workers, initializer=worker_init) as pool:
        errs = [e for e in pool.imap_unordered(warm, jobs, chunksize=1) if e]
    print(f"compiled {len(jobs)} launches in {time.perf_counter() - t0:.0f} s; {len(errs)} failed"
          + (f" ({errs[0]})" if errs else ""), flush=True)
    copy = measure_copy_bandwidth("cuda")
    B.warm_graph_capture()
    quack = B.SUBJECTS.get("quack")
    quack_ops = quack.load() if quack is not None and quack.supports("cuda", args.dtype) else None
    rows_out: list[dict] = []
    summary = []

    def timed(fn, x, w, mode):
        return time_runner(Runner(fn, x, w, None, 1e-6, False), mode, "cuda", budget_ms=args.budget_ms).median_us

    for h, n, res in itertools.product(hiddens, tokens, residuals):
        x, w, r, dy, d_res = B.make_grad_inputs(n, h, args.dtype, res, "cuda", seed=0)
        if res:
            _, s, rstd = T.fused_add_rmsnorm_fwd(x, r, w, 1e-6)
        else:
            s, (_, rstd) = x, T.rmsnorm_fwd(x, w, 1e-6)
        policy = T.bwd_launch(h, n, sm, res)
        ref_ds, ref_dw = T._backward(dy, s, w, rstd, d_res, policy)
        tiles = lambda rows: -(-n // rows)  # noqa: E731
        launches = {}
        for block, tail, rows, warps, stages in compile_shapes(h):
            for per_sm in (1, 2, 4):
                progs = min(tiles(rows), per_sm * sm)
                launches.setdefault(T.TrainLaunch(block, rows, warps, progs, stages, tail), per_sm)
        launches.setdefault(policy, -1)
        base = {"dtype": args.dtype, "hidden": h, "tokens": n, "residual": res}
        nbytes = lambda c: B.bwd_bytes(n, h, x.element_size(), res, partial_rows=c.programs)  # noqa: E731
        graph = {}
        for c in launches:
            try:
                graph[c] = timed(lambda *_a, c=c: T._backward(dy, s, w, rstd, d_res, c), x, w, "graph")
            except Exception as e:  # noqa: BLE001 - a launch that fails (registers, resources) is left out
                print(f"  {h} x {n} {c}: {type(e).__name__}: {str(e)[:120]}", flush=True)
        best = sorted(graph, key=graph.get)[:args.top]
        cold = {}
        for c in dict.fromkeys(best + [policy]):
            cold[c] = timed(lambda *_a, c=c: T._backward(dy, s, w, rstd, d_res, c), x, w, "cold")
        for c, us in graph.items():
            ds, dw = T._backward(dy, s, w, rstd, d_res, c) if c in cold else (None, None)
            ok = "" if ds is None else bool(torch.equal(ds, ref_ds) and torch.allclose(dw.float(), ref_dw.float(),
                                                                                     rtol=1e-3, atol=1e-3))
            for mode, t in (("graph", us), ("cold", cold.get(c))):
                if t is None:
                    continue
                rows_out.append({**base, "launch": "ours", "block_n": c.block_n, "tail": c.tail, "rows": c.rows,
                                 "warps": c.warps, "per_sm": launches[c], "stages": c.stages, "mode": mode,
                                 "us": round(t, 3), "pct_copy": round(100 * nbytes(c) / (t * 1e-6) / 1e9 / copy, 1),
                                 "policy": c == policy, "matches": ok})
        q = {}
        if quack_ops is not None:
            st = quack_ops.fwd(x, w, r, 1e-6)
            for mode in ("graph", "cold"):
                q[mode] = timed(lambda *_a: quack_ops.bwd(st, dy, d_res), x, w, mode)
                rows_out.append({**base, "launch": "quack", "mode": mode, "us": round(q[mode], 3),
                                 "pct_copy": round(100 * nbytes(policy) / (q[mode] * 1e-6) / 1e9 / copy, 1)})
            del st
        bc = min(cold, key=cold.get)
        summary.append((h, n, res, cold[policy], graph.get(policy), bc, cold[bc], graph[bc], q.get("cold"),
                        q.get("graph"), 100 * nbytes(bc) / (cold[bc] * 1e-6) / 1e9 / copy))
        print(f"{h:6} x {n:6}{' +res' if res else '     '}  policy {cold[policy]:8.1f} / {graph.get(policy, math.nan):8.1f}"
              f"  best {cold[bc]:8.1f} / {graph[bc]:8.1f} {bc.block_n}+{bc.tail} r{bc.rows} w{bc.warps} "
              f"p{bc.programs} s{bc.stages}  quack {q.get('cold', math.nan):8.1f} / {q.get('graph', math.nan):8.1f}"
              f"  best/quack {cold[bc] / q.get('cold', math.nan):.3f}  {summary[-1][-1]:.0f}% copy", flush=True)
        with open(os.path.join(args.out, "search.csv"), "w", newline="") as f:
            wr = csv.DictWriter(f, fieldnames=FIELDS, extrasaction="ignore")
            wr.writeheader()
            wr.writerows(rows_out)
        del x, w, r, dy, d_res, s, rstd, ref_ds, ref_dw
        torch.cuda.empty_cache()
    print(f"copy {copy:.0f} GB/s; {torch.cuda.get_device_name(0)}; {args.dtype}; cold / graph µs", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
