"""Does a cold figure depend on the process rather than the kernel? And what does a same-size copy reach cold?

    python scripts/gpu_harness_probe.py --out DIR [--rounds 3] [--peers vllm,torch_compile] [--device cuda]

Part 1 (the harness question): at a few shapes, times our kernel and the peers cold, in one process,
under the conditions that differ between scripts/gpu_config_ab.py and the sweep harness: inputs held
from the start (seed 3, 10 ms budget, as the A/B), the same with a 20 ms budget, fresh inputs after a
filler allocation that moves their addresses (one per round), inputs carved from the cached segments of
the 1 GiB copy measurement (as in a sweep, which measures the copy first), and run_sweep itself on that
one shape. Rounds interleave the conditions; every row records the tensors' addresses.

Part 2 (the ceiling): above 64 MB moved, a torch copy of the same bytes (half read, half written, as an
RMSNorm) timed by the same cold harness, beside our kernel and the peers, after the harness's flush
(256 MB written: L2 left dirty) and after a clean one (the same, then the buffer read back).

Writes DIR/probe.csv (every timing) and prints medians per shape, condition and subject.
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
PROBE_SHAPES = ["16384:512:1:bfloat16", "16384:512:1:float16", "8192:1024:1:bfloat16",
                "4096:1024:0:float16", "5120:64:1:bfloat16"]
CEILING_SHAPES = ["4096:4096:0", "4096:4096:1", "8192:4096:0", "6144:8192:1", "16384:4096:0",
                  "4096:16384:0", "6144:16384:0", "8192:32768:1", "2048:65536:0", "16384:65536:1"]


def parse_shape(text, default_dtype="bfloat16"):
    parts = text.split(":")
    if len(parts) not in (3, 4):
        raise SystemExit(f"shape: expected HIDDEN:TOKENS:RES[:DTYPE], got {text!r}")
    return int(parts[0]), int(parts[1]), bool(int(parts[2])), parts[3] if len(parts) == 4 else default_dtype


class CleanFlush:
    """The harness's flush buffer, but zero_() also reads it back: L2 left holding clean lines."""

    def __init__(self, buf):
        self.buf = buf

    def zero_(self):
        import torch
        self.buf.zero_()
        torch.sum(self.buf, dtype=torch.int32)
        return self.buf


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--peers", default="vllm,torch_compile", help="comma-separated registry names")
    ap.add_argument("--probe", nargs="*", default=PROBE_SHAPES, help="HIDDEN:TOKENS:RES:DTYPE (part 1)")
    ap.add_argument("--ceiling", nargs="*", default=CEILING_SHAPES, help="HIDDEN:TOKENS:RES, bf16 (part 2)")
    ap.add_argument("--ceiling-peers", default="vllm", help="peers timed in part 2 (of --peers)")
    ap.add_argument("--device", default="cuda", help="cpu: a smoke run (TRITON_INTERPRET=1, tiny shapes)")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    import torch

    from rmsnorm_lab import timing
    from rmsnorm_lab.bandwidth import measure_copy_bandwidth, same_size_copy_runner
    from rmsnorm_lab.cases import Case, make_inputs, tokens_to_batch_seq
    from rmsnorm_lab.impls import load_available
    from rmsnorm_lab.sweep import SweepConfig, run_sweep
    from rmsnorm_lab.timing import Runner, time_runner

    dev = args.device
    on_gpu = dev.startswith("cuda")
    fns = load_available(["triton"] + [p for p in args.peers.split(",") if p], dev)

    rows = []
    f = open(out / "probe.csv", "w", newline="")
    wr = csv.DictWriter(f, fieldnames=["part", "hidden", "tokens", "residual", "dtype", "round", "condition",
                                       "subject", "us", "p20", "p80", "bytes", "x_ptr", "r_ptr", "error"])
    wr.writeheader()

    def emit(**row):
        wr.writerow(row)
        f.flush()
        rows.append(row)

    def case_of(h, t, r, dt):
        return Case(*tokens_to_batch_seq(t), h, dt, r)

    def time_subjects(part, h, t, r, dt, rnd, cond, inputs, budget_ms, subjects):
        x, w, res = inputs
        order = subjects[rnd % len(subjects):] + subjects[:rnd % len(subjects)]
        for name in order:
            row = dict(part=part, hidden=h, tokens=t, residual=int(r), dtype=dt, round=rnd + 1, condition=cond,
                       subject=name, bytes=case_of(h, t, r, dt).bytes_moved, x_ptr=x.data_ptr(),
                       r_ptr=res.data_ptr() if res is not None else "")
            try:
                if name == "copy":
                    runner = same_size_copy_runner(case_of(h, t, r, dt).bytes_moved, dev)
                    tm = time_runner(runner, "cold", dev, budget_ms=budget_ms)
                    row["x_ptr"] = runner.x.data_ptr()
                    del runner
                else:
                    fn, inplace = fns[name]
                    tm = time_runner(Runner(fn, x, w, res, EPS, inplace), "cold", dev, budget_ms=budget_ms)
                row.update(us=round(tm.median_us, 3), p20=round(tm.p20_us, 3), p80=round(tm.p80_us, 3))
            except Exception as e:  # noqa: BLE001 - an error row, the probe goes on
                row["error"] = f"{type(e).__name__}: {e}"[:200]
            emit(**row)

    copy_gbps = measure_copy_bandwidth(dev)
    print(f"copy {copy_gbps:.0f} GB/s", flush=True)
    subjects = list(fns)
    shapes = [parse_shape(s) for s in args.probe]
    held = {s: make_inputs(case_of(*s), dev, 3) for s in shapes}       # as the A/B: allocated first, kept
    torch.cuda.empty_cache() if on_gpu else None
    t0 = time.perf_counter()
    for rnd in range(args.rounds):
        for (h, t, r, dt) in shapes:
            time_subjects(1, h, t, r, dt, rnd, "held-10ms", held[(h, t, r, dt)], 10.0, subjects)
            time_subjects(1, h, t, r, dt, rnd, "held-20ms", held[(h, t, r, dt)], 20.0, subjects)
            filler = torch.empty((rnd * 37 + 11) << 20, dtype=torch.uint8, device=dev)
            fresh = make_inputs(case_of(h, t, r, dt), dev, 100 + rnd)
            time_subjects(1, h, t, r, dt, rnd, "fresh-20ms", fresh, 20.0, subjects)
            del fresh, filler
            # as a sweep: the inputs carved from the cached blocks of a 1 GiB copy measurement
            if on_gpu:
                torch.cuda.empty_cache()
            measure_copy_bandwidth(dev, reps=3)
            carved = make_inputs(case_of(h, t, r, dt), dev, 200 + rnd)
            time_subjects(1, h, t, r, dt, rnd, "after-copy-20ms", carved, 20.0, subjects)
            del carved
            if on_gpu:
                torch.cuda.empty_cache()
            try:
                df = run_sweep(SweepConfig(hidden=[h], tokens=[t], residual=[r], dtypes=[dt], modes=["cold"],
                                           impls=subjects, device=dev, budget_ms=20.0, progress=False))
                for _, s in df.iterrows():
                    emit(part=1, hidden=h, tokens=t, residual=int(r), dtype=dt, round=rnd + 1,
                         condition="run_sweep", subject=s["impl"], us=s.get("us_median", ""),
                         p20=s.get("us_p20", ""), p80=s.get("us_p80", ""), bytes=s["bytes"],
                         error=s.get("error", "") if s.get("status") != "ok" else "")
            except Exception as e:  # noqa: BLE001
                emit(part=1, hidden=h, tokens=t, residual=int(r), dtype=dt, round=rnd + 1, condition="run_sweep",
                     subject="", error=f"{type(e).__name__}: {e}"[:200])
        print(f"part 1 round {rnd + 1}: {time.perf_counter() - t0:.0f} s", flush=True)

    del held
    if on_gpu:
        torch.cuda.empty_cache()
    ceiling_subjects = ["triton"] + [p for p in args.ceiling_peers.split(",") if p in fns and p != "triton"]
    dirty = timing._flush_buffer(dev) if on_gpu else None
    flushes = (("dirty-flush", dirty), ("clean-flush", CleanFlush(dirty))) if on_gpu else (("cpu-sweep", None),)
    for rnd in range(args.rounds):
        for text in args.ceiling:
            h, t, r, dt = parse_shape(text)
            inputs = make_inputs(case_of(h, t, r, dt), dev, 7)
            for cond, flush in flushes:
                if flush is not None:
                    timing._FLUSH[dev] = flush
                time_subjects(2, h, t, r, dt, rnd, cond, inputs, 20.0, ["copy"] + ceiling_subjects)
            if on_gpu:
                timing._FLUSH[dev] = dirty
            del inputs
        print(f"part 2 round {rnd + 1}: {time.perf_counter() - t0:.0f} s", flush=True)
    f.close()

    print("\nmedian over rounds (min-max), us")
    keys = sorted({(r["part"], r["hidden"], r["tokens"], r["residual"], r["dtype"], r["condition"]) for r in rows
                   if r.get("us") not in (None, "")}, key=lambda k: (k[0], k[1], k[2], k[3], k[4], k[5]))
    for k in keys:
        parts = []
        for name in ["copy"] + subjects:
            v = [float(r["us"]) for r in rows if (r["part"], r["hidden"], r["tokens"], r["residual"], r["dtype"],
                                                  r["condition"]) == k and r["subject"] == name
                 and r.get("us") not in (None, "")]
            if v:
                parts.append(f"{name} {statistics.median(v):.2f} ({min(v):.2f}-{max(v):.2f})")
        print(f"  {k[1]}x{k[2]} res={k[3]} {k[4]} {k[5]}: " + "  ".join(parts))
    print(f"copy (1 GiB, back to back) {copy_gbps:.0f} GB/s; rows {len(rows)}; wrote {out / 'probe.csv'}")


if __name__ == "__main__":
    main()
