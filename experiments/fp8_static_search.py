"""Which launch of our kernel is fastest for the static-scale FP8 norm, against the peers in one process?

Our static-FP8 norm (``kernels.variants.rmsnorm_fp8_static``) runs the plain kernel, with its own launch
table where the GPU has one and the plain (bf16-output) table's pick elsewhere. For each (hidden, tokens,
residual) this times, bf16 in and FP8 out, the plain table's pick on this GPU, the variant's current pick
and the launches the table search would try for the plain norm there (``rmsnorm_lab.tune.candidates``:
evict-last loads, two-pass slices with each flag, the whole row read twice, persistent grids; ``--wide``:
every geometry too), first in graph mode, then the fastest ``--top``, the plain table's pick and the peers (FlashInfer's ``rmsnorm_quant`` / ``fused_add_rmsnorm_quant``, vLLM's static-FP8 ops,
torch.compile) in cold mode too. Each launch's output is checked against the float64 reference first
(``variants.check``: no element more than one e4m3 step off). With a residual, ours writes the new
residual in place, as the front door's subject and the peers do. The kernels compile first in parallel
worker processes (Triton's on-disk cache), so the timing process only loads them. Writes ``search.csv``
(one row per subject, launch, shape and mode) and prints, per shape, the table's pick, the best launch
and the fastest peer.

    python experiments/fp8_static_search.py --hidden 4096,5120,16384 --tokens 4096,65536 --out /tmp/fs
    python experiments/fp8_static_search.py --hidden 5120 --tokens 4096 --wide --dry-run
    TRITON_INTERPRET=1 python experiments/fp8_static_search.py --device cpu --hidden 256 --tokens 8   (smoke)

On ``--device cpu`` (a smoke run under the interpreter) nothing compiles ahead and eager timing stands in
for graph mode.

``--table-from DIR [DIR ...] --write FILE`` turns search folders (``search.csv`` and ``meta.json``) into the
static FP8 norm's launch table (``rmsnorm_lab/kernels/tables/<gpu>.fp8-static.json``): per shape the launch
with the smallest ``max(cold / fastest peer cold, graph / fastest peer graph)`` among those timed in both
modes (the fastest peer of the same folder and mode).

    python experiments/fp8_static_search.py --table-from /tmp/fs /tmp/fs2 --write rmsnorm_lab/kernels/tables/nvidia-h200.fp8-static.json
"""
from __future__ import annotations

import argparse
import csv
import itertools
import json
import math
import os
import time

FIELDS = ["hidden", "tokens", "residual", "subject", "config", "mode", "us", "pct_copy", "table_pick", "status",
          "error"]
PEERS = "flashinfer,vllm,torch-compile"
EPS = 1e-6


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(v) for v in str(text).split(",") if v.strip())


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--hidden", default="4096,5120,16384")
    p.add_argument("--tokens", default="4096,65536")
    p.add_argument("--residual", default="0,1", help="0, 1 or 0,1")
    p.add_argument("--wide", action="store_true", help="every geometry too (tune --wide)")
    p.add_argument("--peers", default=PEERS, help="variant subjects, comma-separated ('' for none)")
    p.add_argument("--top", type=int, default=4, help="launches per shape also timed cold")
    p.add_argument("--workers", type=int, default=12)
    p.add_argument("--budget-ms", type=float, default=10.0)
    p.add_argument("--sm", type=int, default=132, help="SM count for --dry-run (a real run asks the GPU)")
    p.add_argument("--gpu-name", default=None,
                   help="whose tables the launches start from in --dry-run (a real run: the GPU's own; default: "
                        "the default table)")
    p.add_argument("--dry-run", action="store_true", help="print the launch and compile-job counts and stop")
    p.add_argument("--device", default="cuda", help="cuda, or cpu for a smoke run under TRITON_INTERPRET=1")
    p.add_argument("--out", default="fp8-static-search")
    p.add_argument("--table-from", nargs="+", metavar="DIR", help="search folders to make a launch table of")
    p.add_argument("--write", metavar="FILE", help="with --table-from: the table file to write")
    args = p.parse_args(argv)
    if bool(args.table_from) != bool(args.write):
        p.error("--table-from and --write go together")
    args.hidden, args.tokens = _ints(args.hidden), _ints(args.tokens)
    args.residual = tuple(bool(v) for v in _ints(args.residual))
    return args


def launches(h: int, t: int, res: bool, sms: int, wide: bool, gpu: str | None = None) -> list:
    """The plain table's pick on this GPU first, then the static FP8 norm's current pick (its own table, if the
    GPU has one), then the plain search's candidates at this shape (``gpu`` None: the default table)."""
    from rmsnorm_lab.kernels.tables import pick
    from rmsnorm_lab.tune import candidates
    got = candidates(h, t, res, pick(h, t, 2, res, gpu), {}, new=True, wide=wide, sms=sms)
    own = pick(h, t, 2, res, gpu, variant="fp8-static")
    return got if own in got else got[:1] + [own] + got[1:]


def compile_jobs(args, sms: int, gpu: str | None = None) -> list:
    jobs = {}
    for h, t, res in itertools.product(args.hidden, args.tokens, args.residual):
        for c in launches(h, t, res, sms, args.wide, gpu):
            jobs.setdefault((h, res, json.dumps(c.to_dict(compact=True))), None)
    return list(jobs)


def warm(job) -> str | None:
    """Compile one launch (in a worker) by running it on a few rows; None or the error."""
    try:
        import torch

        from rmsnorm_lab.kernels.config import LaunchConfig
        from rmsnorm_lab.kernels.variants import rmsnorm_fp8_static
        h, res, cfg = job
        cfg = LaunchConfig.from_dict(json.loads(cfg))
        x = torch.randn(max(2, cfg.rows), h, device="cuda", dtype=torch.bfloat16)
        w = torch.ones(h, device="cuda", dtype=torch.bfloat16)
        r = torch.randn_like(x) if res else None
        rmsnorm_fp8_static(x, w, torch.tensor([0.01], device="cuda"), r, EPS, config=cfg)
        torch.cuda.synchronize()
        return None
    except Exception as e:  # noqa: BLE001
        return f"{job}: {type(e).__name__}: {e}"[:300]


def best_launches(rows: list[dict]) -> dict:
    """{(hidden, tokens, residual): (config json, score, cold ratio, graph ratio)} from one folder's rows:
    the launch of ours with the smallest max(cold, graph) ratio to the fastest peer in that mode."""
    by_shape: dict = {}
    for r in rows:
        if r["status"] != "ok" or not r["us"]:
            continue
        k = (int(r["hidden"]), int(r["tokens"]), str(r["residual"]) in ("True", "1", "true"))
        d = by_shape.setdefault(k, {"ours": {}, "peer": {}})
        us = float(r["us"])
        if r["subject"] == "ours":
            d["ours"].setdefault(r["config"], {})[r["mode"]] = us
        else:
            d["peer"][r["mode"]] = min(us, d["peer"].get(r["mode"], math.inf))
    out = {}
    for k, d in by_shape.items():
        pc, pg = d["peer"].get("cold"), d["peer"].get("graph")
        if not pc or not pg:
            continue
        scored = [(max(t["cold"] / pc, t["graph"] / pg), cfg, t["cold"] / pc, t["graph"] / pg)
                  for cfg, t in d["ours"].items() if "cold" in t and "graph" in t]
        if scored:
            s, cfg, c, g = min(scored)
            out[k] = (cfg, s, c, g)
    return out


def write_table(folders: list[str], path: str) -> int:
    """The static FP8 norm's launch table from search folders (see the module doc)."""
    from rmsnorm_lab.kernels.tables import dump_table, parse_configs, table_key
    configs, searched, metas = {}, [], []
    for folder in folders:
        with open(os.path.join(folder, "search.csv"), newline="") as f:
            best = best_launches(list(csv.DictReader(f)))
        with open(os.path.join(folder, "meta.json")) as f:
            metas.append(json.load(f))
        for (h, t, res), (cfg, s, c, g) in sorted(best.items()):
            key = table_key(h, t, res)
            configs[key] = json.loads(cfg)
            searched.append(f"{key} {s:.3f} (cold {c:.3f}, graph {g:.3f})")
    parse_configs(configs, path)
    devices = sorted({m["device"] for m in metas})
    if len(devices) != 1:
        raise SystemExit(f"--table-from: folders from different GPUs ({', '.join(devices)})")
    meta = {"device": devices[0], "variant": "fp8-static",
            "sms": metas[0].get("sms"), "triton": sorted({m.get("triton") for m in metas}),
            "torch": sorted({m.get("torch") for m in metas}), "date": max(m.get("date", "") for m in metas),
            "how": [m.get("command") for m in metas],
            "selection": "per searched shape, bf16 in, FP8 out: the launch (of the plain search's candidates, "
                         "tune --wide) with the smallest max(cold / fastest peer cold, graph / fastest peer graph), "
                         "peers timed in the same process (experiments/fp8_static_search.py --table-from)",
            "schema": "configs: {'<hidden>:<tokens bucket>:<residual>': LaunchConfig fields that differ from the "
                      "defaults} (rmsnorm_lab/kernels/config.py), as the plain tables",
            "searched": searched, "configs": configs}
    with open(path, "w") as f:
        f.write(dump_table(meta))
    print(f"{path}: {len(configs)} entries from {', '.join(folders)}")
    return 0


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.table_from:
        return write_table(args.table_from, args.write)
    if args.dry_run:
        total = 0
        for h, t, res in itertools.product(args.hidden, args.tokens, args.residual):
            n = len(launches(h, t, res, args.sm, args.wide, args.gpu_name))
            total += n
            print(f"{h:6} x {t:6}{' +res' if res else '     '}: {n} launches")
        print(f"{total} launches timed, {len(compile_jobs(args, args.sm, args.gpu_name))} compile jobs")
        return 0

    import multiprocessing as mp

    import torch

    from rmsnorm_lab import variants as V
    from rmsnorm_lab.bandwidth import measure_copy_bandwidth
    from rmsnorm_lab.kernels.tables import pick
    from rmsnorm_lab.kernels.variants import rmsnorm_fp8_static
    from rmsnorm_lab.prewarm import worker_init
    from rmsnorm_lab.timing import Runner, time_runner

    os.makedirs(args.out, exist_ok=True)
    dev = args.device
    on_gpu = dev.startswith("cuda")
    import sys

    import triton
    with open(os.path.join(args.out, "meta.json"), "w") as f:
        json.dump({"device": torch.cuda.get_device_name(0) if on_gpu else dev,
                   "sms": torch.cuda.get_device_properties(0).multi_processor_count if on_gpu else None,
                   "torch": torch.__version__, "triton": triton.__version__,
                   "date": time.strftime("%Y-%m-%d"),
                   "command": "python experiments/fp8_static_search.py " + " ".join(sys.argv[1:])}, f, indent=1)
    first = "graph" if on_gpu else "eager"
    sms = torch.cuda.get_device_properties(0).multi_processor_count if on_gpu else args.sm
    gpu = torch.cuda.get_device_name(0) if on_gpu else args.gpu_name      # whose tables the launches start from
    if on_gpu and args.workers:
        jobs = compile_jobs(args, sms, gpu)
        t0 = time.perf_counter()
        with mp.get_context("spawn").Pool(args.workers, initializer=worker_init) as pool:
            errs = [e for e in pool.imap_unordered(warm, jobs, chunksize=1) if e]
        print(f"compiled {len(jobs)} launches in {time.perf_counter() - t0:.0f} s; {len(errs)} failed"
              + (f" ({errs[0]})" if errs else ""), flush=True)
    copy = measure_copy_bandwidth(dev)
    rows_out: list[dict] = []

    def timed(case, inputs, fn, mode, inplace):
        f2, x, w, r = V.timing_args(case, inputs, fn)
        return time_runner(Runner(f2, x, w, r, EPS, inplace), mode, dev, budget_ms=args.budget_ms).median_us

    for h, t, res in itertools.product(args.hidden, args.tokens, args.residual):
        t_shape = time.perf_counter()
        case = V.VariantCase("fp8-static", t, h, "bfloat16", residual=res)
        inputs = V.make_inputs(case, dev, seed=0)
        nbytes = V.bytes_moved(case)
        base = {"hidden": h, "tokens": t, "residual": res}
        table = pick(h, t, 2, res, gpu)         # the plain table's pick on this GPU (``table_pick``)

        def row(subject, config, mode, us, status="ok", error=""):
            pct = round(100 * nbytes / (us * 1e-6) / 1e9 / copy, 1) if us else None
            rows_out.append({**base, "subject": subject, "config": config, "mode": mode, "us": us, "pct_copy": pct,
                             "table_pick": config == json.dumps(table.to_dict(compact=True)), "status": status,
                             "error": error})

        graph, fns = {}, {}
        for cfg in launches(h, t, res, sms, args.wide, gpu):
            key = json.dumps(cfg.to_dict(compact=True))
            # the new residual in place, as the front door's subject and the peers write it
            fn = (lambda x, w, r, scale, eps, c=cfg: rmsnorm_fp8_static(x, w, scale, r, eps, residual_out=r,
                                                                        config=c))
            try:
                got = V.check(case, inputs, V.call(case, fn, V.clone_inputs(inputs), EPS))
                if got.status != "ok":
                    row("ours", key, first, None, "wrong", got.detail[:200])
                    continue
                graph[key], fns[key] = timed(case, inputs, fn, first, res), fn
                row("ours", key, first, round(graph[key], 3))
            except Exception as e:  # noqa: BLE001 - a launch that fails (registers, resources) is a row
                row("ours", key, first, None, "error", f"{type(e).__name__}: {e}"[:200])
        tkey = json.dumps(table.to_dict(compact=True))
        cold = {}
        for key in dict.fromkeys(sorted(graph, key=graph.get)[:args.top] + ([tkey] if tkey in graph else [])):
            cold[key] = timed(case, inputs, fns[key], "cold", res)
            row("ours", key, "cold", round(cold[key], 3))
        peer = {}
        for sub in V.subjects("fp8-static", res, dev, names=[p for p in args.peers.split(",") if p]):
            if not sub.support:
                row(sub.name, "", "", None, "skip", sub.support.reason)
                continue
            try:
                got = V.check(case, inputs, V.call(case, sub.fn, V.clone_inputs(inputs), EPS))
                if got.status != "ok":
                    row(sub.name, "", "", None, "wrong", got.detail[:200])
                    continue
                for mode in (first, "cold"):
                    us = timed(case, inputs, sub.fn, mode, sub.inplace)
                    peer[(sub.name, mode)] = us
                    row(sub.name, "", mode, round(us, 3))
            except Exception as e:  # noqa: BLE001
                row(sub.name, "", "", None, "error", f"{type(e).__name__}: {e}"[:200])
        if cold:
            bc = min(cold, key=cold.get)
            pc = min([v for (n, m), v in peer.items() if m == "cold"] or [math.nan])
            pg = min([v for (n, m), v in peer.items() if m == first] or [math.nan])
            print(f"{h:6} x {t:6}{' +res' if res else '     '}  table {cold.get(tkey, math.nan):8.1f} / "
                  f"{graph.get(tkey, math.nan):8.1f}  best {cold[bc]:8.1f} / {graph[bc]:8.1f} {bc}  peers "
                  f"{pc:8.1f} / {pg:8.1f}  best/peer {cold[bc] / pc:.3f} / {graph[bc] / pg:.3f}  "
                  f"({len(graph)} launches, {time.perf_counter() - t_shape:.0f} s)", flush=True)
        with open(os.path.join(args.out, "search.csv"), "w", newline="") as f:
            wr = csv.DictWriter(f, fieldnames=FIELDS)
            wr.writeheader()
            wr.writerows(rows_out)
        del inputs
        if on_gpu:
            torch.cuda.empty_cache()
    print(f"copy {copy:.0f} GB/s; {torch.cuda.get_device_name(0) if on_gpu else dev}; cold / {first} µs", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
