"""The v8 "lean" launch against the v7 code, same configs, interleaved rounds in one process (issue 4).

    python scripts/gpu_lean_ab.py --out DIR [--rounds 3] [--dtype bfloat16]

v8 drops the grid-stride loop when each row block has its own program, uses int32 row offsets
when no offset can reach 2**31, and computes rstd with one rsqrt (LaunchConfig(lean=False) launches the
v7 code). For each shape, our table's config is timed cold and graph with and without the lean
path, next to the --peers (FlashInfer and torch.compile), in --rounds rounds whose order rotates. Writes
DIR/lean_ab.csv (every timing) and prints the per-shape median of the rounds and the lean / v7
ratio, with a geometric mean per mode at the end.
"""
from __future__ import annotations

import argparse
import csv
import math
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

HIDDEN = [2048, 4096, 8192, 16384]
TOKENS = [1, 128, 512, 2048, 8192]
PEERS = ["flashinfer", "torch_compile"]
EPS = 1e-6


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--dtype", default="bfloat16")
    ap.add_argument("--hidden", type=int, nargs="+", default=HIDDEN)
    ap.add_argument("--tokens", type=int, nargs="+", default=TOKENS)
    ap.add_argument("--peers", default=",".join(PEERS), help="comma-separated registry names ('' for none)")
    ap.add_argument("--budget-ms", type=float, default=5.0)
    ap.add_argument("--device", default="cuda", help="cpu: a smoke run under TRITON_INTERPRET=1 (cold only)")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    from rmsnorm_lab.cases import Case, make_inputs, tokens_to_batch_seq
    from rmsnorm_lab.impls import get_impl
    from rmsnorm_lab.kernels.launch import config_fn
    from rmsnorm_lab.kernels.tables import pick
    from rmsnorm_lab.reference import compare
    from rmsnorm_lab.timing import Runner, time_runner

    dev = args.device
    peers = [p for p in args.peers.split(",") if p]
    if dev.startswith("cuda") and "torch_compile" in peers:     # its graphs compiled in worker processes first
        from rmsnorm_lab.prewarm import jobs_for, prewarm
        cases = [Case(*tokens_to_batch_seq(t), h, args.dtype, res) for res in (False, True) for h in args.hidden
                 for t in args.tokens]
        print(f"prewarm: {prewarm(jobs_for(cases, ['torch_compile', 'triton']), 12)}", flush=True)
    modes = ("cold", "graph") if dev.startswith("cuda") else ("cold",)
    subjects = {n: (lean, config_fn(lambda h, t, isz, res, lean=lean: pick(h, t, isz, res).replace(lean=lean)), True)
                for n, lean in (("lean", True), ("v7", False))}     # the v8 / v7 code: a config field
    for p in peers:
        impl = get_impl(p)
        if impl.supports(args.dtype, dev):
            subjects[p] = (None, impl.load(), impl.inplace_residual)
    names = list(subjects)
    rows = []
    ratios = {m: [] for m in modes}
    print(f"{'hidden':>6s} {'tokens':>6s} res mode  " + " ".join(f"{n:>13s}" for n in names) + "  lean/v7",
          flush=True)
    for res in (False, True):
        for h in args.hidden:
            for t in args.tokens:
                b, s = tokens_to_batch_seq(t)
                x, w, r = make_inputs(Case(b, s, h, args.dtype, res), dev, 3)
                errs = {}
                for n in ("lean", "v7"):            # both outputs against float64, once per launch
                    xc, rc = x.clone(), None if r is None else r.clone()
                    got = subjects[n][1](xc, w, rc, EPS)
                    errs[n] = max(compare(x, w, r, EPS, *(got if res else (got,)))[:2 if res else 1])
                samples = {(n, m): [] for n in names for m in modes}
                for rnd in range(args.rounds):
                    order = names[rnd % len(names):] + names[:rnd % len(names)]
                    for n in order:
                        lean, fn, inplace = subjects[n]
                        for m in modes:
                            try:
                                tm = time_runner(Runner(fn, x, w, r, EPS, inplace), m, dev, budget_ms=args.budget_ms)
                                samples[(n, m)].append(tm.median_us)
                                rows.append({"dtype": args.dtype, "hidden": h, "tokens": t, "residual": res,
                                             "subject": n, "round": rnd, "mode": m,
                                             "us_median": round(tm.median_us, 3), "us_p20": round(tm.p20_us, 3),
                                             "us_p80": round(tm.p80_us, 3), "err": errs.get(n, "")})
                            except Exception as e:  # noqa: BLE001 - an error row, the run goes on
                                rows.append({"dtype": args.dtype, "hidden": h, "tokens": t, "residual": res,
                                             "subject": n, "round": rnd, "mode": m,
                                             "error": f"{type(e).__name__}: {e}"[:200]})
                for m in modes:
                    med = {n: statistics.median(samples[(n, m)]) if samples[(n, m)] else float("nan")
                           for n in names}
                    q = med["lean"] / med["v7"]
                    if q == q:
                        ratios[m].append(q)
                    print(f"{h:6d} {t:6d} {int(res)}   {m:5s} " + " ".join(f"{med[n]:13.3f}" for n in names)
                          + f"  {q:.3f}  (err lean {errs['lean']:.1e}, v7 {errs['v7']:.1e})", flush=True)
    for m in modes:
        v = ratios[m]
        if v:
            print(f"{m}: lean / v7 geomean {math.exp(sum(map(math.log, v)) / len(v)):.4f} over {len(v)} shapes, "
                  f"min {min(v):.3f}, max {max(v):.3f}", flush=True)
    fields = ["dtype", "hidden", "tokens", "residual", "subject", "round", "mode", "us_median", "us_p20", "us_p80",
              "err", "error"]
    with open(out / "lean_ab.csv", "w", newline="") as f:
        wr = csv.DictWriter(f, fieldnames=fields)
        wr.writeheader()
        wr.writerows(rows)


if __name__ == "__main__":
    main()
