"""Diagnose our kernel's graph-mode outliers: PDL on vs off, repeated, beside two peers, one process.

    python scripts/gpu_diag.py > diag.log
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SHAPES = [(2048, 1, False), (2048, 128, False), (4096, 1, False), (4096, 2048, False), (5120, 16, False),
          (16384, 1, False), (8192, 1024, False), (2048, 512, True), (4096, 16, True), (6144, 4096, True)]


def main():
    from rmsnorm_lab.cases import Case, make_inputs
    from rmsnorm_lab.impls import get_impl
    from rmsnorm_lab.kernels.launch import config_fn
    from rmsnorm_lab.kernels.tables import pick
    from rmsnorm_lab.timing import Runner, time_runner

    peers = {n: get_impl(n).load() for n in ("flashinfer", "quack")}
    ours = {pdl: config_fn(lambda n, t, isz, res, on=not pdl: pick(n, t, isz, res).replace(pdl=on)) for pdl in ("", "1")}
    print("hidden tokens res | mode  | triton PDL on (x3)        | PDL off (x3)              | flashinfer | quack")
    for h, t, res in SHAPES:
        c = Case(1, t, h, "bfloat16", res)
        x, w, r = make_inputs(c, "cuda", 3)
        for mode in ("graph", "cold", "eager"):
            if mode == "eager" and t > 1:
                continue
            cols = []
            for pdl in ("", "1"):
                v = []
                for _ in range(3):
                    t_ = time_runner(Runner(ours[pdl], x, w, r, 1e-6, True), mode, "cuda", budget_ms=20)
                    v.append(f"{t_.median_us:7.2f}")
                cols.append(" ".join(v))
            pv = [f"{time_runner(Runner(f, x, w, r, 1e-6, n != 'quack'), mode, 'cuda', budget_ms=20).median_us:7.2f}"
                  for n, f in peers.items()]
            print(f"{h:6d} {t:6d} {int(res)}   | {mode:5s} | {cols[0]} | {cols[1]} | {pv[0]}    | {pv[1]}", flush=True)


if __name__ == "__main__":
    main()
