"""Where torch.compile's cold-L2 lead at 16-512 tokens comes from: one process, cold and graph.

    python scripts/gpu_cold_gap.py --out DIR

For each shape: compiles the HF RMSNorm with torch.compile, records the config
Inductor's autotuner picked, re-launches Inductor's own Triton kernel with that
config out of place (as Inductor does) and in place (as vLLM / FlashInfer / ours),
and times beside them our kernel as the launch table picks it, with PDL off, and
as a two-pass kernel with Inductor's slice width and warps. Writes DIR/cold_gap.csv.
"""
from __future__ import annotations

import argparse
import csv
import gc
import re
import sys
import types
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SHAPES = [(4096, 16, True), (4096, 128, True), (4096, 256, True), (4096, 512, True), (5120, 256, True),
          (6144, 128, False), (8192, 128, False), (4096, 2048, True)]


def inductor_kernel(code: str):
    """The @triton.jit kernel in Inductor's output code, as a callable Triton function."""
    m = re.search(r"async_compile\.triton\('(\w+)', '''(.*?)''', device_str", code, re.S)
    name, src = m.group(1), m.group(2)
    src = src[src.index("@triton.jit"):]
    mod = types.ModuleType("ind_" + name)
    path = Path(f"/tmp/ind_{name}_{abs(hash(src)) % 10**8}.py")
    path.write_text("import triton\nimport triton.language as tl\n"
                    "from torch._inductor.runtime.triton_helpers import libdevice\n" + src)
    mod.__file__ = str(path)
    exec(compile(path.read_text(), str(path), "exec"), mod.__dict__)
    return getattr(mod, name)


def _autotuners(cls) -> list:
    found = []
    for o in gc.get_objects():
        try:
            if isinstance(o, cls):
                found.append(o)
        except ReferenceError:      # a dead weak proxy
            pass
    return found


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--budget-ms", type=float, default=10.0)
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    import torch
    from torch._inductor.runtime.triton_heuristics import CachingAutotuner
    from torch._inductor.utils import run_and_get_code

    from rmsnorm_lab.cases import Case, make_inputs
    from rmsnorm_lab.impls.torch_impls import hf_rmsnorm
    from rmsnorm_lab.kernels import launch as tk
    from rmsnorm_lab.kernels.config import as_config
    from rmsnorm_lab.kernels.tables import pick as pick_config
    from rmsnorm_lab.reference import compare
    from rmsnorm_lab.timing import Runner, time_runner

    rows = []
    for h, t, res in SHAPES:
        x, w, r = make_inputs(Case(1, t, h, "bfloat16", res), "cuda", 2)
        torch._dynamo.reset()
        before = {id(o) for o in _autotuners(CachingAutotuner)}
        compiled = torch.compile(hf_rmsnorm, dynamic=False)
        _, code = run_and_get_code(compiled, x, w, r, 1e-6)
        tuners = [o for o in _autotuners(CachingAutotuner) if id(o) not in before]
        cfg = tuners[-1].launchers[0].config if tuners and tuners[-1].launchers else None
        kw = dict(cfg.kwargs) if cfg else {}
        warps = cfg.num_warps if cfg else 8
        info = f"inductor picked {kw} num_warps={warps} num_stages={getattr(cfg, 'num_stages', None)}"
        print(f"{h} x {t} res={int(res)}: {info}", flush=True)
        k = inductor_kernel(code[0])
        xb, rb = kw.get("XBLOCK", 1), kw.get("R0_BLOCK", kw.get("RBLOCK", 2048))
        grid = (-(-t // xb),)

        def ind(inplace):
            def fn(x, w, r, eps):
                if res:
                    y, ro = (x, r) if inplace else (torch.empty_like(x), torch.empty_like(r))
                    k[grid](x, r, w, y, ro, t, h, XBLOCK=xb, R0_BLOCK=rb, num_warps=warps)
                    return y, ro
                y = torch.empty_like(x)
                k[grid](x, w, y, t, h, XBLOCK=xb, R0_BLOCK=rb, num_warps=warps)
                return y
            return fn

        def ours(cfg=None, no_pdl=False):
            return tk.config_fn(as_config(cfg).replace(pdl=not no_pdl))     # PDL on/off: a config field

        pick = pick_config(h, t, 2, res)
        variants = {
            "torch_compile": (compiled, False),
            "inductor_kernel_outofplace": (ind(False), False),
            "inductor_kernel_inplace": (ind(True), True),
            "ours_table": (ours(pick), True),
            "ours_table_nopdl": (ours(pick, True), True),
            "ours_twopass_inductor_cfg": (ours((1, warps, 0, 1, rb) if xb == 1 and rb < h else pick), True),
            "ours_onepass_inductor_warps": (ours((1, warps, 0, 0, 0)), True),
        }
        for name, (fn, inplace) in variants.items():
            try:
                got = fn(x.clone(), w, None if r is None else r.clone(), 1e-6)
                err = compare(x, w, r, 1e-6, got[0] if res else got)[0]
                for mode in ("cold", "graph"):
                    tm = time_runner(Runner(fn, x, w, r, 1e-6, inplace), mode, "cuda", budget_ms=args.budget_ms)
                    rows.append({"hidden": h, "tokens": t, "residual": res, "variant": name, "mode": mode,
                                 "us_median": round(tm.median_us, 3), "us_p20": round(tm.p20_us, 3),
                                 "us_p80": round(tm.p80_us, 3), "err": err, "inductor": info})
                    print(f"  {name:28s} {mode:5s} {tm.median_us:8.2f} ({tm.p20_us:.2f}-{tm.p80_us:.2f}) err {err:.1e}",
                          flush=True)
            except Exception as e:  # noqa: BLE001
                rows.append({"hidden": h, "tokens": t, "residual": res, "variant": name, "error": str(e)[:300]})
                print(f"  {name:28s} error {str(e)[:300]}", flush=True)
    with open(out / "cold_gap.csv", "w", newline="") as f:
        wr = csv.DictWriter(f, fieldnames=["hidden", "tokens", "residual", "variant", "mode", "us_median", "us_p20",
                                           "us_p80", "err", "inductor", "error"])
        wr.writeheader()
        wr.writerows(rows)


if __name__ == "__main__":
    main()
