"""Registers and occupancy of our kernel's table configs on sm_90, compiled here without a GPU (v9).

    python scripts/sm90_registers.py [--table FILE] [--keys H:T:R ...] [--out CSV] [--dtype-check]

For each launch-table entry (bf16): Triton makes the PTX for an H100 (sm_90a), the ptxas Triton uses
turns it into SASS and reports registers and shared memory; both the lean launch (v8+) and the v7
code are compiled, and each entry's programs per SM (kernels/occupancy.py) and grid are printed,
marking entries where the lean launch fits fewer programs per SM than the v7 code while the grid
has more programs than fit at once. This is how v9 found why the lean launch lost at 4096 x 2048
(38 registers instead of 32: 12 programs per SM instead of 16). A config's register cap (6th field)
is passed to ptxas too. Takes ~0.3 s per compile on a CPU.

--dtype-check compiles each entry in bf16 and fp16 (lean) instead: the table is searched in bf16 and fp16
reads the same entry, but the two can need different register counts. It marks entries where a dtype
fits fewer programs per SM while the grid has more programs than fit at once for it (a wave more), or
spills alone, and names the register cap that would fit as many programs as the other dtype. This is
how the H200 table's fp16 loss at 16384 x 512 + res was found (34 registers instead of 32: 3 programs
per SM instead of 4, 1.3 waves instead of 1).
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


DTYPES = ("bf16", "fp16")     # the dtypes that read one table entry (searched in bf16)


def dtype_check(key: str, cfg, sms: int = 132) -> dict:
    """One table entry compiled (lean) in each of DTYPES: registers, programs per SM, spills, and whether a
    dtype loses: it fits fewer programs per SM than another while the grid has more programs than fit at
    once for it, or it spills where another does not. ``cap`` is then the register cap that would fit the
    better dtype's programs per SM (0 if none would, or nothing is lost)."""
    from rmsnorm_lab.kernels import triton_rmsnorm as tk
    from rmsnorm_lab.kernels.occupancy import grid_programs, occupancy, regs_cap_for
    h, t, r = map(int, key.split(":"))
    cfg = tk.normalize_config(cfg)
    warps = cfg[1]
    programs = grid_programs(t, cfg[0], cfg[2], sms)
    row = {"key": key, "config": list(cfg), "programs": programs}
    per_sm, spills = {}, {}
    for dt in DTYPES:
        regs, smem, spill = compile_sm90(h, t, bool(r), cfg, True, dt)
        per_sm[dt], spills[dt] = occupancy(regs, warps, smem), spill
        row.update({f"{dt}_regs": regs, f"{dt}_per_sm": per_sm[dt], f"{dt}_spill": spill})
    best = max(per_sm.values())
    losers = [dt for dt in DTYPES if (per_sm[dt] < best and programs > per_sm[dt] * sms)
              or (spills[dt] and not all(spills.values()))]
    row["loses"] = " ".join(losers)
    cap = regs_cap_for(best, warps) if any(per_sm[dt] < best for dt in losers) else 0
    row["cap"] = cap if cap >= 24 and not (len(cfg) > 5 and cfg[5] <= cap) else 0
    return row


def main():
    from rmsnorm_lab.kernels import triton_rmsnorm as tk
    from rmsnorm_lab.kernels.occupancy import grid_programs, occupancy

    ap = argparse.ArgumentParser()
    ap.add_argument("--table", default=str(tk.TABLE_PATH))
    ap.add_argument("--keys", nargs="*", default=[], help="HIDDEN:TOKENS_BUCKET:RES entries (default: all)")
    ap.add_argument("--out", help="CSV of every entry")
    ap.add_argument("--sms", type=int, default=132)
    ap.add_argument("--dtype-check", action="store_true",
                    help="compile each entry in bf16 and fp16 instead (lean) and mark where a dtype loses a wave "
                         "or spills alone, with the register cap that would give it the other's programs per SM")
    args = ap.parse_args()
    table = json.loads(Path(args.table).read_text())["configs"]
    if args.dtype_check:
        return _dtype_check_main(args, table)
    rows = []
    for key in args.keys or list(table):
        h, t, r = map(int, key.split(":"))
        cfg = tk.normalize_config(table[key])
        got = {}
        for name, lean in (("lean", True), ("v7", False)):
            regs, smem, spill = compile_sm90(h, t, bool(r), cfg, lean)
            got[name] = (regs, occupancy(regs, cfg[1], smem), spill)
        programs = grid_programs(t, cfg[0], cfg[2], args.sms)
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


def _dtype_check_main(args, table):
    rows = []
    for key in args.keys or list(table):
        row = dtype_check(key, table[key], args.sms)
        rows.append(row)
        regs = " | ".join(f"{dt} {row[f'{dt}_regs']:3d} regs, {row[f'{dt}_per_sm']:2d} per SM, spill "
                          f"{row[f'{dt}_spill']}" for dt in DTYPES)
        note = f"  <- {row['loses']} loses" + (f"; cap {row['cap']} would fit as many" if row["cap"] else "")
        print(f"{key:15s} {str(row['config']):26s} {regs} | {row['programs']} programs"
              f"{note if row['loses'] else ''}", flush=True)
    lost = [r["key"] for r in rows if r["loses"]]
    print(f"{len(lost)} of {len(rows)} entries where a dtype loses: {' '.join(lost) or 'none'}", flush=True)
    if args.out:
        with open(args.out, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)


if __name__ == "__main__":
    main()
