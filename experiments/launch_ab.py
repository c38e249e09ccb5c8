"""Launch variants of our kernel against each other and beside peers, interleaved in one process.

    python experiments/launch_ab.py --out DIR [--shapes 16384:512:1 2048:4096:1] [--dtype bfloat16]
        [--variant table= --variant v7=lean=false --variant nopdl=pdl=false --variant cap32=maxnreg=32]
        [--peers vllm,torch_compile] [--rounds 5] [--modes cold graph] [--device cuda]

A variant is the table's pick for each shape (``kernels.tables.pick``) with some ``LaunchConfig`` fields
replaced (``name=field=value,field=value``; ``name=`` keeps the pick). Answers the questions of the
lean/v7, PDL and register-cap A/Bs (experiments/INDEX.md). Every variant's output is checked against the
float64 reference first; then ``rmsnorm_lab.ab.interleave`` times all subjects in rotating rounds.
Writes DIR/launch_ab.csv (every timing) and prints medians (min-max) and ratios to the first variant.
"""
from __future__ import annotations

import argparse
import dataclasses

EPS = 1e-6


def parse_variant(text: str) -> tuple[str, dict]:
    """'cap32=maxnreg=32,lean=false' -> ('cap32', {'maxnreg': 32, 'lean': False})."""
    name, _, rest = text.partition("=")
    if not name:
        raise SystemExit(f"--variant {text!r}: expected NAME=[FIELD=VALUE,...]")
    out = {}
    for part in filter(None, rest.split(",")):
        k, _, v = part.partition("=")
        out[k] = {"true": True, "false": False}.get(v.lower(), int(v) if v.lstrip("-").isdigit() else v)
    return name, out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--shapes", nargs="+", default=["16384:512:1", "2048:4096:1", "4096:2048:0"],
                    help="HIDDEN:TOKENS:RESIDUAL(0|1)")
    ap.add_argument("--dtype", default="bfloat16")
    ap.add_argument("--variant", action="append", default=None, help="NAME=[FIELD=VALUE,...] (repeatable)")
    ap.add_argument("--peers", default="vllm,torch_compile", help="registry names, comma-separated ('' for none)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--modes", nargs="+", default=None, help="default: cold graph on CUDA, cold on CPU")
    ap.add_argument("--budget-ms", type=float, default=10.0)
    ap.add_argument("--device", default="cuda", help="cpu: a smoke run under TRITON_INTERPRET=1")
    args = ap.parse_args(argv)

    from rmsnorm_lab import ab
    from rmsnorm_lab.cases import Case, tokens_to_batch_seq
    from rmsnorm_lab.kernels.launch import LAUNCHER, config_fn
    from rmsnorm_lab.kernels.tables import pick
    from rmsnorm_lab.reference import compare

    dev = args.device
    modes = args.modes or (["cold", "graph"] if dev.startswith("cuda") else ["cold"])
    variants = dict(parse_variant(v) for v in (args.variant or ["table=", "v7=lean=false"]))

    gpu = LAUNCHER.device_name(dev)       # the table the launcher reads on this GPU (None: the default table)

    def with_fields(fields):
        return lambda h, t, item, res: dataclasses.replace(pick(h, t, item, res, gpu), **fields)

    subjects = {name: ab.Subject(config_fn(with_fields(f), inplace=True), True) for name, f in variants.items()}
    subjects.update(ab.from_registry([p for p in args.peers.split(",") if p], dev))
    cases = []
    for s in args.shapes:
        h, t, res = (int(v) for v in s.split(":"))
        cases.append(Case(*tokens_to_batch_seq(t), h, args.dtype, bool(res)))
    inputs = ab.inputs_for(cases, dev, seed=3)
    for label, (x, w, r) in inputs.items():
        for name, got in ab.outputs({n: subjects[n] for n in variants}, x, w, r, EPS).items():
            e_out, e_res = compare(x, w, r, EPS, *(got if isinstance(got, tuple) else (got,)))
            print(f"{label} {name}: relative error vs float64: output {e_out:.1e}"
                  + (f", new residual {e_res:.1e}" if r is not None else ""), flush=True)
    res = ab.interleave(subjects, inputs, modes=modes, device=dev, rounds=args.rounds, budget_ms=args.budget_ms,
                        eps=EPS)
    res.to_csv(f"{args.out}/launch_ab.csv")
    print(res.table())


if __name__ == "__main__":
    main()
