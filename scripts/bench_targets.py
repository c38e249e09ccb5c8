"""Issue-4 benchmark: our Triton kernel against every peer over the target shapes, one process.

    python scripts/bench_targets.py --save DIR [--dtype bfloat16] [--modes cold graph] [--eager] [--workers N]

Target shapes: hidden 2048/4096/5120/6144/8192/16384 x tokens 1, 16, 64..65536,
with and without residual. Results (resumable) go to DIR/results.csv + env.json;
summarize them with scripts/summarize_targets.py. torch.compile's graphs and our kernel's configs
are compiled first in N worker processes (rmsnorm_lab/prewarm.py), so the run is spent measuring;
its setup_s figures are then cache hits.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

HIDDEN = [2048, 4096, 5120, 6144, 8192, 16384]
TOKENS = [1, 16, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768, 65536]
PEERS = "flashinfer,flashinfer_cuda,vllm,liger,quack,torch_compile,torch,triton"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--save", required=True)
    ap.add_argument("--dtype", default="bfloat16")
    ap.add_argument("--modes", nargs="+", default=["cold", "graph"])
    ap.add_argument("--impls", default=PEERS)
    ap.add_argument("--hidden", type=int, nargs="+", default=HIDDEN)
    ap.add_argument("--tokens", type=int, nargs="+", default=TOKENS)
    ap.add_argument("--budget-ms", type=float, default=20.0)
    ap.add_argument("--eager", action="store_true", help="also: eager cost per call at 1 x 4096, every impl")
    ap.add_argument("--workers", type=int, default=12,
                    help="processes that compile torch.compile's graphs and our kernel's configs first (0: none)")
    args = ap.parse_args()

    from rmsnorm_lab.prewarm import jobs_for, prewarm
    from rmsnorm_lab.sweep import SweepConfig, run_sweep

    if args.workers > 0:
        import time
        cases = SweepConfig(hidden=args.hidden, tokens=args.tokens, dtypes=[args.dtype]).cases()
        pw = prewarm(jobs_for(cases, args.impls.split(",")), args.workers)
        print(f"{time.strftime('%H:%M:%S')} prewarm: {pw}", flush=True)

    if args.eager:
        run_sweep(SweepConfig(hidden=[4096], tokens=[1], dtypes=[args.dtype], modes=["eager"],
                              impls="all", save_path=args.save + "-eager", progress=False,
                              command="scripts/bench_targets.py --eager"))
    run_sweep(SweepConfig(hidden=args.hidden, tokens=args.tokens, dtypes=[args.dtype], modes=args.modes,
                          impls=args.impls, save_path=args.save, budget_ms=args.budget_ms, progress=False,
                          command="scripts/bench_targets.py " + " ".join(sys.argv[1:])))


if __name__ == "__main__":
    main()
