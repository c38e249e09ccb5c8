"""Launches of our RMSNorm + per-token FP8 kernel against torch.compile and vLLM, A/B in one process.

For each shape: every candidate launch (rows per program, warps, programs in the grid) is checked
against the float64 reference (fp8 elements more than one step off, the scales' relative error), then
all candidates and the peers are timed in interleaved rounds (rmsnorm_lab.ab), cold and graph.
Writes ab.csv (every round) and picks.csv (per shape and mode: the first candidate (`default_*`: row_policy's
launch, or with `--set hold` per_token_policy's), the best candidate,
the fastest peer) under --out.

    python experiments/per_token_launch_ab.py --out out/per-token-ab
    python experiments/per_token_launch_ab.py --hidden 5120 --tokens 16384 --residual 1 --rounds 5
"""
from __future__ import annotations

import argparse
import csv
from pathlib import Path

from rmsnorm_lab import ab
from rmsnorm_lab import variants as V
from rmsnorm_lab.cases import Case, tokens_to_batch_seq
from rmsnorm_lab.kernels import variants as kv
from rmsnorm_lab.kernels.config import next_pow2

EPS = 1e-6


def candidates(hidden: int, tokens: int, sms: int) -> dict:
    """name -> Policy: the default; one pass: rows 1/2 x 8/16/32 elements a thread x a grid of one program per
    row block ("all"), as many as 64 resident warps an SM allow ("fill") or two programs an SM ("two");
    two passes: one row over 512/1024/2048-wide slices x 4/8 elements a thread x "all" / "fill"."""
    out = {"default": kv.row_policy(hidden, tokens, sms)}
    block = next_pow2(hidden)
    for rows in (1, 2):
        if block * rows > 16384:
            continue
        blocks = -(-tokens // rows)
        for ept in (8, 16, 32):
            warps = block * rows // (32 * ept)
            if not 1 <= warps <= 32:
                continue
            grids = {"all": blocks, "fill": min(blocks, max(1, 64 // warps) * sms), "two": min(blocks, 2 * sms)}
            for g, programs in grids.items():
                p = kv.Policy(rows, warps, programs)
                if p not in out.values():
                    out[f"r{rows}w{warps}-{g}"] = p
    for chunk in (512, 1024, 2048):                 # two passes over slices
        if chunk > block:
            continue
        for ept in (4, 8):
            warps = chunk // (32 * ept)
            if not 1 <= warps <= 32:
                continue
            for g, programs in {"all": tokens, "fill": min(tokens, max(1, 64 // warps) * sms)}.items():
                out[f"c{chunk}w{warps}-{g}"] = kv.Policy(1, warps, programs, chunk)
    return out


def hold_candidates(hidden: int, tokens: int, sms: int, residual: bool) -> dict:
    """name -> Policy: ``per_token_policy``'s launch ("policy"), the same with its slices held (hold 1: the
    second pass reads the row before its first store; 2: one pass, the slices kept in registers), and one
    row a program over 1024/2048-wide slices x 4/8 warps x hold 1/2."""
    import dataclasses
    pol = kv.per_token_policy(hidden, tokens, sms, residual)
    out = {"policy": pol}
    if pol.chunk:
        out.update({f"policy-h{h}": dataclasses.replace(pol, hold=h) for h in (1, 2)})
    for chunk in (1024, 2048):
        if chunk >= next_pow2(hidden):
            continue
        for warps in (4, 8):
            for h in (1, 2):
                p = kv.Policy(1, warps, tokens, chunk, h)
                if p not in out.values():
                    out[f"c{chunk}w{warps}-h{h}"] = p
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--hidden", type=int, nargs="+", default=[2048, 4096, 5120, 7168, 8192, 16384])
    ap.add_argument("--tokens", type=int, nargs="+", default=[1, 128, 4096, 65536])
    ap.add_argument("--residual", type=int, nargs="+", default=[0, 1], choices=[0, 1])
    ap.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16"])
    ap.add_argument("--peers", default="torch-compile,vllm")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--budget-ms", type=float, default=20.0)
    ap.add_argument("--set", default="grid", choices=["grid", "hold"],
                    help="grid: candidates(); hold: hold_candidates() (the policy's launch, slices held)")
    ap.add_argument("--out", default="out/per-token-ab")
    ap.add_argument("--device", default="cuda", help="cuda; cpu (TRITON_INTERPRET=1, modes cold and eager) to try the script")
    args = ap.parse_args(argv)

    import torch
    dev = args.device
    sms = torch.cuda.get_device_properties(0).multi_processor_count if dev == "cuda" else 4
    modes = ("cold", "graph") if dev == "cuda" else ("cold", "eager")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for res in args.residual:
        peers = {s.name: s for s in V.subjects("fp8-per-token", bool(res), dev, names=args.peers.split(","))}
        for hidden in args.hidden:
            for tokens in args.tokens:
                case = V.VariantCase("fp8-per-token", tokens, hidden, args.dtype, bool(res))
                inp = V.make_inputs(case, dev, seed=3)
                subjects = {}
                cands = (candidates(hidden, tokens, sms) if args.set == "grid"
                         else hold_candidates(hidden, tokens, sms, bool(res)))
                for name, pol in cands.items():
                    def fn(x, w, r, scale_ub, eps, pol=pol):
                        return kv.rmsnorm_fp8_per_token(x, w, r, eps, scale_ub=scale_ub, residual_out=r, policy=pol)
                    got = V.check(case, inp, V.call(case, fn, V.clone_inputs(inp), EPS), EPS)
                    if got.status != "ok":
                        print(f"{case.key()} {name}: {got.status} {got.error}", flush=True)
                        continue
                    subjects[name] = ab.Subject(lambda x, w, r, eps, fn=fn: fn(x, w, r, None, eps), bool(res))
                for name, s in peers.items():
                    if not s.support:
                        print(f"{name}: {s.support.reason}", flush=True)
                        continue
                    subjects[name] = ab.Subject(lambda x, w, r, eps, fn=s.fn: fn(x, w, r, None, eps), s.inplace)
                cases = [Case(*tokens_to_batch_seq(tokens), hidden, args.dtype, bool(res))]
                r = ab.interleave(subjects, ab.inputs_for(cases, dev, seed=3), modes=modes,
                                  device=dev, rounds=args.rounds, budget_ms=args.budget_ms, eps=EPS)
                r.to_csv(out / f"ab-{hidden}-{tokens}-{res}.csv")
                summary = r.summary()
                for mode in modes:
                    med = {x["subject"]: x["us_median"] for x in summary if x["mode"] == mode}
                    ours = {n: v for n, v in med.items() if n not in peers}
                    best = min(ours, key=ours.get)
                    peer = min((n for n in med if n in peers), key=med.get, default=None)
                    first = next(iter(cands))
                    rows.append(dict(hidden=hidden, tokens=tokens, residual=res, mode=mode,
                                     default_us=round(med[first], 3), best=best, best_us=round(med[best], 3),
                                     peer=peer, peer_us=round(med[peer], 3) if peer else "",
                                     default_vs_peer=round(med[first] / med[peer], 3) if peer else "",
                                     best_vs_peer=round(med[best] / med[peer], 3) if peer else ""))
                    x = rows[-1]
                    print(f"{hidden}x{tokens}{'+res' if res else ''} {mode}: default/peer {x['default_vs_peer']} "
                          f"best {best} {x['best_vs_peer']} ({peer})", flush=True)
                with open(out / "picks.csv", "w", newline="") as f:     # after every shape: nothing measured is lost
                    w = csv.DictWriter(f, fieldnames=list(rows[0]))
                    w.writeheader()
                    w.writerows(rows)


if __name__ == "__main__":
    main()
