"""Why do our kernel's cold timings show ~100 us outliers? PDL on/off x spin length, one process.

    python scripts/gpu_cold_outliers.py
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main():
    import torch

    from rmsnorm_lab import timing
    from rmsnorm_lab.cases import Case, make_inputs
    from rmsnorm_lab.impls import get_impl
    from rmsnorm_lab.kernels.launch import config_fn
    from rmsnorm_lab.kernels.tables import pick

    tor = get_impl("torch").load()
    ours = {pdl: config_fn(lambda n, t, isz, res, on=not pdl: pick(n, t, isz, res).replace(pdl=on)) for pdl in ("", "1")}
    flush = torch.empty(256 << 20, dtype=torch.int8, device="cuda")
    for h, t, res in ((4096, 512, True), (6144, 128, False), (4096, 2048, False)):
        x, w, r = make_inputs(Case(1, t, h, "bfloat16", res), "cuda", 0)
        for label, fn, pdl, spin_us in (("triton pdl", ours[""], "", 50), ("triton pdl", ours[""], "", 300),
                                        ("triton nopdl", ours["1"], "1", 50), ("triton nopdl", ours["1"], "1", 300),
                                        ("torch", tor, "", 50)):
            run = timing.Runner(fn, x, w, r, 1e-6, True)
            for _ in range(3):
                run.restore(); run()
            st = [torch.cuda.Event(enable_timing=True) for _ in range(300)]
            en = [torch.cuda.Event(enable_timing=True) for _ in range(300)]
            for i in range(300):
                run.restore()
                flush.zero_()
                torch.cuda._sleep(int(spin_us * 2000))
                st[i].record()
                run()
                en[i].record()
            torch.cuda.synchronize()
            v = sorted(a.elapsed_time(b) * 1000 for a, b in zip(st, en))
            q = lambda p: v[int(p * (len(v) - 1))]
            print(f"{h}x{t} res={int(res)} {label:13s} spin {spin_us:3d}us: p20 {q(.2):7.2f} p50 {q(.5):7.2f} "
                  f"p80 {q(.8):7.2f} p95 {q(.95):7.2f} max {v[-1]:7.2f}  (>2x p20: {sum(s > 2 * q(.2) for s in v)})",
                  flush=True)


if __name__ == "__main__":
    main()
