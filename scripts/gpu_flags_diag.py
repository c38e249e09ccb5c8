"""Why torch.compile wins cold at mid sizes, and what our kernel's L2 / PDL flags do: one process.

    python scripts/gpu_flags_diag.py --out DIR

For a few shapes where the target run lost (bf16), times in cold and graph mode:
our kernel with each flag combination (geometry from the launch table), our kernel
out of place (fresh output buffers, as torch.compile writes), and the peers
torch.compile, FlashInfer, Liger. Writes DIR/flags_diag.csv and, for two shapes,
the Triton code Inductor generated (DIR/inductor_<hidden>x<tokens>.py).
"""
from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SHAPES = [(4096, 16, True), (4096, 128, True), (4096, 512, True), (6144, 256, True), (8192, 256, True),
          (2048, 1024, True), (4096, 512, False), (6144, 128, False), (4096, 2048, False), (5120, 64, False),
          (8192, 1024, False), (4096, 16384, True)]
DUMP = [(4096, 512, True), (6144, 128, False)]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--budget-ms", type=float, default=10.0)
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    import torch
    from torch._inductor.utils import run_and_get_code

    from rmsnorm_lab.cases import Case, make_inputs
    from rmsnorm_lab.impls import get_impl
    from rmsnorm_lab.impls.torch_impls import hf_rmsnorm
    from rmsnorm_lab.kernels import launch as tk
    from rmsnorm_lab.kernels.config import LaunchConfig
    from rmsnorm_lab.kernels.tables import pick
    from rmsnorm_lab.reference import compare
    from rmsnorm_lab.timing import Runner, time_runner

    for h, t, res in DUMP:
        x, w, r = make_inputs(Case(1, t, h, "bfloat16", res), "cuda", 1)
        torch._dynamo.reset()
        _, code = run_and_get_code(torch.compile(hf_rmsnorm, dynamic=False), x, w, r, 1e-6)
        (out / f"inductor_{h}x{t}{'_res' if res else ''}.py").write_text("\n\n# ----\n\n".join(code))

    peers = {}
    for name in ("torch_compile", "flashinfer", "liger"):
        try:
            impl = get_impl(name)
            peers[name] = (impl.load(), impl.inplace_residual)
        except Exception as e:  # noqa: BLE001
            print(f"{name}: not loaded ({e})", flush=True)

    def ours(flags, inplace=True):
        return tk.config_fn(lambda n, t, isz, res: LaunchConfig.from_legacy(pick(n, t, isz, res).legacy()[:3] + (flags,)),
                            inplace)

    variants = {f"ours_f{f}": (ours(f), True) for f in range(8)}
    variants["ours_f0_outofplace"] = (ours(0, False), False)
    variants["ours_f1_outofplace"] = (ours(1, False), False)
    variants.update(peers)

    rows = []
    print("hidden tokens res mode  " + " ".join(f"{k[:14]:>14s}" for k in variants), flush=True)
    for h, t, res in SHAPES:
        x, w, r = make_inputs(Case(1, t, h, "bfloat16", res), "cuda", 2)
        for mode in ("cold", "graph"):
            line = []
            for name, (fn, inplace) in variants.items():
                try:
                    got = fn(x.clone(), w, None if r is None else r.clone(), 1e-6)
                    err = compare(x, w, r, 1e-6, got[0] if res else got)[0]
                    tm = time_runner(Runner(fn, x, w, r, 1e-6, inplace), mode, "cuda", budget_ms=args.budget_ms)
                    rows.append({"hidden": h, "tokens": t, "residual": res, "mode": mode, "variant": name,
                                 "us_median": round(tm.median_us, 3), "us_p20": round(tm.p20_us, 3),
                                 "us_p80": round(tm.p80_us, 3), "err": err})
                    line.append(f"{tm.median_us:14.2f}")
                except Exception as e:  # noqa: BLE001
                    rows.append({"hidden": h, "tokens": t, "residual": res, "mode": mode, "variant": name,
                                 "error": str(e)[:200]})
                    line.append(f"{'err':>14s}")
            print(f"{h:6d} {t:6d} {int(res)}   {mode:5s} " + " ".join(line), flush=True)
    with open(out / "flags_diag.csv", "w", newline="") as f:
        wr = csv.DictWriter(f, fieldnames=["hidden", "tokens", "residual", "mode", "variant", "us_median",
                                           "us_p20", "us_p80", "err", "error"])
        wr.writeheader()
        wr.writerows(rows)


if __name__ == "__main__":
    main()
