"""``python -m rmsnorm_lab``: the seed's flags, a correctness check, then the sweep.

Default grid (the seed's): hidden 4096 and 6144, batch 1/4/16/64, seq 64..1024,
bf16, with and without residual. Size flags given on the command line narrow
the sweep to those sizes (the seed silently ignored them there).
"""
from __future__ import annotations

import argparse
import sys


class _Parser(argparse.ArgumentParser):
    def error(self, message):               # one line, exit status 2, no traceback
        self.exit(2, f"{self.prog}: error: {message}\n")


def _seed(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {text!r}") from None
    if v < 0:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {v}")
    return v


def _pos_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if v <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {v}")
    return v


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="python -m rmsnorm_lab", description=__doc__,
                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch-size", type=_pos_int, nargs="+", default=None,
                   help="batch sizes (default: correctness 4; sweep 1 4 16 64)")
    p.add_argument("--seq-len", type=_pos_int, nargs="+", default=None,
                   help="sequence lengths (default: correctness 128; sweep 64 128 256 512 1024)")
    p.add_argument("--hidden-size", type=_pos_int, nargs="+", default=None,
                   help="hidden sizes (default: correctness 4096; sweep 4096 6144)")
    p.add_argument("--use-residual", action="store_true",
                   help="correctness check with fused residual add (the sweep always covers both unless --residual)")
    p.add_argument("--residual", choices=["both", "with", "without"], default="both",
                   help="which residual variants the sweep measures (default: both)")
    p.add_argument("--save-path", default="./configs/rmsnorm/", help="results directory (default: %(default)s)")
    p.add_argument("--impls", default="all", help="comma-separated implementation names, or 'all'")
    p.add_argument("--dtype", nargs="+", default=["bfloat16"], help="float32 / float16 / bfloat16 (default: bfloat16)")
    p.add_argument("--timing", nargs="+", default=None, choices=["cold", "graph", "eager"],
                   help="timing modes (default: cold graph on CUDA, cold eager on CPU)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: auto)")
    p.add_argument("--quick", action="store_true", help="a small grid: hidden 4096, batch 1 16, seq 128 1024")
    p.add_argument("--no-check", action="store_true", help="skip the correctness check before the sweep")
    p.add_argument("--no-copy-ceiling", action="store_true",
                   help="cold timing: skip the copy of each shape's bytes timed the same way (pct_copy_same)")
    p.add_argument("--no-plots", action="store_true", help="do not write PNG plots")
    p.add_argument("--list", action="store_true", help="list implementations and whether they run here, then exit")
    p.add_argument("--seed", type=_seed, default=0, help="random seed for inputs (default: 0)")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return _run(args)
    except KeyboardInterrupt:
        print("interrupted: every finished point is in the results CSV; run again to resume", file=sys.stderr)
        return 130
    except (ValueError, TypeError, KeyError, OSError, RuntimeError) as e:
        msg = e.args[0] if isinstance(e, KeyError) and e.args else str(e)
        msg = " ".join(str(msg).split()) or type(e).__name__          # one line
        print(f"python -m rmsnorm_lab: error: {msg}", file=sys.stderr)
        return 2


def _run(args) -> int:
    from .device import resolve_device
    from .impls import list_impls, resolve_names
    from .results import check_writable
    from .validate import dtype_name

    device = resolve_device(args.device)
    impls = resolve_names(args.impls)
    dtypes = [dtype_name(d) for d in args.dtype]
    if args.list:
        for r in list_impls(device):
            print(f"{r['impl']:16s} {'yes' if r['available'] else 'no ':3s} {r['reason']}")
        return 0
    save = check_writable(args.save_path)
    from .seed import calculate_diff
    from .sweep import SweepConfig, run_sweep

    if not args.no_check:
        calculate_diff((args.batch_size or [4])[0], (args.seq_len or [128])[0], (args.hidden_size or [4096])[0],
                       args.use_residual, dtypes[0], device, impls, args.seed)
    hidden = args.hidden_size or ([4096] if args.quick else None)
    batch = args.batch_size or ([1, 16] if args.quick else None)
    seq = args.seq_len or ([128, 1024] if args.quick else None)
    residual = {"both": [False, True], "with": [True], "without": [False]}[args.residual]
    cfg = SweepConfig(impls=impls, dtypes=dtypes, modes=args.timing, device=device, save_path=str(save),
                      residual=residual, seed=args.seed, copy_ceiling=not args.no_copy_ceiling,
                      command="python -m rmsnorm_lab " + " ".join(sys.argv[1:]))
    if hidden:
        cfg.hidden = hidden
    if batch:
        cfg.batch = batch
    if seq:
        cfg.seq = seq
    df = run_sweep(cfg)
    _print_summary(df)
    if not args.no_plots:
        from .plots import save_all
        save_all(df, save)
    print(f"results: {save / 'results.csv'} ({len(df)} rows), environment: {save / 'env.json'}")
    return 0


def _print_summary(df) -> None:
    from .sweep import summarize

    env = df.attrs.get("env", {})
    print(f"device: {env.get('gpu_name')}; copy bandwidth {env.get('copy_gbps', 0):.0f} GB/s (measured)")
    for mode in sorted(set(df.loc[df["status"] == "ok", "mode"])):
        t = summarize(df, mode)
        if len(t):
            print(f"\n{mode} timing, µs per call (median):")
            print(t.round(2).to_string())
    bad = df[df["status"].isin(["error"])]
    if len(bad):
        print(f"\n{len(bad)} error rows (see the CSV's 'error' column)")
