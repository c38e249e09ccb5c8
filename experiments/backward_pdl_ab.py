# Run once (H200, 2026-12-02) with this commit's PDL option and the launches of 4b4e9e6; data: reports/nvidia-h200/backward/search/pdl-ab.json
"""A/B: dw's second step with and without PDL; 8192/4096 + res launch alternatives. Ours only."""
import json, os, statistics, dataclasses
import torch
from rmsnorm_lab.kernels import training as T
from rmsnorm_lab.kernels.variants import sm_count
from rmsnorm_lab.timing import Runner, time_runner
from rmsnorm_lab.bandwidth import measure_copy_bandwidth
from rmsnorm_lab.backward import bwd_bytes

OUT = os.environ.get("OUT", "/tmp/out"); os.makedirs(OUT, exist_ok=True)
dev = "cuda"; SM = sm_count(dev)
copy_gbps = measure_copy_bandwidth(dev)
print("copy", copy_gbps, "pdl", T._has_pdl(torch.empty(1, device=dev)), flush=True)
DT = {"bf16": torch.bfloat16, "fp16": torch.float16}
rows = []
def shapes():
    for dname in ("bf16",):
        for n in (2048, 4096, 5120, 5376, 6144, 8192, 16384):
            for m in (1024, 4096, 8192, 16384, 32768, 65536):
                for res in (False, True):
                    yield dname, n, m, res
    for (n, m, res) in [(5120, 8192, False), (5376, 8192, False), (6144, 8192, False), (2048, 16384, True),
                        (4096, 8192, True), (5120, 8192, True), (5376, 8192, True), (8192, 4096, True),
                        (6144, 8192, True), (8192, 8192, True), (8192, 65536, True), (8192, 1024, True)]:
        yield "fp16", n, m, res
for dname, n, m, res in shapes():
    dt = DT[dname]
    torch.manual_seed(0)
    s = torch.randn(m, n, device=dev, dtype=dt); dy = torch.randn(m, n, device=dev, dtype=dt)
    w = torch.randn(n, device=dev, dtype=dt); rstd = torch.rand(m, device=dev) + 0.5
    dro = torch.randn(m, n, device=dev, dtype=dt) if res else None
    cfg = T.bwd_launch(n, m, SM, res)
    subj = {"pdl": cfg, "nopdl": dataclasses.replace(cfg, pdl=False)}
    if res and n == 8192:
        alt = T.TrainLaunch(8192, 1, 8, min(2 * SM, m), 2, 0, reload=1, maxnreg=128)
        subj["r1w8x2"] = alt
        subj["r2w16x1"] = T.TrainLaunch(8192, 2, 16, min(SM, -(-m // 2)), 2, 0)
        subj["4k4k_w8x2_r1"] = T.TrainLaunch(4096, 1, 8, min(2 * SM, m), 2, 4096, reload=1, maxnreg=128)
    if res and n == 4096:
        subj["r2w8x2"] = T.TrainLaunch(4096, 2, 8, min(2 * SM, -(-m // 2)), 2, 0, reload=1, maxnreg=128)
        subj["r1w4x4"] = T.TrainLaunch(4096, 1, 4, min(4 * SM, m), 2, 0, reload=2, maxnreg=128)
    outs = {}
    for k, c in subj.items():
        try:
            outs[k] = T._backward(dy, s, w, rstd, dro, c)
        except Exception as e:
            print("ERR", k, repr(e)[:300], flush=True)
    torch.cuda.synchronize()
    eq = torch.equal(outs["pdl"][1], outs["nopdl"][1]) and torch.equal(outs["pdl"][0], outs["nopdl"][0])
    dwdiff = {k: float((o[1].float() - outs["nopdl"][1].float()).abs().max()) for k, o in outs.items()}
    dsdiff = {k: float((o[0].float() - outs["nopdl"][0].float()).abs().max()) for k, o in outs.items()}
    del outs
    nbytes = bwd_bytes(m, n, s.element_size(), res, partial_rows=SM)
    t = {}
    for rnd in range(3):
        for k, c in subj.items():
            if k not in dwdiff:
                continue
            r = Runner(lambda *a, c=c: T._backward(dy, s, w, rstd, dro, c), s, w, None, 1e-6, False)
            for mode in ("cold", "graph"):
                try:
                    t.setdefault((k, mode), []).append(time_runner(r, mode, dev).median_us)
                except Exception as e:
                    print("ERR", k, mode, repr(e)[:200], flush=True)
    row = {"dtype": dname, "hidden": n, "tokens": m, "residual": res, "bytes": nbytes, "pdl_bitwise_equal": eq,
           "dw_maxdiff": dwdiff, "ds_maxdiff": dsdiff}
    for (k, mode), v in t.items():
        row[f"{k}_{mode}"] = statistics.median(v); row[f"{k}_{mode}_all"] = v
    row["pct_copy_pdl"] = nbytes / row["pdl_cold"] / 1e3 / copy_gbps * 100
    row["pct_copy_nopdl"] = nbytes / row["nopdl_cold"] / 1e3 / copy_gbps * 100
    rows.append(row)
    print(json.dumps({k: (round(v, 2) if isinstance(v, float) else v) for k, v in row.items() if not k.endswith("_all") and "diff" not in k}), flush=True)
    json.dump({"copy_gbps": copy_gbps, "rows": rows}, open(f"{OUT}/pdl.json", "w"), indent=1)
    del s, dy, dro; torch.cuda.empty_cache()
