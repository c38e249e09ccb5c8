# Run once (H200, 2026-12-02) with the backward launches of commit 4b4e9e6; data: reports/nvidia-h200/backward/search/time-split.json
"""Where the backward's time goes at the shapes below 90% of copy (H200): per-kernel device time
(profiler), cold/graph event time of: full backward, main kernel alone, sum kernel alone, balanced
program count, same-size copy."""
import json, os, sys, time, statistics
import torch
from rmsnorm_lab.kernels import training as T
from rmsnorm_lab.kernels.variants import sm_count
from rmsnorm_lab.timing import Runner, time_runner
from rmsnorm_lab.bandwidth import same_size_copy_runner, measure_copy_bandwidth
from rmsnorm_lab.backward import bwd_bytes

OUT = os.environ.get("OUT", "/tmp/out")
dev = "cuda"
SM = sm_count(dev)
copy_gbps = measure_copy_bandwidth(dev)
print("copy GB/s", copy_gbps, flush=True)
SHAPES = [(5120, 8192, False), (5376, 8192, False), (6144, 8192, False), (2048, 16384, True),
          (4096, 8192, True), (5120, 8192, True), (5376, 8192, True), (8192, 4096, True),
          (6144, 8192, True), (8192, 8192, True), (4096, 65536, False)]
DT = {"bf16": torch.bfloat16, "fp16": torch.float16}
rows_out = []
K = T._kernels()


def launch_main(dy2, s2, w, rstd, dro2, ds, part, cfg, m, n, res):
    return K.rmsnorm_bwd_kernel[(cfg.programs,)](
        dy2, s2, w, rstd, dro2, ds, part, dy2.stride(0), s2.stride(0), dro2.stride(0), ds.stride(0), m,
        N=n, BLOCK_N=cfg.block_n, ROWS=cfg.rows, HAS_DRES=res, STAGES=cfg.stages, TAIL=cfg.tail,
        RELOAD=cfg.reload, num_warps=cfg.warps, **({"maxnreg": cfg.maxnreg} if cfg.maxnreg else {}))


def launch_sum(part, dw, cfg, n):
    bc, bp = T.sum_launch(n, cfg.programs)
    return K.sum_partials_kernel[(-(-n // bc),)](part, dw, cfg.programs, N=n, BLOCK_C=bc, BLOCK_P=bp, num_warps=4)


def med(t):
    return t.median_us if hasattr(t, "median_us") else t.median


for dname in ("bf16", "fp16"):
    dt = DT[dname]
    for (n, m, res) in SHAPES:
        if dname == "bf16" and (n, m, res) in [(6144, 8192, True), (8192, 8192, True)]:
            pass
        torch.manual_seed(0)
        s = torch.randn(m, n, device=dev, dtype=dt)
        dy = torch.randn(m, n, device=dev, dtype=dt)
        w = torch.randn(n, device=dev, dtype=dt)
        rstd = torch.rand(m, device=dev, dtype=torch.float32) + 0.5
        dro = torch.randn(m, n, device=dev, dtype=dt) if res else None
        cfg = T.bwd_launch(n, m, SM, res)
        tiles = -(-m // cfg.rows)
        per = -(-tiles // cfg.programs)
        bal = T.TrainLaunch(**{**cfg.__dict__, "programs": -(-tiles // per)})
        ds = torch.empty_like(s); part = torch.empty(cfg.programs, n, device=dev, dtype=torch.float32)
        dw = torch.empty(n, device=dev, dtype=dt)
        dro2 = dro if res else dy
        ck = launch_main(dy, s, w, rstd, dro2, ds, part, cfg, m, n, res)
        launch_sum(part, dw, cfg, n)
        ref_ds, ref_dw = T._backward(dy, s, w, rstd, dro, cfg)
        torch.cuda.synchronize()
        nbytes = bwd_bytes(m, n, s.element_size(), res, partial_rows=SM)
        subj = {
            "full": lambda *a: T._backward(dy, s, w, rstd, dro, cfg),
            "balanced": lambda *a: T._backward(dy, s, w, rstd, dro, bal),
            "main_only": lambda *a: launch_main(dy, s, w, rstd, dro2, ds, part, cfg, m, n, res),
            "sum_only": lambda *a: launch_sum(part, dw, cfg, n),
        }
        runners = {k: Runner(f, s, w, None, 1e-6, False) for k, f in subj.items()}
        runners["copy_same"] = same_size_copy_runner(nbytes, dev)
        res_t = {}
        for rnd in range(3):
            for k, r in runners.items():
                for mode in ("cold", "graph"):
                    try:
                        t = time_runner(r, mode, dev)
                        res_t.setdefault((k, mode), []).append(t.median_us)
                    except Exception as e:
                        res_t.setdefault((k, mode), []).append(float("nan"))
                        print("ERR", k, mode, repr(e)[:200], flush=True)
        # profiler: 20 cold calls of full and copy
        from rmsnorm_lab.timing import _fast_flush_buffer
        flush = _fast_flush_buffer(dev)
        from torch.profiler import profile, ProfilerActivity
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            for _ in range(20):
                flush.zero_(); torch.cuda._sleep(1_000_000)
                T._backward(dy, s, w, rstd, dro, cfg)
            torch.cuda.synchronize()
        tr = f"/tmp/trace_{dname}_{n}_{m}_{int(res)}.json"
        prof.export_chrome_trace(tr)
        ev = [e for e in json.load(open(tr))["traceEvents"] if e.get("cat") == "kernel"]
        ev.sort(key=lambda e: e["ts"])
        mains = [e for e in ev if "rmsnorm_bwd" in e["name"]]
        sums = [e for e in ev if "sum_partials" in e["name"]]
        gaps = [sm["ts"] - mn["ts"] - mn["dur"] for mn, sm in zip(mains, sums)]
        row = {"dtype": dname, "hidden": n, "tokens": m, "residual": res, "bytes": nbytes, "cfg": cfg.__dict__,
               "balanced_programs": bal.programs, "n_regs": getattr(ck, "n_regs", None),
               "n_spills": getattr(ck, "n_spills", None),
               "prof_main_us": statistics.median(e["dur"] for e in mains),
               "prof_sum_us": statistics.median(e["dur"] for e in sums),
               "prof_gap_us": statistics.median(gaps)}
        for (k, mode), v in res_t.items():
            row[f"{k}_{mode}"] = statistics.median(v)
            row[f"{k}_{mode}_all"] = v
        row["pct_copy_full_cold"] = nbytes / row["full_cold"] / 1e3 / copy_gbps * 100
        row["pct_copy_main_cold"] = nbytes / row["main_only_cold"] / 1e3 / copy_gbps * 100
        row["pct_copy_prof_main"] = nbytes / row["prof_main_us"] / 1e3 / copy_gbps * 100
        row["pct_copy_same_cold"] = nbytes / row["copy_same_cold"] / 1e3 / copy_gbps * 100
        rows_out.append(row)
        print(json.dumps({k: (round(v, 2) if isinstance(v, float) else v) for k, v in row.items() if not k.endswith("_all") and k != "cfg"}), flush=True)
        os.makedirs(OUT, exist_ok=True)
        json.dump({"copy_gbps": copy_gbps, "rows": rows_out}, open(f"{OUT}/where.json", "w"), indent=1)
        del s, dy, dro, ds, part
        torch.cuda.empty_cache()
