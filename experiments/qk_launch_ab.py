# Run once (H200, 2026-12-02) before the QK-norm launch change (head_policy then capped 16 heads a program); data: reports/nvidia-h200/variants/qk-norm-d64/launch-ab.json
"""A/B of QK-norm launch shapes: elements a program (rows x head_dim) and warps. Ours only."""
import json, os, statistics
import torch
from rmsnorm_lab.kernels import variants as V
from rmsnorm_lab.kernels.config import next_pow2
from rmsnorm_lab.timing import Runner, time_runner

OUT = os.environ.get("OUT", "/tmp/out"); os.makedirs(OUT, exist_ok=True)
dev = "cuda"; SM = V.sm_count(dev)
orig = V.head_policy

def make(E, wdiv):
    def pol(d, n, sms):
        block = next_pow2(d)
        rows = max(1, E // block)
        while rows > 1 and -(-n // rows) < 2 * sms:
            rows //= 2
        warps = max(1, min(16, block * rows // wdiv))
        return V.Policy(rows, warps, -(-max(n, 1) // rows))
    return pol

POL = {"cur": orig, "e2048": make(2048, 512), "e4096": make(4096, 512), "e4096w256": make(4096, 256),
       "e8192": make(8192, 512), "e2048w256": make(2048, 256)}
MODELS = {"d64-32x8": (32, 8, 64), "qwen3-8b": (32, 8, 128), "llama-70b": (64, 8, 128), "gemma3-12b": (16, 8, 256)}
rows_out = []
for mname, (hq, hk, d) in MODELS.items():
    for tokens in (1, 16, 128, 1024, 4096, 16384, 65536):
        for fused in (False, True):
            torch.manual_seed(0)
            if fused:
                qkv = torch.randn(tokens, (hq + 2 * hk) * d, device=dev, dtype=torch.bfloat16)
                q = qkv[:, :hq * d].view(tokens, hq, d); k = qkv[:, hq * d:(hq + hk) * d].view(tokens, hk, d)
            else:
                q = torch.randn(tokens, hq, d, device=dev, dtype=torch.bfloat16)
                k = torch.randn(tokens, hk, d, device=dev, dtype=torch.bfloat16)
            wq = torch.randn(d, device=dev, dtype=torch.bfloat16); wk = torch.randn(d, device=dev, dtype=torch.bfloat16)
            ref = None; t = {}; bad = []
            for name, pol in POL.items():
                V.head_policy = pol
                out = V.qk_rmsnorm(q, k, wq, wk, 1e-6)
                if ref is None:
                    ref = out
                elif not (torch.equal(out[0], ref[0]) and torch.equal(out[1], ref[1])):
                    bad.append(name)
            for rnd in range(3):
                for name, pol in POL.items():
                    V.head_policy = pol
                    r = Runner(lambda *a: V.qk_rmsnorm(q, k, wq, wk, 1e-6), q, wq, None, 1e-6, False)
                    for mode in ("cold", "graph"):
                        t.setdefault((name, mode), []).append(time_runner(r, mode, dev).median_us)
            V.head_policy = orig
            row = {"model": mname, "tokens": tokens, "fused": fused, "not_equal": bad,
                   "policy": {n: list(dataclass_tuple) for n, dataclass_tuple in
                              ((n, (p(d, tokens * (hq + hk), SM).rows, p(d, tokens * (hq + hk), SM).warps)) for n, p in POL.items())}}
            for (n, mode), v in t.items():
                row[f"{n}_{mode}"] = statistics.median(v)
            rows_out.append(row)
            print(json.dumps({k: (round(v, 2) if isinstance(v, float) else v) for k, v in row.items() if k != "policy"}), flush=True)
            json.dump(rows_out, open(f"{OUT}/qk_ab.json", "w"), indent=1)
