"""RMSNorm's backward on one GPU: every subject's gradients checked against float64, then timed.

For each subject that can run here (rmsnorm_lab.backward.SUBJECTS): check dx, dw (and the
residual's gradient) of the backward alone and of forward + backward against float64 autograd,
then time the backward alone (the forward's saved state ready) and forward + backward, in cold
and graph modes (rmsnorm_lab.timing). Writes one tidy CSV row per (impl, pass, dtype, hidden,
tokens, residual, mode) and prints ours against the best peer per shape.

    python experiments/backward_bench.py                 # reduced grid (a few minutes on an H200)
    python experiments/backward_bench.py --full         # hidden 2048-16384 x tokens 1024-65536
    python experiments/backward_bench.py --smoke        # one tiny shape (CPU: ours under TRITON_INTERPRET=1)

Bytes model: rmsnorm_lab.backward.pass_bytes (dw partials counted as one fp32 row per SM);
% of copy is against a device-to-device copy timed in the same process (cold).
Run with rmsnorm_lab importable (pip install -e . or PYTHONPATH at the repository root).
"""
from __future__ import annotations

import argparse
import csv
import gc
import math
import sys
import time

COLUMNS = ["impl", "pass", "dtype", "hidden", "tokens", "residual", "mode", "us_median", "us_p20", "us_p80",
           "gbps", "pct_copy", "err_dx", "err_dw", "status", "err_dr", "reason", "device"]
REDUCED = {"hidden": [2048, 4096, 8192, 16384], "tokens": [4096, 65536], "residual_hidden": [4096, 8192],
           "max_elements": 2**29}     # 16384 x 65536 left out: HF's fp32 intermediates fill the GPU
FULL = {"hidden": [2048, 4096, 5120, 6144, 8192, 16384], "tokens": [1024, 4096, 8192, 16384, 32768, 65536],
        "residual_hidden": [2048, 4096, 5120, 6144, 8192, 16384]}
SMOKE = {"hidden": [96], "tokens": [8], "residual_hidden": [96]}
PASSES = ("bwd", "fwd+bwd")
EPS = 1e-6


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--full", action="store_true", help="the whole grid (hidden 2048-16384 x tokens 1024-65536)")
    p.add_argument("--smoke", action="store_true", help="one tiny shape (the default on a machine without CUDA)")
    p.add_argument("--dtypes", default=None, help="comma-separated (default bfloat16,float16; smoke: float32)")
    p.add_argument("--impls", default=None, help="comma-separated subjects (default: every one that runs here; "
                   "smoke: huggingface,torch,triton)")
    p.add_argument("--modes", default=None,
                   help="comma-separated timing modes (default cold,graph on CUDA, cold on CPU)")
    p.add_argument("--hidden", default=None, help="comma-separated hidden sizes (replace the grid's)")
    p.add_argument("--tokens", default=None, help="comma-separated token counts (replace the grid's)")
    p.add_argument("--budget-ms", type=float, default=25.0, help="timing budget per point (ms)")
    p.add_argument("--out", default="backward_bench.csv", help="CSV path")
    return p.parse_args(argv)


def copy_gbps(device: str, budget_ms: float) -> float:
    """Device-to-device copy bandwidth (bytes read + written per second, in GB/s), cold L2."""
    from rmsnorm_lab.bandwidth import same_size_copy_runner
    from rmsnorm_lab.timing import time_runner
    n = (512 if device.startswith("cuda") else 8) * 2**20      # bytes copied: 2n moved
    t = time_runner(same_size_copy_runner(2 * n, device), "cold", device, budget_ms=budget_ms)
    return 2 * n / (t.median_us * 1e-6) / 1e9


def cases(grid, dtypes):
    for dt in dtypes:
        for h in grid["hidden"]:
            for res in (False, True):
                if res and h not in grid["residual_hidden"]:
                    continue
                for t in grid["tokens"]:
                    if h * t > grid.get("max_elements", h * t):
                        continue
                    yield dt, h, t, res


def run(argv=None) -> int:
    args = parse_args(argv)
    import torch

    from rmsnorm_lab import backward as B
    from rmsnorm_lab.timing import Runner, time_runner

    device = "cuda" if torch.cuda.is_available() else "cpu"
    smoke = args.smoke or device == "cpu"
    grid = dict(SMOKE if smoke else (FULL if args.full else REDUCED))
    if args.hidden:
        grid["hidden"] = grid["residual_hidden"] = [int(v) for v in args.hidden.split(",")]
    if args.tokens:
        grid["tokens"] = [int(v) for v in args.tokens.split(",")]
    dtypes = (args.dtypes or ("float32" if smoke else "bfloat16,float16")).split(",")
    modes = (args.modes or ("cold,graph" if device == "cuda" else "cold")).split(",")
    names = args.impls or ("huggingface,torch,triton" if smoke else None)
    subjects = B.subjects(names)
    sm = torch.cuda.get_device_properties(0).multi_processor_count if device == "cuda" else 0
    ceiling = copy_gbps(device, args.budget_ms)
    print(f"device {torch.cuda.get_device_name(0) if device == 'cuda' else 'cpu'}; copy {ceiling:.0f} GB/s; "
          f"modes {','.join(modes)}; dtypes {','.join(dtypes)}", flush=True)
    if device == "cuda" and "graph" in modes:
        B.warm_graph_capture()
    rows = []
    t_start = time.perf_counter()
    for dt, hidden, tokens, res in cases(grid, dtypes):
        x, w, r, dy, d_res = B.make_grad_inputs(tokens, hidden, dt, res, device, seed=0)
        ref = B.reference_grads(x, w, r, EPS, dy, d_res)
        base = {"dtype": dt, "hidden": hidden, "tokens": tokens, "residual": res, "device": device}
        for s in subjects:
            sup = s.supports(device, dt)
            if not sup:
                rows += [{**base, "impl": s.name, "pass": p, "mode": m, "status": "skip", "reason": sup.reason}
                         for p in PASSES for m in modes]
                continue
            rows += measure(s, B, Runner, time_runner, x, w, r, dy, d_res, ref, base, modes, args.budget_ms,
                            device, sm, ceiling)
        del x, w, r, dy, d_res, ref
        gc.collect()
        if device == "cuda":
            torch.cuda.empty_cache()           # the next (larger) case needs the memory this one cached
        write_csv(args.out, rows)              # after every case: a run cut short keeps what it measured
        print(f"  {dt} {hidden} x {tokens}{' + res' if res else ''} done "
              f"({time.perf_counter() - t_start:.0f} s)", flush=True)
    write_csv(args.out, rows)
    print_table(rows)
    bad = [r for r in rows if r["status"] in ("wrong", "error")]
    print(f"wrote {len(rows)} rows to {args.out}; {len(bad)} wrong/error rows", flush=True)
    return 0


def measure(s, B, Runner, time_runner, x, w, r, dy, d_res, ref, base, modes, budget_ms, device, sm, ceiling):
    """Check a subject's gradients (backward alone, then forward + backward), then time both passes."""
    rows = []
    try:
        ops = s.load()
        checks = {"bwd": B.check_grads(ops, x, w, r, EPS, dy, d_res, base["dtype"], ref, "bwd"),
                  "fwd+bwd": B.check_grads(ops, x, w, r, EPS, dy, d_res, base["dtype"], ref, "fwd_bwd")}
    except Exception as e:  # noqa: BLE001 - a failing subject becomes rows
        reason = f"{type(e).__name__}: {e}"[:300]
        return [{**base, "impl": s.name, "pass": p, "mode": m, "status": "error", "reason": reason}
                for p in PASSES for m in modes]
    state = ops.fwd(x, w, r, EPS)
    fns = {"bwd": lambda *_: ops.bwd(state, dy, d_res),
           "fwd+bwd": lambda xx, ww, rr, ee: ops.fwd_bwd(xx, ww, rr, ee, dy, d_res)}
    for p in PASSES:
        chk = checks[p]
        nbytes = B.pass_bytes(p, base["tokens"], base["hidden"], x.element_size(), base["residual"],
                              w_itemsize=w.element_size(), partial_rows=sm)
        for m in modes:
            row = {**base, "impl": s.name, "pass": p, "mode": m, "err_dx": chk["err_dx"], "err_dw": chk["err_dw"],
                   "err_dr": chk["err_dr"], "status": chk["status"], "reason": chk["reason"]}
            if chk["status"] == "ok":
                try:
                    t = time_runner(Runner(fns[p], x, w, r, EPS, False), m, device, budget_ms=budget_ms)
                    gbps = nbytes / (t.median_us * 1e-6) / 1e9
                    row.update(us_median=t.median_us, us_p20=t.p20_us, us_p80=t.p80_us, gbps=gbps,
                               pct_copy=100 * gbps / ceiling if ceiling else math.nan)
                except Exception as e:  # noqa: BLE001
                    row.update(status="error", reason=f"{m}: {type(e).__name__}: {e}"[:300])
            rows.append(row)
    del state
    return rows


def write_csv(path, rows):
    with open(path, "w", newline="") as f:
        wr = csv.DictWriter(f, fieldnames=COLUMNS, extrasaction="ignore")
        wr.writeheader()
        for r in rows:
            wr.writerow({k: r.get(k, "") for k in COLUMNS})


def print_table(rows):
    """Ours against the fastest peer per (pass, mode, dtype, shape), and the geomean ratio per (pass, mode)."""
    from rmsnorm_lab.analysis import geomean
    ours = {"triton"}
    key = lambda r: (r["pass"], r["mode"], r["dtype"], r["hidden"], r["tokens"], r["residual"])  # noqa: E731
    timed = [r for r in rows if r.get("us_median") is not None and r["status"] == "ok"]
    groups: dict = {}
    for r in timed:
        groups.setdefault(key(r), []).append(r)
    ratios: dict = {}
    print(f"{'pass':8} {'mode':6} {'dtype':9} {'hidden':>6} {'tokens':>6} res {'ours us':>9} "
          f"{'best peer':>14} {'peer us':>9} {'ratio':>6} {'% copy':>6}")
    for k in sorted(groups):
        ours_r = [r for r in groups[k] if r["impl"] in ours]
        peers = [r for r in groups[k] if r["impl"] not in ours]
        if not ours_r or not peers:
            continue
        o = ours_r[0]
        best = min(peers, key=lambda r: r["us_median"])
        ratio = o["us_median"] / best["us_median"]
        ratios.setdefault(k[:2], []).append(ratio)
        print(f"{k[0]:8} {k[1]:6} {k[2]:9} {k[3]:6} {k[4]:6} {'y' if k[5] else 'n':3} {o['us_median']:9.1f} "
              f"{best['impl']:>14} {best['us_median']:9.1f} {ratio:6.3f} {o.get('pct_copy', math.nan):6.1f}")
    for k, v in sorted(ratios.items()):
        print(f"{k[0]} {k[1]}: ours / best peer geomean {geomean(v):.3f} over {len(v)} shapes, worst {max(v):.3f}, "
              f"at or below 1.03x at {sum(x <= 1.03 for x in v)}/{len(v)}")


if __name__ == "__main__":
    sys.exit(run())
