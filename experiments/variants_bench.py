"""Benchmark of the RMSNorm variants (gemma, qk-norm, fp8-static, fp8-per-token) in one process.

For each variant, shape and subject (ours, the torch subjects, the unfused FP8 baseline, the peers):
check against the float64 reference first (a failing subject is a row with status wrong / error and
its reason, never dropped), then time it cold and under CUDA-graph replay with rmsnorm_lab.timing.
Writes one tidy CSV row per (variant, subject, shape, mode) and prints, per variant and mode:
ours / fastest peer per shape, the geomean against each single peer, and fused vs unfused FP8 at
shapes whose bytes exceed 16 MiB.

    python experiments/variants_bench.py                      # GPU: the reduced grid (~3 minutes on an H200)
    python experiments/variants_bench.py --full               # every hidden x tokens, both qk layouts
    python experiments/variants_bench.py --variant fp8-static --hidden 4096 --tokens 1024 4096
    python experiments/variants_bench.py --smoke --device cpu # CI: one tiny shape, torch subjects and ours
                                                              # (CPU: needs TRITON_INTERPRET=1)
"""
from __future__ import annotations

import argparse
import csv
import math
import sys
import time
from pathlib import Path

from rmsnorm_lab import variants as V
from rmsnorm_lab.analysis import geomean

COLUMNS = ["variant", "impl", "dtype", "hidden", "heads", "head_dim", "tokens", "residual", "mode",
           "us_median", "us_p20", "us_p80", "bytes", "gbps", "status", "error",
           "frac_off_by_more_than_one_step", "scale_rel_err", "err", "heads_kv", "fused_qkv"]
FULL_HIDDEN = (2048, 4096, 5120, 7168, 8192, 16384)
FULL_TOKENS = (1, 16, 128, 1024, 4096, 16384, 65536)
DEFAULT_HIDDEN = (4096, 8192)
DEFAULT_TOKENS = (16, 1024, 16384)
# heads_q, heads_kv, head_dim of real models
QK_MODELS = {"qwen3-8b": (32, 8, 128), "llama-70b": (64, 8, 128), "gemma3-12b": (16, 8, 256),
             "d64-32x8": (32, 8, 64)}
BIG_BYTES = 16 * 2**20
EPS = 1e-6


def build_cases(args) -> list:
    """The cases to run, in order (variant, then shape)."""
    dtype = args.dtype
    if args.smoke:
        out = []
        for v in args.variant:
            if v == "qk-norm":
                out.append(V.VariantCase(v, 3, 4 * 64, dtype, head_dim=64, heads_kv=2, fused_qkv=True))
            else:
                out += [V.VariantCase(v, 4, 256, dtype, residual=r) for r in (False, True)]
        return out
    hidden = args.hidden or (FULL_HIDDEN if args.full else DEFAULT_HIDDEN)
    tokens = args.tokens or (FULL_TOKENS if args.full else DEFAULT_TOKENS)
    residuals = (False, True) if args.residual == "both" else (args.residual == "yes",)
    layouts = (True, False) if args.full else (True,)
    out = []
    for v in args.variant:
        if v == "qk-norm":
            for model in args.qk_models:
                hq, hkv, d = QK_MODELS[model]
                for fused in layouts:
                    out += [V.VariantCase(v, t, hq * d, dtype, head_dim=d, heads_kv=hkv, fused_qkv=fused)
                            for t in tokens]
            continue
        for r in residuals:
            out += [V.VariantCase(v, t, h, dtype, residual=r) for h in hidden for t in tokens]
    return out


def _row(case, impl, mode="", **kw) -> dict:
    row = dict.fromkeys(COLUMNS, "")
    row.update(variant=case.variant, impl=impl, dtype=case.dtype, hidden=case.hidden,
               heads=case.heads_q or "", head_dim=case.head_dim if case.variant == "qk-norm" else "",
               heads_kv=case.heads_k or "", fused_qkv=int(case.fused_qkv) if case.variant == "qk-norm" else "",
               tokens=case.tokens, residual=int(case.residual), mode=mode, bytes=V.bytes_moved(case))
    row.update(kw)
    return row


def _fmt(v):
    return "" if v is None or (isinstance(v, float) and math.isnan(v)) else (f"{v:.4g}" if isinstance(v, float) else v)


def _sync(device):
    if device.startswith("cuda"):
        import torch
        torch.cuda.synchronize()


def run_case(case, subs, modes, device, budget_ms, seed=0) -> list:
    """Check then time every subject on one case; one row per (subject, mode)."""
    from rmsnorm_lab.timing import Runner, time_runner
    inputs = V.make_inputs(case, device, seed)
    rows = []
    for s in subs:
        if not s.support:
            rows += [_row(case, s.name, m, status="skip", error=s.support.reason) for m in modes]
            continue
        try:
            ret = V.call(case, s.fn, V.clone_inputs(inputs), EPS)
            _sync(device)
            res = V.check(case, inputs, ret, EPS)
            del ret
        except Exception as e:  # noqa: BLE001 - a failing subject is a row with its reason
            msg = f"{type(e).__name__}: {e}".replace("\n", " ")[:300]
            rows += [_row(case, s.name, m, status="error", error=msg) for m in modes]
            continue
        metrics = dict(err=_fmt(res.err), frac_off_by_more_than_one_step=_fmt(res.frac_off),
                       scale_rel_err=_fmt(res.scale_rel_err))
        if res.status != "ok":
            rows += [_row(case, s.name, m, status=res.status, error=res.detail, **metrics) for m in modes]
            continue
        for mode in modes:
            try:
                fn2, x, w, r = V.timing_args(case, inputs, s.fn)
                runner = Runner(fn2, x, w, r, EPS, s.inplace)
                t = time_runner(runner, mode, device, budget_ms=budget_ms)
                if not runner.outputs_finite():
                    raise RuntimeError("non-finite outputs after the timed calls")
                del runner
                gbps = V.bytes_moved(case) / (t.median_us * 1e3)
                rows.append(_row(case, s.name, mode, us_median=_fmt(t.median_us), us_p20=_fmt(t.p20_us),
                                 us_p80=_fmt(t.p80_us), gbps=_fmt(gbps), status="ok", **metrics))
            except Exception as e:  # noqa: BLE001
                msg = f"{type(e).__name__}: {e}".replace("\n", " ")[:300]
                rows.append(_row(case, s.name, mode, status="error", error=msg, **metrics))
    del inputs
    if device.startswith("cuda"):
        import torch
        torch.cuda.empty_cache()
    return rows


# ---------------------------------------------------------------------------------------------- summary

def _shape_key(r):
    if r["variant"] == "qk-norm":
        return f"{r['heads']}/{r['heads_kv']}x{r['head_dim']}{' qkv' if r['fused_qkv'] == 1 else ''} x {r['tokens']}"
    return f"{r['hidden']} x {r['tokens']}{' +res' if r['residual'] else ''}"


def summarize(rows, out=sys.stdout) -> dict:
    """Per variant and mode: ours / fastest peer per shape, geomean against each single peer, and
    fused (ours) vs unfused (ours-unfused) FP8 where the bytes exceed 16 MiB. Returns the figures."""
    figures = {}
    roles = {n: V.subject_role(n) for n in V.SUBJECT_NAMES}
    for variant in dict.fromkeys(r["variant"] for r in rows):
        for mode in dict.fromkeys(r["mode"] for r in rows if r["variant"] == variant):
            sel = [r for r in rows if r["variant"] == variant and r["mode"] == mode]
            shapes: dict = {}
            for r in sel:
                if r["status"] == "ok":
                    shapes.setdefault(_shape_key(r), {})[r["impl"]] = (float(r["us_median"]), r)
            print(f"\n== {variant}, {mode} (us median; ratio = ours / fastest peer) ==", file=out)
            ratios, per_peer, fused = [], {}, []
            for key, by in shapes.items():
                peers = {n: u for n, (u, _) in by.items() if roles.get(n) == "peer"}
                ours = by.get("ours", (None,))[0]
                best = min(peers, key=peers.get) if peers else None
                line = f"  {key:<28} ours " + (f"{ours:9.2f}" if ours is not None else f"{'-':>9}")
                if ours is not None and best:
                    ratio = ours / peers[best]
                    ratios.append(ratio)
                    line += f"  best peer {best} {peers[best]:.2f}  ratio {ratio:.3f}"
                    for n, u in peers.items():
                        per_peer.setdefault(n, []).append(u / ours)
                unf = by.get("ours-unfused")
                if ours is not None and unf and int(unf[1]["bytes"]) > BIG_BYTES:
                    fused.append(unf[0] / ours)
                    line += f"  unfused/fused {unf[0] / ours:.2f}"
                print(line, file=out)
            fig = {"shapes": len(ratios)}
            if ratios:
                fig["at_or_below_1.03"] = sum(x <= 1.03 for x in ratios) / len(ratios)
                fig["geomean_ours_over_fastest_peer"] = geomean(ratios)
                print(f"  shapes with ours <= 1.03x the fastest peer: {fig['at_or_below_1.03']:.0%} of {len(ratios)}; "
                      f"geomean ours / fastest peer {fig['geomean_ours_over_fastest_peer']:.3f}", file=out)
            full = {n: geomean(v) for n, v in per_peer.items() if len(v) == len(ratios)}
            if full:
                best_single = min(full, key=full.get)
                fig["best_single_peer"] = best_single
                fig["speedup_vs_best_single_peer"] = full[best_single]
                print("  geomean peer / ours (> 1: ours faster): "
                      + ", ".join(f"{n} {g:.3f}" for n, g in sorted(full.items()))
                      + f"; best single peer {best_single}: {full[best_single]:.3f}", file=out)
            if fused:
                fig["fused_vs_unfused_geomean"] = geomean(fused)
                print(f"  fused vs unfused FP8 above 16 MiB: geomean {fig['fused_vs_unfused_geomean']:.2f}x "
                      f"(min {min(fused):.2f}x) over {len(fused)} shapes", file=out)
            bad = [r for r in sel if r["status"] in ("wrong", "error")]
            for r in bad:
                print(f"  {r['status']}: {r['impl']} at {_shape_key(r)}: {r['error']}", file=out)
            figures[(variant, mode)] = fig
    return figures


# ---------------------------------------------------------------------------------------------- main

def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--variant", nargs="+", default=list(V.VARIANTS), choices=V.VARIANTS)
    p.add_argument("--impl", nargs="+", default=None, choices=V.SUBJECT_NAMES, help="subjects (default: all)")
    p.add_argument("--hidden", nargs="+", type=int, default=None)
    p.add_argument("--tokens", nargs="+", type=int, default=None)
    p.add_argument("--qk-models", nargs="+", default=list(QK_MODELS), choices=list(QK_MODELS))
    p.add_argument("--residual", choices=("no", "yes", "both"), default="both")
    p.add_argument("--dtype", default="bfloat16", choices=tuple(V.TOLERANCE))
    p.add_argument("--modes", nargs="+", default=None, choices=("cold", "graph", "eager"))
    p.add_argument("--budget-ms", type=float, default=None, help="timing budget per (subject, shape, mode)")
    p.add_argument("--full", action="store_true", help="every hidden x tokens, both qk layouts")
    p.add_argument("--smoke", action="store_true", help="one tiny shape per variant, torch subjects and ours")
    p.add_argument("--device", default="auto")
    p.add_argument("--out", type=Path, default=None, help="CSV path (default: reports/<device>/variants/results.csv)")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    from rmsnorm_lab.device import device_name, resolve_device, slug
    try:
        device = resolve_device(args.device)
    except (ValueError, RuntimeError) as e:
        print(f"variants_bench: {e}", file=sys.stderr)
        return 2
    cuda = device.startswith("cuda")
    modes = args.modes or (["cold", "graph"] if cuda else ["cold"])
    if not cuda and "graph" in modes:
        print("variants_bench: graph mode needs CUDA", file=sys.stderr)
        return 2
    names = args.impl or (["torch", "ours", "ours-unfused"] if args.smoke else None)
    budget = args.budget_ms or (2.0 if args.smoke else 25.0)
    out = args.out or Path("reports") / slug(device_name(device)) / "variants" / "results.csv"
    out.parent.mkdir(parents=True, exist_ok=True)
    cases = build_cases(args)
    t0 = time.time()
    print(f"variants_bench: {len(cases)} cases on {device_name(device)}, modes {', '.join(modes)} -> {out}",
          flush=True)
    rows = []
    subs_cache: dict = {}
    with open(out, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        for case in cases:
            key = (case.variant, case.residual)
            if key not in subs_cache:
                subs_cache[key] = [s for s in V.subjects(case.variant, case.residual, device, names)
                                   if names is None or case.variant in V.subject_variants(s.name)]
            new = run_case(case, subs_cache[key], modes, device, budget)
            writer.writerows(new)
            f.flush()
            rows += new
            ok = sum(r["status"] == "ok" for r in new)
            print(f"  {case.key():<44} {ok}/{len(new)} ok  ({time.time() - t0:.0f} s)", flush=True)
    summarize(rows)
    print(f"\nwrote {len(rows)} rows to {out} in {time.time() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
