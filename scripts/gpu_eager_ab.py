"""Eager cost per call, ours against the cheapest peers, repeated and interleaved in one process.

    python scripts/gpu_eager_ab.py --out DIR [--reps 7] [--hidden 4096] [--tokens 1]

One eager measurement (rmsnorm_lab.timing: wall clock over back-to-back calls) per
(dtype, residual, implementation) is one sample of a noisy host; this takes --reps of them,
rotating the order of the implementations each round, and reports the median of the medians
with the min-max across rounds (the run-to-run spread). Writes DIR/eager_ab.csv.
"""
from __future__ import annotations

import argparse
import csv
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

IMPLS = ["triton", "vllm", "flashinfer_cuda", "flashinfer", "torch"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--hidden", type=int, default=4096)
    ap.add_argument("--tokens", type=int, default=1)
    ap.add_argument("--impls", default=",".join(IMPLS))
    ap.add_argument("--device", default="cuda")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    from rmsnorm_lab.cases import Case, make_inputs
    from rmsnorm_lab.impls import get_impl
    from rmsnorm_lab.timing import Runner, time_runner

    names = [n for n in args.impls.split(",") if get_impl(n).supports("bfloat16", args.device)]
    rows = []
    for dtype in ("bfloat16", "float16"):
        for res in (False, True):
            x, w, r = make_inputs(Case(1, args.tokens, args.hidden, dtype, res), args.device, 0)
            fns = {n: get_impl(n).load() for n in names}
            samples = {n: [] for n in names}
            for rep in range(args.reps):
                order = names[rep % len(names):] + names[:rep % len(names)]
                for n in order:
                    run = Runner(fns[n], x, w, r, 1e-6, get_impl(n).inplace_residual)
                    t = time_runner(run, "eager", args.device, budget_ms=40)
                    samples[n].append(t.median_us)
                    rows.append({"dtype": dtype, "residual": res, "hidden": args.hidden, "tokens": args.tokens,
                                 "impl": n, "round": rep, "us_median": round(t.median_us, 3),
                                 "us_p20": round(t.p20_us, 3), "us_p80": round(t.p80_us, 3), "note": t.note})
            print(f"{dtype} residual={int(res)} {args.tokens} x {args.hidden}: median of {args.reps} rounds "
                  "(min-max across rounds), us per call", flush=True)
            for n in sorted(names, key=lambda n: statistics.median(samples[n])):
                s = samples[n]
                print(f"  {n:16s} {statistics.median(s):7.2f}  ({min(s):.2f}-{max(s):.2f})", flush=True)
    with open(out / "eager_ab.csv", "w", newline="") as f:
        wr = csv.DictWriter(f, fieldnames=list(rows[0]))
        wr.writeheader()
        wr.writerows(rows)


if __name__ == "__main__":
    main()
