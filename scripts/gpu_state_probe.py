"""Is a cold figure's round-to-round flip a state of the GPU, of the runner, or of the idle spin? One process.

    python scripts/gpu_state_probe.py --out DIR [--shapes 16384:512:1 ...] [--repeats 12] [--spins-us 300 1000 2000]

Per shape and subject (our kernel, the peers): (a) the same Runner timed cold --repeats times in a row,
(b) a new Runner (fresh working clones) each time, (c) the idle spin between flush and call forced to
each of --spins-us, interleaved. Every row records the host estimate and the spin the harness chose, and
a wall-clock stamp, so flips can be laid beside the GPU clocks that nvidia-smi logs alongside.
Writes DIR/state.csv and prints, per shape, subject and part, the median and the spread of the figures.
"""
from __future__ import annotations

import argparse
import csv
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

EPS = 1e-6


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--shapes", nargs="+", default=["16384:512:1", "8192:1024:1", "2048:4096:1", "6144:2048:1"])
    ap.add_argument("--dtype", default="bfloat16")
    ap.add_argument("--peers", default="vllm")
    ap.add_argument("--repeats", type=int, default=12)
    ap.add_argument("--spins-us", nargs="+", type=float, default=[300.0, 1000.0, 2000.0])
    ap.add_argument("--budget-ms", type=float, default=10.0)
    ap.add_argument("--device", default="cuda")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    from rmsnorm_lab import timing
    from rmsnorm_lab.cases import Case, make_inputs, tokens_to_batch_seq
    from rmsnorm_lab.impls import load_available
    from rmsnorm_lab.timing import Runner, time_runner

    dev = args.device
    fns = load_available(["triton"] + [p for p in args.peers.split(",") if p], dev)

    seen = {}
    real_spin, real_est = timing._cold_spin_us, timing._estimate_us

    def est_hook(*a, **k):
        seen["est"] = real_est(*a, **k)
        return seen["est"]

    forced = {"us": None}

    def spin_hook(est):
        seen["spin"] = forced["us"] if forced["us"] is not None else real_spin(est)
        return seen["spin"]

    timing._estimate_us, timing._cold_spin_us = est_hook, spin_hook
    rows = []
    f = open(out / "state.csv", "w", newline="")
    wr = csv.DictWriter(f, fieldnames=["t_s", "hidden", "tokens", "residual", "part", "i", "subject", "spin_us",
                                       "est_us", "us", "p20", "p80", "error"])
    wr.writeheader()
    t0 = time.time()

    def one(h, t, r, part, i, name, runner):
        row = dict(hidden=h, tokens=t, residual=int(r), part=part, i=i, subject=name)
        try:
            tm = time_runner(runner, "cold", dev, budget_ms=args.budget_ms)
            row.update(us=round(tm.median_us, 3), p20=round(tm.p20_us, 3), p80=round(tm.p80_us, 3))
        except Exception as e:  # noqa: BLE001 - an error row, the probe goes on
            row["error"] = f"{type(e).__name__}: {e}"[:200]
        row.update(t_s=round(time.time() - t0, 3), spin_us=round(seen.get("spin", 0), 1),
                   est_us=round(seen.get("est", 0), 1))
        wr.writerow(row)
        f.flush()
        rows.append(row)

    for text in args.shapes:
        h, t, r = (int(v) for v in text.split(":"))
        x, w, res = make_inputs(Case(*tokens_to_batch_seq(t), h, args.dtype, bool(r)), dev, 5)
        held = {n: Runner(fn, x, w, res, EPS, ip) for n, (fn, ip) in fns.items()}
        for i in range(args.repeats):
            for n in fns:
                one(h, t, r, "same-runner", i, n, held[n])
        for i in range(args.repeats):
            for n, (fn, ip) in fns.items():
                one(h, t, r, "new-runner", i, n, Runner(fn, x, w, res, EPS, ip))
        for i in range(max(2, args.repeats // 3)):
            for spin in args.spins_us:
                forced["us"] = spin
                for n in fns:
                    one(h, t, r, f"spin-{spin:g}", i, n, held[n])
            forced["us"] = None
        del held, x, w, res
        print(f"{text} done at {time.time() - t0:.0f} s", flush=True)
    f.close()

    print("median (min-max) us, per part; flips show as a wide min-max")
    for text in args.shapes:
        h, t, r = (int(v) for v in text.split(":"))
        for part in ["same-runner", "new-runner"] + [f"spin-{s:g}" for s in args.spins_us]:
            parts = []
            for n in fns:
                v = [x["us"] for x in rows if (x["hidden"], x["tokens"], x["part"], x["subject"]) == (h, t, part, n)
                     and "us" in x]
                if v:
                    parts.append(f"{n} {statistics.median(v):.2f} ({min(v):.2f}-{max(v):.2f}) "
                                 f"[{' '.join(f'{u:.1f}' for u in v)}]")
            print(f"  {h}x{t} res={r} {part}: " + "  ".join(parts), flush=True)


if __name__ == "__main__":
    main()
