"""Our fused add written in place (as shipped) against the same launch writing to other buffers, beside peers.

    python scripts/gpu_inplace_ab.py --out DIR [--shapes 8192:2048:bfloat16 ...] [--rounds 5] [--device cuda]

Why: at large shapes with residual, torch.compile (out of place: it writes the output and the new
residual to fresh buffers) leads ours by 2-3% cold, and no launch config of ours closes it. This times,
with the package's launch config, our kernel writing over x and the residual (`inplace`), into two
buffers allocated once (`oop-held`) and into two new buffers per call (`oop-alloc`, as torch.compile),
beside the peers, cold and graph, in rotating rounds with a fresh runner per timing. Outputs of the
three variants are compared with each other first. Writes DIR/inplace_ab.csv and prints medians.
"""
from __future__ import annotations

import argparse
import csv
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

EPS = 1e-6
SHAPES = ["6144:4096:bfloat16", "8192:2048:bfloat16", "16384:2048:bfloat16", "8192:1024:bfloat16",
          "4096:4096:bfloat16", "2048:1024:bfloat16", "16384:2048:float16", "8192:2048:float16"]


def variants(torch, triton_rmsnorm, x, r):
    """name -> (fn, writes its inputs in place)."""
    held_out, held_res = torch.empty_like(x), torch.empty_like(r)

    def inplace(a, w, b, eps):
        return triton_rmsnorm(a, w, b, eps, out=a, residual_out=b)

    def oop_held(a, w, b, eps):
        return triton_rmsnorm(a, w, b, eps, out=held_out, residual_out=held_res)

    def oop_alloc(a, w, b, eps):
        return triton_rmsnorm(a, w, b, eps)
    return {"inplace": (inplace, True), "oop-held": (oop_held, False), "oop-alloc": (oop_alloc, False)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--shapes", nargs="+", default=SHAPES, help="HIDDEN:TOKENS:DTYPE, all with residual")
    ap.add_argument("--peers", default="vllm,torch_compile")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--budget-ms", type=float, default=10.0)
    ap.add_argument("--device", default="cuda", help="cpu: a smoke run under TRITON_INTERPRET=1 (cold only)")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    import torch

    from rmsnorm_lab.cases import Case, make_inputs, tokens_to_batch_seq
    from rmsnorm_lab.impls import load_available
    from rmsnorm_lab.kernels.rmsnorm import triton_rmsnorm
    from rmsnorm_lab.timing import Runner, time_runner

    dev = args.device
    modes = ("cold", "graph") if dev.startswith("cuda") else ("cold",)
    peers = load_available([p for p in args.peers.split(",") if p], dev)
    subjects = {}
    for text in args.shapes:
        h, t, dt = text.split(":")
        h, t = int(h), int(t)
        x, w, r = make_inputs(Case(*tokens_to_batch_seq(t), h, dt, True), dev, 11)
        subj = {**variants(torch, triton_rmsnorm, x, r), **peers}
        got = {n: fn(x.clone(), w, r.clone(), EPS) for n, (fn, _) in subj.items() if n in ("inplace", "oop-held",
                                                                                           "oop-alloc")}
        for n in ("oop-held", "oop-alloc"):
            if not all(torch.equal(a, b) for a, b in zip(got["inplace"], got[n])):
                raise SystemExit(f"{text}: {n} differs from inplace")
        subjects[(h, t, dt)] = (x, w, r, subj)

    rows = []
    with open(out / "inplace_ab.csv", "w", newline="") as f:
        wr = csv.DictWriter(f, fieldnames=["hidden", "tokens", "dtype", "subject", "round", "mode", "us", "error"])
        wr.writeheader()
        for rnd in range(args.rounds):
            for (h, t, dt), (x, w, r, subj) in subjects.items():
                names = list(subj)
                names = names[rnd % len(names):] + names[:rnd % len(names)]
                for name in names:
                    fn, inplace = subj[name]
                    for m in modes:
                        row = {"hidden": h, "tokens": t, "dtype": dt, "subject": name, "round": rnd + 1, "mode": m}
                        try:
                            row["us"] = round(time_runner(Runner(fn, x, w, r, EPS, inplace), m, dev,
                                                          budget_ms=args.budget_ms).median_us, 3)
                        except Exception as e:  # noqa: BLE001 - an error row, the rounds go on
                            row["error"] = f"{type(e).__name__}: {e}"[:200]
                        wr.writerow(row)
                        rows.append(row)
                f.flush()
            print(f"round {rnd + 1} done", flush=True)

    print(f"median of {args.rounds} rounds (min-max), us; variant / inplace")
    for (h, t, dt), (_, _, _, subj) in subjects.items():
        for m in modes:
            med = {}
            for name in subj:
                v = [row["us"] for row in rows if (row["hidden"], row["tokens"], row["dtype"], row["subject"],
                                                   row["mode"]) == (h, t, dt, name, m) and "us" in row]
                if v:
                    med[name] = (statistics.median(v), min(v), max(v))
            base = med.get("inplace", (float("nan"),))[0]
            print(f"  {h} x {t} + res {dt} {m}: " + "  ".join(
                f"{n} {a:.2f} ({lo:.2f}-{hi:.2f}) [{a / base:.3f}]" for n, (a, lo, hi) in med.items()), flush=True)


if __name__ == "__main__":
    main()
