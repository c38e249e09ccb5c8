"""Does a cold figure depend on where x and the residual lie in memory? One process, in-place fused add.

    python scripts/gpu_placement_probe.py --out DIR [--shapes 16384:512 ...] [--gaps-kb 0 4 ...] [--rounds 2]

For each shape (with residual) the working x and residual are views into one buffer, the residual
starting GAP bytes after x ends, for every GAP given; then "split": the Runner's own clones (two
allocations, wherever the caching allocator puts them), built anew each round. At each placement our
kernel, the peers and a copy of x into the residual's place are timed cold (the harness's flush), with
the same inputs restored before every call. Writes DIR/placement.csv (every timing, with the offsets)
and prints the medians per shape, placement and subject.
"""
from __future__ import annotations

import argparse
import csv
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

EPS = 1e-6


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--shapes", nargs="+", default=["16384:512", "8192:1024", "4096:4096", "4096:1024",
                                                   "2048:4096", "6144:2048"], help="HIDDEN:TOKENS (residual)")
    ap.add_argument("--gaps-kb", nargs="+", type=int, default=[0, 4, 64, 1024, 2048, 2052, 3072, 8192],
                    help="bytes between x's end and the residual's start, in KiB")
    ap.add_argument("--dtype", default="bfloat16")
    ap.add_argument("--peers", default="vllm,torch_compile")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--budget-ms", type=float, default=10.0)
    ap.add_argument("--device", default="cuda")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    import torch

    from rmsnorm_lab.cases import Case, make_inputs, tokens_to_batch_seq
    from rmsnorm_lab.impls import load_available
    from rmsnorm_lab.timing import Runner, time_runner

    dev = args.device
    fns = {n: fn for n, (fn, _) in load_available(["triton"] + [p for p in args.peers.split(",") if p],
                                                    dev).items()}
    fns["copy"] = lambda x, w, r, eps: (r.copy_(x), r)      # read x, write the residual's place
    names = list(fns)
    rows = []
    f = open(out / "placement.csv", "w", newline="")
    wr = csv.DictWriter(f, fieldnames=["hidden", "tokens", "dtype", "round", "placement", "gap_bytes", "x_ptr",
                                       "r_ptr", "subject", "us", "p20", "p80", "error"])
    wr.writeheader()
    for rnd in range(args.rounds):
        for text in args.shapes:
            h, t = (int(v) for v in text.split(":"))
            case = Case(*tokens_to_batch_seq(t), h, args.dtype, True)
            x0, w, r0 = make_inputs(case, dev, 5)
            n = x0.numel()
            placements = []
            for gap_kb in args.gaps_kb:
                gap = gap_kb * 1024 // x0.element_size()
                buf = torch.empty(2 * n + gap, dtype=x0.dtype, device=dev)
                placements.append((f"gap {gap_kb} KiB", gap_kb * 1024, buf[:n].view_as(x0),
                                   buf[n + gap:2 * n + gap].view_as(x0), buf))
            placements.append(("split", "", None, None, None))
            for label, gap_bytes, xp, rp, buf in placements:
                order = names[rnd % len(names):] + names[:rnd % len(names)]
                for name in order:
                    runner = Runner(fns[name], x0, w, r0, EPS, True)
                    if xp is not None:
                        runner.x, runner.r = xp, rp
                    row = dict(hidden=h, tokens=t, dtype=args.dtype, round=rnd + 1, placement=label,
                               gap_bytes=gap_bytes if xp is not None else runner.r.data_ptr() - runner.x.data_ptr()
                               - runner.x.numel() * runner.x.element_size(),
                               x_ptr=runner.x.data_ptr(), r_ptr=runner.r.data_ptr(), subject=name)
                    try:
                        tm = time_runner(runner, "cold", dev, budget_ms=args.budget_ms)
                        row.update(us=round(tm.median_us, 3), p20=round(tm.p20_us, 3), p80=round(tm.p80_us, 3))
                    except Exception as e:  # noqa: BLE001 - an error row, the probe goes on
                        row["error"] = f"{type(e).__name__}: {e}"[:200]
                    wr.writerow(row)
                    f.flush()
                    rows.append(row)
                    del runner
            del placements
        print(f"round {rnd + 1} done", flush=True)
    f.close()
    print("median over rounds (min-max), us")
    for text in args.shapes:
        h, t = (int(v) for v in text.split(":"))
        for label in [f"gap {g} KiB" for g in args.gaps_kb] + ["split"]:
            parts = []
            for name in names:
                v = [r["us"] for r in rows if (r["hidden"], r["tokens"], r["placement"], r["subject"]) ==
                     (h, t, label, name) and "us" in r]
                if v:
                    parts.append(f"{name} {statistics.median(v):.2f} ({min(v):.2f}-{max(v):.2f})")
            gaps = sorted({r["gap_bytes"] for r in rows if (r["hidden"], r["tokens"], r["placement"]) == (h, t, label)})
            extra = f" [gaps {gaps}]" if label == "split" else ""
            print(f"  {h}x{t} {label}{extra}: " + "  ".join(parts), flush=True)


if __name__ == "__main__":
    main()
