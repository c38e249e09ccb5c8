"""Launch variants of our kernel against each other and beside peers, interleaved in one process.

    python experiments/launch_ab.py --out DIR [--shapes 16384:512:1 2048:4096:1] [--dtype bfloat16]
        [--norm plain|gemma|fp8-static]
        [--variant table= --variant v7=lean=false --variant nopdl=pdl=false --variant cap32=maxnreg=32]
        [--peers vllm,torch_compile] [--rounds 5] [--modes cold graph] [--device cuda]

A variant is the table's pick for each shape (``kernels.tables.pick``; for ``--norm fp8-static`` the static
FP8 norm's own table) with some ``LaunchConfig`` fields replaced (``name=field=value,field=value``; ``name=``
keeps the pick). A replacement that makes no valid launch at a shape (e.g. ``hold=1`` on a one-pass pick) is
left out there, with the reason printed. Answers the questions of the lean/v7, PDL, register-cap and
held-slices A/Bs (experiments/INDEX.md). Per shape, every variant's output is checked against the float64
reference first (``--norm fp8-static``: no element more than one e4m3 step off); then
``rmsnorm_lab.ab.interleave`` times the variants and the peers (registry names for the plain norm, the variant
subjects' names otherwise: flashinfer, vllm, torch-compile, liger, quack) in rotating rounds, all writing
their outputs in place with a residual. Writes DIR/launch_ab.csv (every timing, after each shape) and
prints medians (min-max) and ratios to the first variant.
"""
from __future__ import annotations

import argparse
import csv
import dataclasses
from pathlib import Path

EPS = 1e-6
NORMS = ("plain", "gemma", "fp8-static")


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


def ours(norm: str, cfg, scale):
    """fn(x, w, r, eps) running our kernel with launch cfg; with a residual in place (out into x, x + r into r)."""
    from rmsnorm_lab.kernels import variants as kv
    from rmsnorm_lab.kernels.launch import config_fn
    if norm == "plain":
        return config_fn(cfg, inplace=True)
    if norm == "gemma":
        return lambda x, w, r, eps: kv.gemma_rmsnorm(x, w, r, eps, out=None if r is None else x, residual_out=r,
                                                     config=cfg)
    return lambda x, w, r, eps: kv.rmsnorm_fp8_static(x, w, scale, r, eps, residual_out=r, config=cfg)


def check(norm: str, fn, h: int, t: int, dtype: str, res: bool, dev: str) -> str:
    """'' if fn's output matches the float64 reference, else why not."""
    from rmsnorm_lab import variants as V
    from rmsnorm_lab.ab import inputs_for
    from rmsnorm_lab.cases import Case, tokens_to_batch_seq
    from rmsnorm_lab.reference import compare
    from rmsnorm_lab.reference import TOLERANCE
    if norm == "plain":
        (x, w, r), = inputs_for([Case(*tokens_to_batch_seq(t), h, dtype, res)], dev, seed=3).values()
        got = fn(x.clone(), w, None if r is None else r.clone(), EPS)
        e_out, e_res = compare(x, w, r, EPS, *(got if isinstance(got, tuple) else (got,)))
        tol = TOLERANCE[dtype]
        return "" if e_out <= tol and (r is None or e_res <= tol) else f"error {e_out:.1e} / {e_res:.1e} > {tol:.0e}"
    case = V.VariantCase(norm, t, h, dtype, res)
    inp = V.make_inputs(case, dev, seed=3)
    call = (lambda x, w, r, scale, eps: fn(x, w, r, eps)) if norm == "fp8-static" else fn
    got = V.check(case, inp, V.call(case, call, V.clone_inputs(inp), EPS), EPS)
    return "" if got.status == "ok" else f"{got.status}: {got.detail}"


def peers(norm: str, names: list, res: bool, dev: str, scale) -> dict:
    from rmsnorm_lab import ab
    from rmsnorm_lab import variants as V
    if norm == "plain":
        return ab.from_registry(names, dev)
    out = {}
    for s in V.subjects(norm, res, dev, names=[n.replace("_", "-") for n in names]):
        if not s.support:
            print(f"{s.name}: {s.support.reason}", flush=True)
        elif norm == "fp8-static":
            out[s.name] = ab.Subject(lambda x, w, r, eps, fn=s.fn: fn(x, w, r, scale, eps), s.inplace)
        else:
            out[s.name] = ab.Subject(s.fn, s.inplace)
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--shapes", nargs="+", default=["16384:512:1", "2048:4096:1", "4096:2048:0"],
                    help="HIDDEN:TOKENS:RESIDUAL(0|1)")
    ap.add_argument("--dtype", default="bfloat16")
    ap.add_argument("--norm", default="plain", choices=NORMS)
    ap.add_argument("--variant", action="append", default=None, help="NAME=[FIELD=VALUE,...] (repeatable)")
    ap.add_argument("--peers", default="vllm,torch_compile", help="comma-separated ('' for none)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--modes", nargs="+", default=None, help="default: cold graph on CUDA, cold on CPU")
    ap.add_argument("--budget-ms", type=float, default=10.0)
    ap.add_argument("--device", default="cuda", help="cpu: a smoke run under TRITON_INTERPRET=1")
    args = ap.parse_args(argv)

    import torch

    from rmsnorm_lab import ab
    from rmsnorm_lab import variants as V
    from rmsnorm_lab.ab import FIELDS
    from rmsnorm_lab.cases import Case, tokens_to_batch_seq
    from rmsnorm_lab.kernels.launch import LAUNCHER
    from rmsnorm_lab.kernels.tables import pick

    dev = args.device
    modes = args.modes or (["cold", "graph"] if dev.startswith("cuda") else ["cold"])
    variants = dict(parse_variant(v) for v in (args.variant or ["table=", "v7=lean=false"]))
    gpu = LAUNCHER.device_name(dev)       # the table the launcher reads on this GPU (None: the default table)
    table = "fp8-static" if args.norm == "fp8-static" else None
    scale = torch.tensor([V.STATIC_SCALE], dtype=torch.float32, device=dev)
    names = [p for p in args.peers.split(",") if p]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows: list = []
    for text in args.shapes:
        h, t, res = (int(v) for v in text.split(":"))
        base = pick(h, t, torch.empty(0, dtype=getattr(torch, args.dtype)).element_size(), bool(res), gpu,
                    variant=table)
        subjects = {}
        for name, fields in variants.items():
            try:
                cfg = dataclasses.replace(base, **fields)
            except (ValueError, TypeError) as e:
                print(f"{h}x{t}{'+res' if res else ''} {name}: left out: {e}", flush=True)
                continue
            fn = ours(args.norm, cfg, scale)
            why = check(args.norm, fn, h, t, args.dtype, bool(res), dev)
            print(f"{h}x{t}{'+res' if res else ''} {name} {cfg}: {why or 'matches the float64 reference'}", flush=True)
            if not why:
                subjects[name] = ab.Subject(fn, True)
        if not subjects:
            continue
        subjects.update(peers(args.norm, names, bool(res), dev, scale))
        if args.norm == "plain":
            inputs = ab.inputs_for([Case(*tokens_to_batch_seq(t), h, args.dtype, bool(res))], dev, seed=3)
        else:       # 2-D (tokens, hidden), the variant's own weights: what the front door times
            inp = V.make_inputs(V.VariantCase(args.norm, t, h, args.dtype, bool(res)), dev, seed=3)
            inputs = {f"{h}x{t}{'+res' if res else ''} {args.dtype}": (inp["x"], inp["w"], inp["r"])}
        got = ab.interleave(subjects, inputs, modes=modes, device=dev, rounds=args.rounds, budget_ms=args.budget_ms,
                            eps=EPS)
        rows += got.rows
        with open(out / "launch_ab.csv", "w", newline="") as f:     # after every shape: nothing measured is lost
            w = csv.DictWriter(f, fieldnames=FIELDS)
            w.writeheader()
            w.writerows({k: r.get(k, "") for k in FIELDS} for r in rows)
        print(got.table(), flush=True)


if __name__ == "__main__":
    main()
