"""Our fused add writing in place (as shipped) against the same launch writing to other buffers, beside peers.

    python experiments/write_path_ab.py --out DIR [--shapes 8192:2048 16384:2048] [--dtype bfloat16]
        [--peers vllm,torch_compile] [--rounds 5] [--device cuda]

Subjects (all with residual): ``inplace`` (out into x, x + r into r), ``oop-held`` (two output buffers
allocated once), ``oop-alloc`` (two new buffers per call, as torch.compile does), and the peers. The three
write paths must give identical outputs; then ``rmsnorm_lab.ab.interleave`` times everything in rotating
rounds. Writes DIR/write_path_ab.csv and prints medians (min-max) and ratios to ``inplace``.
"""
from __future__ import annotations

import argparse

EPS = 1e-6


def write_paths(x, r):
    """name -> Subject for the three ways our kernel can write its two outputs."""
    import torch

    from rmsnorm_lab import ab, triton_rmsnorm

    held_out, held_res = torch.empty_like(x), torch.empty_like(r)
    return {
        "inplace": ab.Subject(lambda a, w, b, eps: triton_rmsnorm(a, w, b, eps, out=a, residual_out=b), True),
        "oop-held": ab.Subject(lambda a, w, b, eps: triton_rmsnorm(a, w, b, eps, out=held_out, residual_out=held_res)),
        "oop-alloc": ab.Subject(lambda a, w, b, eps: triton_rmsnorm(a, w, b, eps)),
    }


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--shapes", nargs="+", default=["6144:4096", "8192:2048", "16384:2048", "4096:4096"],
                    help="HIDDEN:TOKENS (all with residual)")
    ap.add_argument("--dtype", default="bfloat16")
    ap.add_argument("--peers", default="vllm,torch_compile")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--budget-ms", type=float, default=10.0)
    ap.add_argument("--device", default="cuda", help="cpu: a smoke run under TRITON_INTERPRET=1 (cold only)")
    args = ap.parse_args(argv)

    import torch

    from rmsnorm_lab import ab
    from rmsnorm_lab.cases import Case, tokens_to_batch_seq

    dev = args.device
    modes = ("cold", "graph") if dev.startswith("cuda") else ("cold",)
    peers = ab.from_registry([p for p in args.peers.split(",") if p], dev)
    rows, tables = [], []
    for text in args.shapes:
        h, t = (int(v) for v in text.split(":"))
        inputs = ab.inputs_for([Case(*tokens_to_batch_seq(t), h, args.dtype, True)], dev, seed=11)
        (x, w, r), = inputs.values()
        subjects = write_paths(x, r)
        got = ab.outputs(subjects, x, w, r, EPS)
        for n in ("oop-held", "oop-alloc"):
            if not all(torch.equal(a, b) for a, b in zip(got["inplace"], got[n])):
                raise SystemExit(f"{text}: {n} differs from inplace")
        res = ab.interleave({**subjects, **peers}, inputs, modes=modes, device=dev, rounds=args.rounds,
                            budget_ms=args.budget_ms, eps=EPS)
        rows += res.rows
        tables.append(res.table())
        print(tables[-1], flush=True)
    ab.ABResult(rows, [], [], []).to_csv(f"{args.out}/write_path_ab.csv")


if __name__ == "__main__":
    main()
