"""``python -m rmsnorm_lab [COMMAND] ...``: the lab's one command line.

Commands:
  run      (the default) the seed's flags: a correctness check, then the sweep
  report   run the notebooks into a report folder (rmsnorm_lab.report)
  probe    the support matrix: odd shapes, dtypes and layouts (rmsnorm_lab.probe)
  tune     search the launch table of our kernel on this GPU (rmsnorm_lab.tune)
  list     list implementations and whether they run here (also: run --list);
           --variant V / --pass bwd: those of a norm variant or of the backward pass;
           --models: the models' table and its token splits

``python -m rmsnorm_lab COMMAND --help`` describes each. Every error is one
line on stderr with exit status 2.

The run's default grid is the seed's (hidden 4096 and 6144, batch 1/4/16/64,
seq 64..1024, bf16, with and without residual) on a GPU; on CPU it is
``device.CPU_GRID`` (hidden 1024 4096, batch 1, seq 4 16), since our Triton
kernel runs there through the Triton interpreter. Size flags narrow the sweep
to those sizes. ``--variant`` picks the norm (plain RMSNorm, gemma, qk-norm,
fp8-static, fp8-per-token; for qk-norm ``--hidden-size`` is the width of q and
``--head-dim`` the head size) and ``--pass`` the forward, the backward or both
(fwd, bwd, fwd+bwd); every point is checked against float64 before it is timed.
``--tokens`` replaces batch x seq by token counts; ``--models all`` (or names) measures
real models' hidden sizes x the token counts of ``--models-split`` (rmsnorm_lab.models).
A results directory holds one configuration: the same command
again resumes it; another configuration needs another --save-path.
"""
from __future__ import annotations

import argparse
import importlib
import sys

PROG = "python -m rmsnorm_lab"
COMMANDS = {           # name -> (module whose main(argv) runs it, what it does)
    "report": ("rmsnorm_lab.report", "run the notebooks into a report folder"),
    "probe": ("rmsnorm_lab.probe", "the support matrix (each implementation in a child process)"),
    "tune": ("rmsnorm_lab.tune", "search the launch table of our kernel on this GPU"),
}


from .validate import OneLineParser as _Parser  # noqa: E402


def _arg(checker, what: str, parse=int):
    """An argparse type: parse the text, then validate it with one of rmsnorm_lab.validate's checkers."""
    def convert(text: str):
        try:
            value = parse(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        try:
            return checker("value", value)
        except (TypeError, ValueError) as e:
            raise argparse.ArgumentTypeError(str(e).removeprefix("value: ")) from None
    convert.__name__ = what                 # argparse names the type in some messages
    return convert


def _dtype(text: str) -> str:
    from .validate import SWEEP_DTYPES, dtype_name
    try:
        return dtype_name(text, SWEEP_DTYPES)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e).removeprefix("dtype: ")) from None


def build_parser() -> argparse.ArgumentParser:
    from .models import SPLITS
    from .points import DEFAULT_HEAD_DIM, PASS_CHOICES, VARIANT_CHOICES
    from .validate import SWEEP_DTYPES, accepted_dtypes, check_nonneg_int, check_positive_int

    pos_int = _arg(check_positive_int, "a positive integer")
    p = _Parser(prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch-size", type=pos_int, nargs="+", default=None,
                   help="batch sizes (default: correctness 4; sweep 1 4 16 64, on CPU 1)")
    p.add_argument("--seq-len", type=pos_int, nargs="+", default=None,
                   help="sequence lengths (default: correctness 128; sweep 64 128 256 512 1024, on CPU 4 16)")
    p.add_argument("--hidden-size", type=pos_int, nargs="+", default=None,
                   help="hidden sizes (default: correctness 4096; sweep 4096 6144, on CPU 1024 4096)")
    p.add_argument("--tokens", type=pos_int, nargs="+", default=None,
                   help="token counts (rows) instead of --batch-size x --seq-len")
    p.add_argument("--models", nargs="+", default=None, metavar="MODEL",
                   help="real models' shapes instead of the grid: 'all' or model names (`list --models` lists "
                        "them); their hidden sizes x the token counts of --models-split")
    p.add_argument("--models-split", choices=SPLITS, default="validate",
                   help="with --models: tune (the token counts a tuner may see), validate (the ones it never "
                        "sees; default) or all")
    p.add_argument("--use-residual", action="store_true",
                   help="correctness check with fused residual add (the sweep always covers both unless --residual)")
    p.add_argument("--residual", choices=["both", "with", "without"], default="both",
                   help="which residual variants the sweep measures (default: both)")
    p.add_argument("--save-path", default=None,
                   help="results directory, one configuration each (default: ./configs/rmsnorm/; another "
                        "--variant or --pass: ./configs/rmsnorm-VARIANT[-PASS]/)")
    p.add_argument("--impls", default="all", help="comma-separated implementation names, or 'all'")
    p.add_argument("--dtype", type=_dtype, nargs="+", default=["bfloat16"], metavar="DTYPE",
                   help=f"{accepted_dtypes(SWEEP_DTYPES)} (default: bfloat16)")
    p.add_argument("--timing", nargs="+", default=None, choices=["cold", "graph", "eager"],
                   help="timing modes (default: cold graph on CUDA, cold eager on CPU; graph needs CUDA)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: auto)")
    p.add_argument("--quick", action="store_true", help="a small grid: hidden 4096, batch 1 16, seq 128 1024")
    p.add_argument("--no-check", action="store_true", help="skip the correctness check before the sweep")
    p.add_argument("--no-copy-ceiling", action="store_true",
                   help="cold timing: skip the copy of each shape's bytes timed the same way (pct_copy_same)")
    p.add_argument("--no-plots", action="store_true", help="do not write PNG plots")
    p.add_argument("--list", action="store_true", help="list implementations and whether they run here, then exit")
    p.add_argument("--variant", choices=VARIANT_CHOICES, default="plain",
                   help="which norm: plain RMSNorm (default), gemma's (1 + w), qk-norm (per head of q and k), "
                        "RMSNorm fused with FP8 quantization (static scale or per-token scales)")
    p.add_argument("--head-dim", type=pos_int, default=DEFAULT_HEAD_DIM,
                   help="qk-norm: the head size (default: %(default)s); --hidden-size is then the width of q "
                        "(heads x head dim)")
    p.add_argument("--pass", dest="passes", nargs="+", choices=PASS_CHOICES, default=["fwd"], metavar="PASS",
                   help="fwd (default), bwd (the backward alone, the forward's state ready) and / or fwd+bwd "
                        "(a training step's forward and backward)")
    p.add_argument("--seed", type=_arg(check_nonneg_int, "a non-negative integer"), default=0,
                   help="random seed for inputs (default: 0)")
    return p


from .device import say_once, use_expandable_segments  # noqa: E402
from .validate import USER_ERRORS  # noqa: E402
from .validate import exit_with_error as _one_line_error  # noqa: E402


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    cmd = argv[0] if argv and not argv[0].startswith("-") else "run"
    if cmd == "run" and argv[:1] == ["run"]:
        argv = argv[1:]
    elif cmd != "run":
        argv = argv[1:]
    if cmd == "list":
        return _list_main(argv)
    if cmd in COMMANDS:
        use_expandable_segments()       # before anything starts CUDA; the notebooks' processes inherit it
        return _dispatch(cmd, argv)
    if cmd != "run":
        choices = ["run", "list", *COMMANDS]
        from .validate import suggest
        print(f"{PROG}: error: unknown command {cmd!r}; expected one of {', '.join(choices)}"
              f"{suggest(cmd, choices)}", file=sys.stderr)
        return 2
    args = build_parser().parse_args(argv)
    use_expandable_segments()
    try:
        return _run(args)
    except KeyboardInterrupt:
        print("interrupted: every finished point is in the results CSV; run again to resume", file=sys.stderr)
        return 130
    except USER_ERRORS as e:
        return _one_line_error(PROG, e)


def _dispatch(cmd: str, argv: list) -> int:
    """Run a command's module lazily (its imports cost nothing until it is asked for)."""
    module, _ = COMMANDS[cmd]
    prog = f"{PROG} {cmd}"
    try:
        mod = importlib.import_module(module)
    except ModuleNotFoundError as e:
        if e.name != module:
            raise
        print(f"{prog}: error: {module} is not part of this installation of rmsnorm_lab", file=sys.stderr)
        return 2
    try:
        return mod.main(argv) or 0
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except USER_ERRORS as e:
        return _one_line_error(prog, e)


def _list_main(argv: list) -> int:
    from .points import PASS_CHOICES, VARIANT_CHOICES
    p = _Parser(prog=f"{PROG} list", description="List implementations and whether they run on the device.")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: auto)")
    p.add_argument("--variant", choices=VARIANT_CHOICES, default="plain", help="which norm (default: plain)")
    p.add_argument("--pass", dest="passes", nargs="+", choices=PASS_CHOICES, default=["fwd"], metavar="PASS",
                   help="fwd (default), bwd or fwd+bwd")
    p.add_argument("--dtype", type=_dtype, default="bfloat16", metavar="DTYPE", help="(default: bfloat16)")
    p.add_argument("--models", action="store_true",
                   help="the models of `run --models` (hidden sizes, QK-norm head sizes, token splits) instead")
    args = p.parse_args(argv)
    if args.models:
        from .models import table_lines
        print("\n".join(table_lines()))
        return 0
    try:
        from .device import resolve_device, use_triton_interpreter_on_cpu
        from .points import check_combination
        device = resolve_device(args.device)
        say_once(use_triton_interpreter_on_cpu(device))
        _cli_names(check_combination, args.variant, args.passes, [args.dtype], [False, True])
        _print_list(device, args.variant, args.passes, args.dtype)
        return 0
    except USER_ERRORS as e:
        return _one_line_error(p.prog, e)


def _print_list(device: str, variant: str = "plain", passes=("fwd",), dtype: str = "bfloat16") -> None:
    """Which implementations run here, and why not (per pass; per residual form where a variant has one)."""
    from .points import is_plain, support_rows
    for pass_ in passes:
        if is_plain(variant, pass_):
            from .impls import list_impls
            if len(passes) > 1:
                print(f"# {variant} {pass_}")
            for r in list_impls(device):
                print(f"{r['impl']:16s} {'yes' if r['available'] else 'no ':3s} {r['reason']}")
            continue
        print(f"# {variant} {pass_}" + (f" ({dtype})" if pass_ != "fwd" else ""))
        for r in support_rows(variant, pass_, device, dtype):
            res = "" if r["residual"] == "" else ("+residual " if r["residual"] else "          ")
            print(f"{r['impl']:16s} {res}{'yes' if r['ok'] else 'no ':3s} {r['reason']}")


# names the sweep's validation uses -> the flags that set them
_FLAGS = {"variant": "--variant", "passes": "--pass", "head_dim": "--head-dim", "dtypes": "--dtype",
          "residual": "--residual", "impls": "--impls", "hidden_size": "--hidden-size", "tokens": "--tokens",
          "models": "--models", "models_split": "--models-split"}


def _cli_names(fn, *a, **kw):
    """Call a validator, its error naming the command-line flag instead of the API parameter."""
    try:
        return fn(*a, **kw)
    except (ValueError, TypeError, KeyError) as e:
        msg = e.args[0] if isinstance(e, KeyError) and e.args else str(e)
        head, sep, rest = str(msg).partition(": ")
        if sep and head in _FLAGS:
            raise type(e)(f"{_FLAGS[head]}: {rest}") from None
        raise


def check_runnable(impls, device: str, variant: str = "plain", passes=("fwd",), dtype: str = "bfloat16") -> None:
    """RuntimeError naming --impls when none of ``impls`` can run on ``device`` (nothing would be measured)."""
    from .points import is_plain, support_rows
    why = []
    for pass_ in passes:
        if is_plain(variant, pass_):
            from .impls import list_impls
            rows = {r["impl"]: (r["available"], r["reason"]) for r in list_impls(device)}
        else:
            rows = {}
            for r in support_rows(variant, pass_, device, dtype):
                if r["impl"] not in rows or r["ok"]:
                    rows[r["impl"]] = (r["ok"], r["reason"])
        if any(rows[n][0] for n in impls if n in rows):
            return
        why += [f"{n}: {rows[n][1]}" for n in impls if n in rows]
    raise RuntimeError(f"--impls: nothing can run on {device} ({'; '.join(dict.fromkeys(why))})")


def _run(args) -> int:
    from dataclasses import asdict

    from .device import CPU_GRID, device_name, resolve_device, use_triton_interpreter_on_cpu
    from .impls import resolve_names
    from .points import check_combination, resolve_impls
    from .results import check_same_run, check_writable, run_identity
    from .validate import check_modes

    device = resolve_device(args.device)
    say_once(use_triton_interpreter_on_cpu(device))  # before anything imports our kernel
    plain = args.variant == "plain" and args.passes == ["fwd"]
    impls = resolve_names(args.impls) if plain else \
        _cli_names(resolve_impls, args.impls, args.variant, args.passes)
    if args.list:
        _print_list(device, args.variant, args.passes, args.dtype[0])
        return 0
    modes = check_modes(args.timing, device, "--timing")
    models = None
    if args.models:
        from .models import check_models
        models = _cli_names(check_models, args.models)
        given = [f for f, v in (("--hidden-size", args.hidden_size), ("--batch-size", args.batch_size),
                                ("--seq-len", args.seq_len), ("--tokens", args.tokens), ("--quick", args.quick)) if v]
        if given:
            raise ValueError(f"--models: the models give the hidden sizes and --models-split the token counts; "
                             f"drop {', '.join(given)}")
    elif args.tokens and (args.batch_size or args.seq_len):
        raise ValueError("--tokens: token counts replace --batch-size x --seq-len; give one or the other")
    _cli_names(check_combination, args.variant, args.passes, args.dtype, [False, True])
    check_runnable(impls, device, args.variant, args.passes, args.dtype[0])
    save_path = args.save_path
    if save_path is None:
        parts = ([] if plain else [args.variant] + [p for p in args.passes if p != "fwd"]) + \
            ([f"models-{args.models_split}"] if models else [])
        save_path = "./configs/rmsnorm" + "".join("-" + p for p in parts) + "/"
    save = check_writable(save_path)
    from .seed import calculate_diff
    from .sweep import SweepConfig, run_sweep

    hidden = args.hidden_size or ([4096] if args.quick else None)
    batch = args.batch_size or ([1, 16] if args.quick else None)
    seq = args.seq_len or ([128, 1024] if args.quick else None)
    on_cpu = not device.startswith("cuda")
    if args.tokens and on_cpu and not hidden:
        hidden = CPU_GRID["hidden"]
        say_once(f"CPU grid: hidden {' '.join(map(str, hidden))} (--hidden-size chooses others)")
    elif on_cpu and not models and not (hidden and batch and seq):
        hidden, batch, seq = hidden or CPU_GRID["hidden"], batch or CPU_GRID["batch"], seq or CPU_GRID["seq"]
        say_once(f"CPU grid: hidden {' '.join(map(str, hidden))}, batch {' '.join(map(str, batch))}, "
                 f"seq {' '.join(map(str, seq))} (the seed's GPU grid takes hours on CPU; "
                 f"--hidden-size/--batch-size/--seq-len choose others)")
    residual = {"both": [False, True], "with": [True], "without": [False]}[args.residual]
    cfg = SweepConfig(impls=impls, dtypes=args.dtype, modes=modes, device=device, save_path=str(save),
                      residual=residual, seed=args.seed, copy_ceiling=not args.no_copy_ceiling,
                      variant=args.variant, passes=args.passes, head_dim=args.head_dim,
                      models=models, models_split=args.models_split, tokens=args.tokens,
                      command=f"{PROG} " + " ".join(sys.argv[1:]))
    if hidden:
        cfg.hidden = hidden
    if batch:
        cfg.batch = batch
    if seq:
        cfg.seq = seq
    _cli_names(cfg.validate)
    check_same_run(save, run_identity(asdict(cfg), device_name(device)), "--save-path")

    if not args.no_check and "fwd" in args.passes and args.variant == "plain":
        calculate_diff((args.batch_size or [4])[0], (args.seq_len or [128])[0], (args.hidden_size or [4096])[0],
                       args.use_residual, args.dtype[0], device, impls, args.seed)
    df = run_sweep(cfg)
    _print_summary(df)
    if not args.no_plots:
        from .plots import save_all
        if len(args.passes) == 1:
            save_all(df, save)
        else:
            for pass_ in args.passes:
                save_all(df[df["pass"] == pass_], save, f"{pass_.replace('+', '-')}-")
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
