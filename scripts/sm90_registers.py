"""Registers and occupancy of our kernel's table configs on sm_90, compiled here without a GPU (v9).

    python scripts/sm90_registers.py [--table FILE] [--keys H:T:R ...] [--out CSV]

For each launch-table entry (bf16): Triton makes the PTX for an H100 (sm_90a), the ptxas Triton uses
turns it into SASS and reports registers and shared memory; both the lean launch (v8+) and the v7
code are compiled, and each entry's programs per SM (kernels/occupancy.py) and grid are printed,
marking entries where the lean launch fits fewer programs per SM than the v7 code while the grid
has more programs than fit at once. This is how v9 found why the lean launch lost at 4096 x 2048
(38 registers instead of 32: 12 programs per SM instead of 16). A config's register cap (6th field)
is passed to ptxas too. Takes ~0.3 s per compile on a CPU.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("TRITON_DEFAULT_FP_FUSION", "1")      # Triton 3.6's default (the H100 image)
if os.environ.get("TRITON_INTERPRET") == "1":                # the interpreter's kernels cannot be compiled
    sys.exit("sm90_registers.py: unset TRITON_INTERPRET (it compiles the kernel, it does not run it)")


def compile_sm90(hidden: int, tokens: int, residual: bool, cfg, lean: bool, dtype: str = "bf16"):
    """(registers, shared memory bytes, spill bytes) of our kernel for one config, compiled for sm_90a."""
    from triton.backends.compiler import GPUTarget
    from triton.backends.nvidia.compiler import CUDABackend, get_ptxas
    from triton.compiler import ASTSource
    from triton._C.libtriton import ir

    from rmsnorm_lab.kernels import triton_rmsnorm as tk
    from rmsnorm_lab.kernels._triton_rmsnorm_kernel import rmsnorm_fwd_kernel as kernel

    cfg = tk.normalize_config(cfg)
    warps = cfg[1]
    cap = cfg[5] if len(cfg) > 5 else 0
    names = list(kernel.arg_names)
    # the compile-time arguments launch() would pass (PDL on, as on an H100), by name
    const = dict(zip(names[11:], tk.kernel_constexprs(hidden, tokens, cfg, residual, hidden, True, lean)))
    sig = {n: ("constexpr" if n in const else "*" + dtype if n in ("X", "W", "Y", "R", "RO")
               else "fp32" if n == "eps" else "i32") for n in names}
    src = ASTSource(kernel, sig, constexprs={(names.index(k),): v for k, v in const.items()},
                    attrs={(i,): [["tt.divisibility", 16]] for i in range(9)})   # 16-byte aligned pointers, strides
    target = GPUTarget("cuda", 90, 32)
    backend = CUDABackend(target)
    opts = {"num_warps": warps, "launch_pdl": True}
    if cap:
        opts["maxnreg"] = cap
    options = backend.parse_options(opts)
    ctx = ir.context()
    ir.load_dialects(ctx)
    backend.load_dialects(ctx)
    mod = src.make_ir(target, options, backend.get_codegen_implementation(options), backend.get_module_map(), ctx)
    stages: dict = {}
    backend.add_stages(stages, options, src.language)
    meta: dict = {}
    for stage in ("ttir", "ttgir", "llir", "ptx"):
        mod = stages[stage](mod, meta)
    with tempfile.TemporaryDirectory() as d:
        ptx = Path(d) / "k.ptx"
        ptx.write_text(mod)
        args = [get_ptxas(target.arch).path, "-arch=sm_90a", "-v", str(ptx), "-o", str(Path(d) / "k.cubin")]
        out = subprocess.run(args, capture_output=True, text=True)
    log = out.stdout + out.stderr
    regs = re.search(r"Used (\d+) registers", log)
    if out.returncode or not regs:
        raise RuntimeError(f"ptxas failed for {hidden}:{tokens}:{int(residual)} {cfg}: {log[-500:]}")
    smem = re.search(r"(\d+) bytes smem", log)
    spill = re.search(r"(\d+) bytes spill stores", log)
    return int(regs.group(1)), int(smem.group(1)) if smem else 0, int(spill.group(1)) if spill else 0


def main():
    from rmsnorm_lab.kernels import triton_rmsnorm as tk
    from rmsnorm_lab.kernels.occupancy import occupancy

    ap = argparse.ArgumentParser()
    ap.add_argument("--table", default=str(tk.TABLE_PATH))
    ap.add_argument("--keys", nargs="*", default=[], help="HIDDEN:TOKENS_BUCKET:RES entries (default: all)")
    ap.add_argument("--out", help="CSV of every entry")
    ap.add_argument("--sms", type=int, default=132)
    args = ap.parse_args()
    table = json.loads(Path(args.table).read_text())["configs"]
    rows = []
    for key in args.keys or list(table):
        h, t, r = map(int, key.split(":"))
        cfg = tk.normalize_config(table[key])
        got = {}
        for name, lean in (("lean", True), ("v7", False)):
            regs, smem, spill = compile_sm90(h, t, bool(r), cfg, lean)
            got[name] = (regs, occupancy(regs, cfg[1], smem), spill)
        programs = -(-t // cfg[0]) if not cfg[2] else min(-(-t // cfg[0]), cfg[2] * args.sms)
        lower = got["lean"][1] < got["v7"][1] and programs > got["lean"][1] * args.sms
        rows.append({"key": key, "config": list(cfg), "programs": programs,
                     "lean_regs": got["lean"][0], "lean_per_sm": got["lean"][1], "lean_spill": got["lean"][2],
                     "v7_regs": got["v7"][0], "v7_per_sm": got["v7"][1], "lower_occupancy": lower})
        print(f"{key:15s} {str(list(cfg)):26s} lean {got['lean'][0]:3d} regs, {got['lean'][1]:2d} per SM | v7 "
              f"{got['v7'][0]:3d} regs, {got['v7'][1]:2d} per SM | {programs} programs"
              f"{'  <- lean fits fewer and the grid is larger than one wave' if lower else ''}", flush=True)
    if args.out:
        with open(args.out, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)


if __name__ == "__main__":
    main()
