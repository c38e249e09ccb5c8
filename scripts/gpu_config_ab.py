"""Two launch configs of one table entry, A against B, in each dtype, beside peers, in interleaved rounds.

    python scripts/gpu_config_ab.py --out DIR --ab 16384:512:1=1,16,0,32,4096/1,16,0,32,4096,32 [--ab ...]
        [--dtypes bfloat16 float16] [--peers vllm,torch_compile] [--rounds 5] [--device cuda]

Why: the launch table is searched in bf16 (scripts/gpu_retune.py) and fp16 reads the same entry, but a
config's register count differs by dtype (scripts/sm90_registers.py), and with it the programs that fit
on an SM. This times a config and its variant (a register cap, say) in every dtype in one process. Each
round times, per shape and dtype, A, B and the peers, cold and graph, in an order that rotates from
round to round; both configs are checked against float64 first. Writes DIR/config_ab.csv (every timing)
and prints, per shape, dtype and mode, the median of the rounds (min-max), B / A and the fastest peer.
"""
from __future__ import annotations

import argparse
import csv
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

EPS = 1e-6


def parse_ab(text: str):
    """'H:T:R=A/B' (configs comma-separated) -> (hidden, tokens, residual, config A, config B)."""
    from rmsnorm_lab.kernels.config import LaunchConfig
    try:
        shape, cfgs = text.split("=")
        h, t, r = (int(v) for v in shape.split(":"))
        a, b = (LaunchConfig.from_legacy([int(v) for v in c.split(",")]) for c in cfgs.split("/"))
    except ValueError as e:
        raise SystemExit(f"--ab: expected HIDDEN:TOKENS:RES=CONFIG_A/CONFIG_B (e.g. "
                         f"16384:512:1=1,16,0,32,4096/1,16,0,32,4096,32), got {text!r}: {e}")
    return h, t, bool(r), a, b


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--ab", nargs="+", required=True, help="HIDDEN:TOKENS:RES=CONFIG_A/CONFIG_B")
    ap.add_argument("--dtypes", nargs="+", default=["bfloat16", "float16"])
    ap.add_argument("--peers", default="vllm,torch_compile", help="comma-separated registry names ('' for none)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--budget-ms", type=float, default=10.0)
    ap.add_argument("--workers", type=int, default=8, help="compile / warm-up processes (0: none)")
    ap.add_argument("--device", default="cuda", help="cpu: a smoke run under TRITON_INTERPRET=1 (cold only)")
    args = ap.parse_args()
    cases = [parse_ab(a) for a in args.ab]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    from rmsnorm_lab.cases import Case, make_inputs, tokens_to_batch_seq
    from rmsnorm_lab.impls import get_impl
    from rmsnorm_lab.kernels import launch as tk
    from rmsnorm_lab.reference import compare
    from rmsnorm_lab.timing import Runner, time_runner

    dev = args.device
    on_gpu = dev.startswith("cuda")
    modes = ("cold", "graph") if on_gpu else ("cold",)
    peers = [p for p in args.peers.split(",") if p]
    if on_gpu and args.workers:
        from rmsnorm_lab.prewarm import prewarm
        jobs = [("tc", *tokens_to_batch_seq(t), h, r, dt) for h, t, r, _, _ in cases for dt in args.dtypes
                if "torch_compile" in peers]
        jobs += sorted({("k", h, r, dt, c) for h, t, r, a, b in cases for dt in args.dtypes for c in (a, b)})
        pw = prewarm(jobs, args.workers)
        print(f"warmed {pw['jobs']} kernels / graphs in {pw['seconds']:.0f}s; {pw['failed']} failed "
              f"{pw['first_error']}", flush=True)

    subjects = {}                            # (shape, dtype) -> inputs and {name: (fn, in place)}
    for h, t, r, a, b in cases:
        for dt in args.dtypes:
            x, w, res = make_inputs(Case(*tokens_to_batch_seq(t), h, dt, r), dev, 3)
            subj = {"A": (tk.config_fn(a), True), "B": (tk.config_fn(b), True)}
            for name in ("A", "B"):          # both outputs against float64, once
                got = subj[name][0](x.clone(), w, None if res is None else res.clone(), EPS)
                errs = compare(x, w, res, EPS, *(got if r else (got,)))[:2 if r else 1]
                if not all(e <= 1.2e-2 for e in errs):              # NaN fails too
                    raise SystemExit(f"{h}:{t}:{int(r)} {dt} config {name}: wrong, relative errors {errs}")
            for p in peers:
                impl = get_impl(p)
                s = impl.supports(dt, dev)
                if s:
                    subj[p] = (impl.load(), impl.inplace_residual)
                else:
                    print(f"  {p} skipped at {dt}: {s.reason}", flush=True)
            subjects[(h, t, r, dt)] = (x, w, res, subj)

    rows = []
    with open(out / "config_ab.csv", "w", newline="") as f:
        wr = csv.DictWriter(f, fieldnames=["hidden", "tokens", "residual", "dtype", "subject", "config", "round",
                                           "mode", "us", "error"])
        wr.writeheader()
        cfg_of = {(h, t, r): (a, b) for h, t, r, a, b in cases}
        for rnd in range(args.rounds):
            for (h, t, r, dt), (x, w, res, subj) in subjects.items():
                names = list(subj)
                names = names[rnd % len(names):] + names[:rnd % len(names)]
                for name in names:
                    fn, inplace = subj[name]
                    cfg = {"A": cfg_of[(h, t, r)][0], "B": cfg_of[(h, t, r)][1]}.get(name)
                    for m in modes:
                        row = {"hidden": h, "tokens": t, "residual": r, "dtype": dt, "subject": name,
                               "config": list(cfg) if cfg else "", "round": rnd + 1, "mode": m}
                        try:
                            row["us"] = round(time_runner(Runner(fn, x, w, res, EPS, inplace), m, dev,
                                                          budget_ms=args.budget_ms).median_us, 3)
                        except Exception as e:  # noqa: BLE001 - an error row, the rounds go on
                            row["error"] = f"{type(e).__name__}: {e}"[:200]
                        wr.writerow(row)
                        rows.append(row)
            f.flush()

    print(f"median of {args.rounds} rounds (min-max), us; B / A; fastest peer")
    for (h, t, r, dt), (_, _, _, subj) in subjects.items():
        a, b = cfg_of[(h, t, r)]
        print(f"{h} x {t} res={int(r)} {dt}: A {list(a)}  B {list(b)}")
        for m in modes:
            med = {}
            for name in subj:
                v = [row["us"] for row in rows if (row["hidden"], row["tokens"], row["residual"], row["dtype"],
                                                   row["subject"], row["mode"]) == (h, t, r, dt, name, m)
                     and "us" in row]
                if v:
                    med[name] = (statistics.median(v), min(v), max(v))
            peer = min((p for p in med if p not in ("A", "B")), key=lambda p: med[p][0], default=None)
            line = "  ".join(f"{n} {med[n][0]:.2f} ({med[n][1]:.2f}-{med[n][2]:.2f})" for n in ("A", "B") if n in med)
            ratio = f"B/A {med['B'][0] / med['A'][0]:.3f}" if "A" in med and "B" in med else "B/A n/a"
            best = f"fastest peer {peer} {med[peer][0]:.2f}" if peer else "no peer"
            print(f"  {m:5s} {line}  {ratio}  {best}", flush=True)


if __name__ == "__main__":
    main()
