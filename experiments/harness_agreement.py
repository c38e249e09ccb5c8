"""Do the fast and the thorough timing harnesses agree? Side by side, in one process.

Question: the fast harness (``rmsnorm_lab.timing``, ``harness="fast"``: adaptive stopping, an
L2-sized flush) stops sampling much earlier than the thorough one (a fixed budget per point, a
256 MB flush). Are its medians the same, within 3%, at every shape above 1 MB, in both modes?

For each shape (bf16, hidden 2048-16384 x tokens, with and without residual), implementation and
mode, both harnesses time the same prepared call in the order thorough, fast, fast, thorough; each
harness's figure is the mean of its two medians, so drift during the run cancels. Writes a CSV (one
row per point: both medians, spreads, sample counts and the seconds each harness spent) and prints
the new/old ratios and the largest |ratio - 1| above 1 MB per mode.

    python experiments/harness_agreement.py --out reports/<gpu>/harness-agreement   # GPU, ~90 s on an H200
    python experiments/harness_agreement.py --smoke --out /tmp/agree                # CPU, 2 shapes, seconds
"""
from __future__ import annotations

import argparse
import csv
import statistics
import sys
import time
from pathlib import Path

HIDDEN = (2048, 4096, 8192, 16384)
TOKENS = (512, 8192)
LIMIT_BYTES = 1 << 20                       # agreement is asked above 1 MB
COLUMNS = ["impl", "dtype", "hidden", "tokens", "residual", "bytes", "mode",
           "old_us", "new_us", "ratio", "old_p20", "old_p80", "new_p20", "new_p80",
           "old_n", "new_n", "old_s", "new_s", "status"]


def default_impls(device: str) -> list[str]:
    """torch, ours, and every peer that can run here (the per-shape compiled baselines left out:
    they compile once per shape, and the harness is what is compared)."""
    from rmsnorm_lab.impls import get_impl, registry
    try:
        from rmsnorm_lab.impls import by_role
        keep = set(by_role("ours")) | set(by_role("peer"))
    except ImportError:
        keep = set(registry())
    keep.add("torch")
    names = []
    for name in registry():
        impl = get_impl(name)
        if name in keep and name != "torch_compile" and impl.available(device):
            names.append(name)
    return names


def measure(impls, hidden, tokens, residual, modes, device, budget_ms, dtype="bfloat16", log=print) -> list[dict]:
    import torch

    from rmsnorm_lab.cases import Case, make_inputs, tokens_to_batch_seq
    from rmsnorm_lab.check import check_impl
    from rmsnorm_lab.impls import get_impl
    from rmsnorm_lab.timing import Runner, time_runner

    rows = []
    cases = [Case(*tokens_to_batch_seq(t), h, dtype, r) for r in residual for h in hidden for t in tokens]
    for i, case in enumerate(cases):
        inputs = make_inputs(case, device, i)
        for name in impls:
            impl = get_impl(name)
            base = {"impl": name, "dtype": dtype, "hidden": case.hidden, "tokens": case.tokens,
                    "residual": case.residual, "bytes": case.bytes_moved}
            s = impl.supports(case.dtype, device)
            if not s:
                continue
            chk = check_impl(name, case, device, i, 1e-6, inputs=inputs)
            if chk["status"] != "ok":
                rows += [{**base, "mode": m, "status": f"{chk['status']}: {chk['reason']}"[:200]} for m in modes]
                continue
            fn = impl.load()
            x, w, r = inputs
            for mode in modes:
                got: dict = {"thorough": [], "fast": []}
                spent = {"thorough": 0.0, "fast": 0.0}
                for harness in ("thorough", "fast", "fast", "thorough"):
                    runner = Runner(fn, x, w, r, 1e-6, impl.inplace_residual)
                    t0 = time.perf_counter()
                    got[harness].append(time_runner(runner, mode, device, budget_ms=budget_ms, harness=harness))
                    spent[harness] += time.perf_counter() - t0
                    del runner
                old, new = got["thorough"], got["fast"]
                o = statistics.fmean(t.median_us for t in old)
                n = statistics.fmean(t.median_us for t in new)
                row = {**base, "mode": mode, "old_us": round(o, 3), "new_us": round(n, 3),
                       "ratio": round(n / o, 4),
                       "old_p20": round(old[0].p20_us, 3), "old_p80": round(old[0].p80_us, 3),
                       "new_p20": round(new[0].p20_us, 3), "new_p80": round(new[0].p80_us, 3),
                       "old_n": sum(t.n for t in old), "new_n": sum(t.n for t in new),
                       "old_s": round(spent["thorough"], 3), "new_s": round(spent["fast"], 3), "status": "ok"}
                rows.append(row)
                log(f"{name:12s} {case.hidden:6d} x {case.tokens:6d} res={int(case.residual)} {mode:5s} "
                    f"old {o:9.2f} us (n={row['old_n']:4d}, {row['old_s']:.2f} s)  "
                    f"new {n:9.2f} us (n={row['new_n']:4d}, {row['new_s']:.2f} s)  ratio {n / o:.4f}")
        del inputs
        if device.startswith("cuda"):
            torch.cuda.empty_cache()
    return rows


def summary(rows, limit_bytes: int = LIMIT_BYTES) -> str:
    ok = [r for r in rows if r.get("status") == "ok"]
    lines = []
    for mode in sorted({r["mode"] for r in ok}):
        big = [r for r in ok if r["mode"] == mode and r["bytes"] > limit_bytes]
        if not big:
            continue
        worst = max(big, key=lambda r: abs(r["ratio"] - 1))
        old_s, new_s = sum(r["old_s"] for r in big), sum(r["new_s"] for r in big)
        lines.append(f"{mode}: {len(big)} points above {limit_bytes >> 20} MB; new/old median ratio "
                     f"{min(r['ratio'] for r in big):.4f}-{max(r['ratio'] for r in big):.4f}, "
                     f"max |ratio-1| {abs(worst['ratio'] - 1) * 100:.2f}% ({worst['impl']} {worst['hidden']} x "
                     f"{worst['tokens']} res={int(worst['residual'])}); time spent: thorough {old_s:.1f} s, "
                     f"fast {new_s:.1f} s")
    return "\n".join(lines) or "no points above the size limit"


def main(argv=None) -> int:
    from rmsnorm_lab.device import device_name, resolve_device

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="auto")
    p.add_argument("--impls", default="auto", help="comma-separated names, or auto (torch, ours, installed peers)")
    p.add_argument("--budget-ms", type=float, default=40.0, help="the thorough harness's budget (the full preset's)")
    p.add_argument("--smoke", action="store_true", help="2 tiny shapes, torch only: a CPU check that it runs")
    p.add_argument("--out", default="harness-agreement", help="output folder (harness_agreement.csv)")
    args = p.parse_args(argv)
    device = resolve_device(args.device)
    if args.smoke:
        hidden, tokens, residual, budget, limit = (256,), (4,), (False, True), 5.0, 0
        impls = ["torch"] if args.impls == "auto" else args.impls.split(",")
    else:
        hidden, tokens, residual, budget, limit = HIDDEN, TOKENS, (False, True), args.budget_ms, LIMIT_BYTES
        impls = default_impls(device) if args.impls == "auto" else args.impls.split(",")
    modes = ["cold", "graph"] if device.startswith("cuda") else ["cold", "eager"]
    print(f"{device_name(device)}: impls {', '.join(impls)}; modes {', '.join(modes)}", flush=True)
    t0 = time.perf_counter()
    rows = measure(impls, hidden, tokens, residual, modes, device, budget,
                   log=lambda s: print(s, flush=True))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "harness_agreement.csv", "w", newline="") as f:
        wr = csv.DictWriter(f, fieldnames=COLUMNS)
        wr.writeheader()
        wr.writerows(rows)
    text = summary(rows, limit)
    print(f"{text}\n{len(rows)} rows in {out / 'harness_agreement.csv'}; {time.perf_counter() - t0:.1f} s")
    (out / "harness_agreement.txt").write_text(f"{device_name(device)}\n{text}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
