"""Search our kernel's launch table against the peers on this GPU, in one process.

    python -m rmsnorm_lab tune --out DIR [--hidden-size ...] [--tokens ...] [--residual 0 1] [--base TABLE]
        [--models all|NAME ...]   (instead of --hidden-size/--tokens: the models' tune split, rmsnorm_lab.models)
        [--history CSV ...] [--workers N] [--shapes H:T:R ...] [--no-new] [--wide] [--cap-twins] [--overlay]
    python -m rmsnorm_lab tune --out DIR --base TABLE --repick SEARCH_DIR ...   (no GPU: picks again)
    python -m rmsnorm_lab tune --out DIR --merge SEARCH_DIR SEARCH_DIR ...       (no GPU: joins tables)
    python -m rmsnorm_lab tune --registers [--table FILE] [--keys ...] [--dtype-check] [--out-csv CSV]
                                                                               (no GPU: sm_90 compile)

Search: for each shape (bf16), every peer is timed cold and graph, then our candidate configs: the base
table's pick, the best few of earlier searches (--history CSVs), and new variants (evict-last loads,
two rows per program at 128-1024 tokens, two-pass slices with each flag, the whole row read twice,
persistent grids from 4096 tokens, where the new residual is stored; --wide: every geometry too).
A config's score is ten times how far its worse ratio to the fastest peer (cold, graph) exceeds 1.02,
plus the geometric mean of the two; the best three, the base pick and the fastest peers are timed a
second time and averaged before the pick. Writes DIR/retune.csv (every timing), DIR/peers.csv and
DIR/table.json: the base table with the new picks, with provenance (GPU, versions, date, source hash);
--overlay writes only the searched shapes, marked as an overlay: ``kernels.tables.use_table(path)``
then looks them up first and the GPU's own table for the rest.

--registers compiles each table entry for sm_90a on this machine (Triton's PTX and its ptxas; no GPU)
and prints registers, programs per SM and grid, the lean (v8) and the v7 code side by side; with
--dtype-check each entry in bf16 and fp16 instead, marking where a dtype loses a wave or spills alone
and the register cap that would give it the other's programs per SM.
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .kernels.config import LaunchConfig, as_config, next_pow2

HIDDEN = [2048, 4096, 5120, 6144, 8192, 16384]
TOKENS = [1, 16, 64, 128, 256, 512, 1024, 2048]
EPS = 1e-6
LIMIT = 1.02          # at or below 1.03x the fastest peer in both modes; 0.01 kept for run-to-run variation
SELECTION = ("searched shapes (see searched): min over candidates of 10 x max(cold ratio, graph ratio, 1.02) + their "
             "geometric mean (ratios to the fastest peer, same process); the best three, the earlier pick and the "
             "fastest peers timed twice and averaged; other shapes: the earlier table")
TABLE_NAME = "table.json"
DTYPES = ("bf16", "fp16")     # the dtypes that read one table entry (searched in bf16)


# ---------------------------------------------------------------- candidates


def config_of_row(r: dict) -> LaunchConfig:
    """A CSV row's config: a ``config`` column (named fields, JSON) or the old positional columns."""
    if r.get("config"):
        return LaunchConfig.from_dict(json.loads(r["config"]))
    return LaunchConfig.from_legacy((r["rows"], r["warps"], r["per_sm"], r.get("flags") or 0, r.get("chunk") or 0,
                                     r.get("maxnreg") or 0))


def history_configs(paths) -> dict:
    """{(hidden, tokens, residual): [(LaunchConfig, cold_us, graph_us), ...]} from earlier search CSVs."""
    out: dict = {}
    for p in paths or []:
        with open(p) as f:
            for r in csv.DictReader(f):
                if r.get("error") or not r.get("cold_us"):
                    continue
                key = (int(r["hidden"]), int(r["tokens"]), r["residual"] == "True")
                out.setdefault(key, []).append((config_of_row(r), float(r["cold_us"]), float(r["graph_us"])))
    return out


def geometries(hidden: int, tokens: int, sms: int) -> list:
    """Every geometry worth a try (--wide): rows per program, warps (8-64 elements a thread), persistent grids
    where there are 8+ blocks per SM."""
    b = next_pow2(hidden)
    rows_opts = [1, 2, 4, 8, 16] if b <= 512 else [1, 2, 4] if b <= 2048 else [1, 2] if b <= 8192 else [1]
    out = []
    for rows in rows_opts:
        if rows > 1 and tokens // rows < sms // 2:
            continue
        for warps in (1, 2, 4, 8, 16, 32):
            if 8 <= b * rows / (32 * warps) <= 64:
                out.append(LaunchConfig(rows=rows, warps=warps))
                if tokens // rows >= 8 * sms:
                    out += [LaunchConfig(rows=rows, warps=warps, per_sm=n) for n in (4, 8)]
    return out


def _variants(h: int, t: int, base: LaunchConfig) -> list:
    """New configs around the base pick (see the module's docstring)."""
    b = next_pow2(h)
    out = []
    if not base.reread:                     # evict-last loads
        out.append(base.replace(evict_loads=False, evict_last=True, maxnreg=0))
    if 128 <= t <= 1024 and b <= 8192:      # FlashInfer's geometry: two rows per program, few threads a row
        for w in (2, 4, 8):
            if 8 <= 2 * b / (32 * w) <= 64:
                out += [LaunchConfig(rows=2, warps=w), LaunchConfig(rows=2, warps=w, evict_stores=True)]
    big = t >= 4096
    if t >= 16:                             # two passes over column slices, each flag
        for ch in (1024, 2048, 4096):
            if ch >= b or ch < b // 8:
                continue
            if big:
                out += [LaunchConfig(warps=8, chunk=ch), LaunchConfig(warps=8, chunk=ch, evict_stores=True)]
            else:
                out += [LaunchConfig(warps=8, chunk=ch, **fl) for fl in
                        ({}, {"evict_loads": True}, {"evict_stores": True}, {"pdl_early": True})]
                out += [LaunchConfig(warps=4, chunk=ch), LaunchConfig(warps=16, chunk=ch)]
    for w in (4, 8, 16, 32):                # the whole row read twice (pass 2 from L2), 1-8 vectors a thread
        if 8 <= b / (32 * w) <= 64:
            out += [LaunchConfig(warps=w, reread=True), LaunchConfig(warps=w, reread=True, evict_stores=True)]
    if big and not base.per_sm:             # persistent grids: fewer programs, the weight loaded once each
        out += [base.replace(per_sm=n, maxnreg=0) for n in (2, 4, 8)]
    return out


def candidates(h: int, t: int, res: bool, base, hist: dict, topk: int = 3, new: bool = True,
               wide: bool = False, sms: int = 132) -> list:
    """LaunchConfigs to time at one shape: the base pick first, then history's best, then new variants
    (new=False: only the base pick and history's best; wide: every geometry too)."""
    base = as_config(base)
    b = next_pow2(h)
    out = [base]
    seen = hist.get((h, t, res), [])
    if t >= 4096:
        topk = min(topk, 2)
    if seen:
        bc = min(c for _, c, _ in seen)
        bg = min(g for _, _, g in seen)
        for key in (lambda e: e[1], lambda e: e[2], lambda e: max(e[1] / bc, e[2] / bg)):
            out += [cfg for cfg, _, _ in sorted(seen, key=key)[:topk]]
    if not new:
        return list(dict.fromkeys(out))
    out += _variants(h, t, base)
    if wide:
        out += geometries(h, t, sms)
    uniq = list(dict.fromkeys(c.replace(chunk=0) if c.chunk >= b else c for c in out))  # a row-wide slice: one pass
    if res and t >= 128:                    # where the new residual is stored: pass 1 (two passes), late (one)
        for c in list(uniq):
            if not c.two_pass and t > 2048:  # late stores lost in both modes at 128-2048 tokens: two passes only
                continue
            v = c.replace(sum_first=True) if c.two_pass else c.replace(late_ro=True)
            if v not in uniq:
                uniq.append(v)
    return uniq


def cap_twin(t: int, cfg: LaunchConfig, regs: int, smem: int, sms: int):
    """cfg with a register cap that fits one more program per SM, where that can matter: the grid has more
    programs than fit at once and the cap is below what the compiler chose; else None."""
    from .kernels.occupancy import grid_programs, occupancy, regs_cap_for
    cfg = as_config(cfg)
    if cfg.maxnreg:
        return None
    programs = grid_programs(t, cfg.rows, cfg.per_sm, sms)
    occ = occupancy(regs, cfg.warps, smem)
    if occ >= min(32, 64 // cfg.warps) or programs <= occ * sms:
        return None
    cap = regs_cap_for(occ + 1, cfg.warps)
    if cap < 24 or cap >= regs or occupancy(cap, cfg.warps, smem) <= occ:
        return None
    return cfg.replace(maxnreg=cap)


# ---------------------------------------------------------------- scoring and picking


def score(c: float, g: float, pc: float, pg: float) -> float:
    """Lower is better: mostly how far the worse of the two ratios (cold, graph) to the fastest peer exceeds
    LIMIT, then their geometric mean (a config within LIMIT in both modes beats one that trades a cold miss
    for a graph win)."""
    rc, rg = c / pc, g / pg
    return 10 * max(rc, rg, LIMIT) + math.sqrt(rc * rg)


def _avg(runs):
    return (sum(c for c, _ in runs) / len(runs), sum(g for _, g in runs) / len(runs))


def repick(dirs) -> dict:
    """Picks made again with the current score from earlier searches' timings (DIR/retune.csv and
    DIR/peers.csv of each dir, every timing of a config or peer averaged, as the search does):
    {key: (LaunchConfig, cold ratio, graph ratio)} for the shapes searched there."""
    from .kernels.tables import table_key
    mine: dict = {}
    peer: dict = {}
    for d in dirs:
        with open(Path(d) / "retune.csv") as f:
            for r in csv.DictReader(f):
                if r["who"] != "ours" or r.get("error") or not r.get("cold_us"):
                    continue
                shape = (int(r["hidden"]), int(r["tokens"]), r["residual"] == "True")
                mine.setdefault(shape, {}).setdefault(config_of_row(r), []).append(
                    (float(r["cold_us"]), float(r["graph_us"])))
        with open(Path(d) / "peers.csv") as f:
            for r in csv.DictReader(f):
                if r.get("error") or not r.get("cold_us"):
                    continue
                shape = (int(r["hidden"]), int(r["tokens"]), r["residual"] == "True")
                peer.setdefault(shape, {}).setdefault(r["impl"], []).append((float(r["cold_us"]),
                                                                             float(r["graph_us"])))
    out = {}
    for shape, cfgs in mine.items():
        avg = [_avg(v) for v in peer.get(shape, {}).values()] or [_avg(v) for v in cfgs.values()]
        pc, pg = min(c for c, _ in avg), min(g for _, g in avg)
        pick = min(cfgs, key=lambda c: score(*_avg(cfgs[c]), pc, pg))
        c, g = _avg(cfgs[pick])
        out[table_key(*shape)] = (pick, c / pc, g / pg)
    return out


def provenance(device: str, argv) -> dict:
    """Where a table comes from: GPU, versions, date, the package's source hash, the command."""
    from .envinfo import source_hash
    from .impls.base import package_version as ver
    return {"device": device, "triton": ver("triton"), "torch": ver("torch"),
            "date": time.strftime("%Y-%m-%d", time.gmtime()), "source_sha256": source_hash(),
            "how": "python -m rmsnorm_lab tune " + " ".join(argv) + "; bf16 timings; fp16 uses the same table"}


def write_table(out: Path, meta: dict) -> Path:
    from .kernels.tables import dump_table
    path = Path(out) / TABLE_NAME
    path.write_text(dump_table(meta))
    return path


def _read_table_meta(path) -> dict:
    """A table file as {provenance..., "configs": {key: LaunchConfig}} (a missing file: empty)."""
    from .kernels.tables import parse_configs
    try:
        meta = json.loads(Path(path).read_text())
    except FileNotFoundError:
        return {"configs": {}}
    meta["configs"] = parse_configs(meta.get("configs", {}), f"table {path}")
    return meta


# ---------------------------------------------------------------- the GPU search


def _case(h, t, res, dtype="bfloat16"):
    from .cases import Case, tokens_to_batch_seq
    b, s = tokens_to_batch_seq(t)          # the shapes the sweep uses (torch.compile's cache hits)
    return Case(b, s, h, dtype, res)


def time_modes(fn, x, w, r, inplace, modes, dev, budget_ms) -> dict:
    from .timing import Runner, time_runner
    out = {}
    for m in modes:
        run = Runner(fn, x, w, r, EPS, inplace)
        out[m] = time_runner(run, m, dev, budget_ms=budget_ms).median_us
    out.setdefault("graph", out["cold"])
    return out


def resources(h: int, res: bool, cfg, dtype: str = "bfloat16"):
    """(registers a thread, spilled bytes, static shared memory) of our kernel compiled for cfg (CUDA)."""
    from .impls.triton_lab import compile_config
    k = compile_config(h, res, dtype, cfg)
    md = getattr(k, "metadata", None)
    return int(k.n_regs), int(getattr(k, "n_spills", 0) or 0), int(getattr(md, "shared", 0) or 0)


def fast_path_check(dev: str) -> bool:
    """The cached launches (compiled kernel; plan with raw addresses) give the bits the checked launch gives."""
    import torch

    from .kernels.launch import fast
    from .kernels.rmsnorm import triton_rmsnorm
    same = True
    for h, t, res in ((4096, 16, False), (4096, 16, True), (8192, 300, True)):
        x = torch.randn(t, h, device=dev, dtype=torch.bfloat16)
        w = torch.randn(h, device=dev, dtype=torch.bfloat16)
        r = torch.randn_like(x) if res else None
        want = triton_rmsnorm(x, w, r)
        for _ in range(3):
            got = fast(x.clone(), w, None if r is None else r.clone())
            pairs = zip(got, want) if res else [(got, want)]
            same &= all(torch.equal(a, b) for a, b in pairs)
    return same


class _Search:
    """One search run: peers and candidates timed per shape, CSVs written as it goes."""

    def __init__(self, args, argv):
        import torch

        from .bandwidth import measure_copy_bandwidth
        self.args, self.argv = args, argv
        self.dev = args.device
        self.on_gpu = self.dev.startswith("cuda")
        self.modes = ("cold", "graph") if self.on_gpu else ("cold",)
        self.gpu = torch.cuda.get_device_name(0) if self.on_gpu else "cpu (smoke run)"
        self.sms = torch.cuda.get_device_properties(0).multi_processor_count if self.on_gpu else 132
        self.copy = measure_copy_bandwidth(self.dev) if self.on_gpu else 0.0
        self.res_of: dict = {}

    def base_table(self):
        from .kernels.tables import table_path
        self.args.base = self.args.base or str(table_path(self.gpu if self.on_gpu else None))
        self.base_meta = _read_table_meta(self.args.base)
        return self.base_meta["configs"]

    def res_for(self, h, res, c):
        if (h, res, c) not in self.res_of:
            try:
                self.res_of[(h, res, c)] = resources(h, res, c)
            except Exception as e:  # noqa: BLE001 - timed (and reported) as an error row later
                print(f"  resources {h} res={int(res)} {c}: {type(e).__name__}: {e}"[:200], flush=True)
                self.res_of[(h, res, c)] = None
        return self.res_of[(h, res, c)]

    def prewarm(self, shapes, cands, peers):
        from .impls import by_role
        from .prewarm import jobs_for, prewarm
        if not (self.on_gpu and self.args.workers):
            return
        jobs = jobs_for([_case(*s) for s in shapes], peers)          # torch.compile's graphs, if a peer
        ours = by_role("ours")[0]   # our kernel: its prewarm jobs are (name, hidden, residual, dtype, config)
        jobs += sorted({(ours, h, res, "bfloat16", c) for (h, t, res), cs in cands.items() for c in cs})
        pw = prewarm(jobs, self.args.workers)
        print(f"warmed {pw['jobs']} kernels / graphs with {self.args.workers} workers in {pw['seconds']:.0f}s; "
              f"{pw['failed']} failed {pw['first_error']}", flush=True)

    def add_cap_twins(self, cands):
        """Each candidate's twin with a register cap that fits one more program per SM (if it does not spill)."""
        from .impls import by_role
        from .prewarm import prewarm
        twins: dict = {}
        for (h, t, res), cs in cands.items():
            for c in cs:
                got = self.res_for(h, res, c)
                tw = cap_twin(t, c, got[0], got[2], self.sms) if got else None
                if tw is not None and tw not in cs:
                    twins.setdefault((h, t, res), []).append(tw)
        ours = by_role("ours")[0]
        jobs = sorted({(ours, h, res, "bfloat16", c) for (h, t, res), cs in twins.items() for c in cs})
        pw = prewarm(jobs, self.args.workers) if self.args.workers else {"seconds": 0, "failed": 0, "first_error": ""}
        n_tw = 0
        for s, tws in twins.items():
            for tw in dict.fromkeys(tws):
                got = self.res_for(s[0], s[2], tw)
                if got and got[1] == 0:          # a cap that spills is not a candidate
                    cands[s].append(tw)
                    n_tw += 1
        print(f"register-cap twins: {n_tw} at {len(twins)} shapes (compiled in {pw['seconds']:.0f}s; "
              f"{pw['failed']} failed {pw['first_error']})", flush=True)

    def search_shape(self, h, t, res, cands, peers, base, wr, wp):
        """Time the peers and our candidates at one shape (two rounds); returns (pick, timings, peer best)."""
        from .cases import make_inputs
        from .impls import get_impl
        from .kernels.launch import config_fn
        from .kernels.occupancy import occupancy
        from .reference import TOLERANCE, compare
        x, w, r = make_inputs(_case(h, t, res), self.dev, 2)
        pt: dict = {}                        # peer -> [{"cold": us, "graph": us}, ...] (one per round)
        mine: dict = {}

        def time_peer(p, rnd):
            impl = get_impl(p)
            row = {"hidden": h, "tokens": t, "residual": res, "impl": p, "round": rnd}
            s = impl.supports("bfloat16", self.dev)
            if not s:
                row["error"] = s.reason
            else:
                try:
                    fn = impl.load()
                    warm = getattr(fn, "warm", None)
                    warm(x, w, r, EPS) if warm else fn(x.clone(), w, None if r is None else r.clone(), EPS)
                    tm = time_modes(fn, x, w, r, impl.inplace_residual, self.modes, self.dev, self.args.budget_ms)
                    pt.setdefault(p, []).append(tm)
                    row.update(cold_us=round(tm["cold"], 3), graph_us=round(tm["graph"], 3))
                except Exception as e:  # noqa: BLE001
                    row["error"] = f"{type(e).__name__}: {e}"[:200]
            wp.writerow(row)

        def peer_best():
            """The fastest peer's time per mode, each peer's rounds averaged (no peers: our own best)."""
            avg = {p: {m: sum(v[m] for v in runs) / len(runs) for m in ("cold", "graph")} for p, runs in pt.items()}
            pc = min([v["cold"] for v in avg.values()] or [c for runs in mine.values() for c, _ in runs])
            pg = min([v["graph"] for v in avg.values()] or [g for runs in mine.values() for _, g in runs])
            return pc, pg, avg

        for p in peers:
            time_peer(p, 1)
        pc = pg = None
        for rnd, todo in ((1, cands), (2, None)):
            if todo is None:                 # round 2: the best three and the base pick, again
                if not mine:
                    break
                ranked = sorted(mine, key=lambda c: score(*_avg(mine[c]), pc, pg))
                todo = [c for c in dict.fromkeys(ranked[:3] + [base]) if c in mine]
                _, _, avg = peer_best()      # and the fastest peers again (not one lucky or unlucky peer run)
                for p in dict.fromkeys([min(avg, key=lambda q: avg[q][m]) for m in ("cold", "graph")] if avg else []):
                    time_peer(p, 2)
            for cfg in todo:
                row = {"hidden": h, "tokens": t, "residual": res, "who": "ours", "round": rnd,
                       "config": json.dumps(cfg.to_dict(compact=True))}
                got = self.res_of.get((h, res, cfg))
                if got:
                    row.update(regs=got[0], occupancy=occupancy(got[0], cfg.warps, got[2]))
                try:
                    fn = config_fn(cfg)
                    if rnd == 1:                 # both outputs against float64, once per config
                        out = fn(x.clone(), w, None if r is None else r.clone(), EPS)
                        errs = compare(x, w, r, EPS, *(out if res else (out,)))[:2 if res else 1]
                        if not all(e <= TOLERANCE["bfloat16"] for e in errs):      # NaN fails too
                            raise RuntimeError(f"wrong: relative errors {errs}")
                    tm = time_modes(fn, x, w, r, True, self.modes, self.dev, self.args.budget_ms)
                    mine.setdefault(cfg, []).append((tm["cold"], tm["graph"]))
                    row.update(cold_us=round(tm["cold"], 3), graph_us=round(tm["graph"], 3))
                except Exception as e:  # noqa: BLE001
                    row["error"] = f"{type(e).__name__}: {e}"[:200]
                wr.writerow(row)
            if mine:
                pc, pg, _ = peer_best()
        if not mine:
            return None, mine, (pc, pg)
        return min(mine, key=lambda c: score(*_avg(mine[c]), pc, pg)), mine, (pc, pg)

    def run(self, out: Path) -> Path:
        from .kernels.tables import pick as table_pick, table_key
        args = self.args
        print(f"{self.gpu}: copy {self.copy:.0f} GB/s", flush=True)
        if self.on_gpu:
            print(f"fast launches give the checked launch's bits: {fast_path_check(self.dev)}", flush=True)
        base_table = self.base_table()
        hist = history_configs(args.history)
        if args.peers == "peers":
            from .impls import by_role
            peers = by_role("peer")
        else:
            peers = [p for p in args.peers.split(",") if p]
        shapes = [(h, t, bool(res)) for res in args.residual for h in args.hidden for t in args.tokens]
        if args.shapes:
            shapes = [(int(a), int(b), bool(int(c))) for a, b, c in (k.split(":") for k in args.shapes)]

        def base_of(h, t, res):         # what the package would launch: the table's key, nearest entry or heuristic
            return table_pick(h, t, 2, res, table=base_table)

        cands = {s: candidates(*s, base_of(*s), hist, new=not args.no_new, wide=args.wide, sms=self.sms)
                 for s in shapes}
        self.prewarm(shapes, cands, peers)
        if args.cap_twins and self.on_gpu:
            self.add_cap_twins(cands)
        table = dict(base_table)
        # a base tuned on another GPU lends its configs (the start, and the shapes not searched), not its history
        meta0 = {k: v for k, v in self.base_meta.items() if k != "configs"}
        inherited = meta0 if meta0.get("device") in (None, self.gpu) else {
            "base_table": f"{args.base} (tuned on {meta0['device']}; shapes not in searched keep its picks)"}
        fcols = ["hidden", "tokens", "residual", "who", "config", "regs", "occupancy", "round", "cold_us", "graph_us",
                 "error"]
        t0, changed, searched = time.time(), 0, set()
        with open(out / "retune.csv", "w", newline="") as f_rows, open(out / "peers.csv", "w", newline="") as f_peer:
            wr = csv.DictWriter(f_rows, fieldnames=fcols)
            wr.writeheader()
            wp = csv.DictWriter(f_peer, fieldnames=["hidden", "tokens", "residual", "impl", "round", "cold_us",
                                                    "graph_us", "error"])
            wp.writeheader()
            for h, t, res in shapes:
                b = base_of(h, t, res)
                pick, mine, (pc, pg) = self.search_shape(h, t, res, cands[(h, t, res)], peers, b, wr, wp)
                f_rows.flush()
                f_peer.flush()
                if pick is None:
                    continue
                key = table_key(h, t, res)
                table[key] = pick
                searched.add(key)
                changed += pick != b
                pcold, pgraph = _avg(mine[pick])
                bl = _avg(mine[b]) if b in mine else (float("nan"), float("nan"))
                print(f"{h:6d} x {t:5d} res={int(res)}: pick {pick} cold {pcold:.2f} ({pcold / pc:.3f}) graph "
                      f"{pgraph:.2f} ({pgraph / pg:.3f}) | base {b} {bl[0] / pc:.3f}/{bl[1] / pg:.3f} | peers best "
                      f"{pc:.2f}/{pg:.2f} | {len(cands[(h, t, res)])} cfgs [{time.time() - t0:.0f}s]", flush=True)
                self.write(out, inherited, table, searched)
        print(f"retune done in {time.time() - t0:.0f}s: {changed} of {len(shapes)} picks changed; "
              f"table -> {out / TABLE_NAME}", flush=True)
        return out / TABLE_NAME

    def write(self, out, inherited, table, searched):
        own = {**provenance(self.gpu, self.argv), "sms": self.sms, "copy_gbps": round(self.copy, 1),
               "selection": SELECTION}
        meta = {**inherited, **own}
        if self.args.overlay:         # its own provenance only: the base table's history is not the overlay's
            meta = {**own, **({"schema": inherited["schema"]} if "schema" in inherited else {})}
            meta.update(overlay=True, searched=sorted(searched), configs={k: table[k] for k in sorted(searched)})
        else:
            meta.update(searched=sorted(searched | set(inherited.get("searched", []))), configs=table)
        return write_table(out, meta)


# ---------------------------------------------------------------- no-GPU modes: repick, merge


def repick_main(args, argv, out: Path) -> Path:
    from .kernels.tables import DEFAULT_TABLE
    meta = _read_table_meta(args.base or DEFAULT_TABLE)
    table = dict(meta["configs"])
    changed = 0
    for key, (pick, rc, rg) in sorted(repick(args.repick).items()):
        old = table.get(key)
        changed += old != pick
        print(f"{key:14s} {'changed' if old != pick else 'kept   '} {old} -> {pick} cold {rc:.3f} graph {rg:.3f}",
              flush=True)
        table[key] = pick
    meta.update(selection=SELECTION, configs=table,
                repicked=f"python -m rmsnorm_lab tune {' '.join(argv)}: picks of the shapes searched in "
                         f"{', '.join(args.repick)} made again from their timings with the score of the day")
    path = write_table(out, meta)
    print(f"repick: {changed} picks changed; table -> {path}", flush=True)
    return path


def merge_main(args, argv, out: Path) -> Path:
    metas = [_read_table_meta(Path(d) / TABLE_NAME) for d in args.merge]
    devices = {m.get("device") for m in metas}
    if len(devices) != 1:
        raise SystemExit(f"tune --merge: the tables were tuned on different devices: {sorted(map(str, devices))}")
    meta = dict(metas[0])
    configs, searched = dict(meta["configs"]), set(meta.get("searched", []))
    for m in metas[1:]:
        for key in m.get("searched", []):
            configs[key] = m["configs"][key]
        searched |= set(m.get("searched", []))
    meta.update(configs=configs, searched=sorted(searched), how=" + ".join(m.get("how", "?") for m in metas),
                merged=f"python -m rmsnorm_lab tune {' '.join(argv)}")
    path = write_table(out, meta)
    print(f"merged {len(args.merge)} tables of {meta.get('device')}: {len(searched)} shapes searched; "
          f"table -> {path}", flush=True)
    return path


# ---------------------------------------------------------------- sm_90 registers (no GPU)


def compile_sm90(hidden: int, tokens: int, residual: bool, cfg, dtype: str = "bf16") -> tuple:
    """(registers, shared memory bytes, spill bytes) of our kernel for one config, compiled for sm_90a with
    PDL on (as on an H100 / H200); cfg.lean picks the code path, cfg.maxnreg is passed to ptxas."""
    from triton._C.libtriton import ir
    from triton.backends.compiler import GPUTarget
    from triton.backends.nvidia.compiler import CUDABackend, get_ptxas
    from triton.compiler import ASTSource

    from .kernels._rmsnorm_fwd import rmsnorm_fwd_kernel as kernel
    from .kernels.launch import kernel_constexprs

    cfg = as_config(cfg)
    names = list(kernel.arg_names)
    const = dict(zip(names[11:], kernel_constexprs(hidden, tokens, cfg, residual, hidden, cfg.pdl)))
    sig = {n: ("constexpr" if n in const else "*" + dtype if n in ("X", "W", "Y", "R", "RO")
               else "fp32" if n == "eps" else "i32") for n in names}
    src = ASTSource(kernel, sig, constexprs={(names.index(k),): v for k, v in const.items()},
                    attrs={(i,): [["tt.divisibility", 16]] for i in range(9)})   # 16-byte aligned pointers, strides
    target = GPUTarget("cuda", 90, 32)
    backend = CUDABackend(target)
    opts = {"num_warps": cfg.warps, "launch_pdl": cfg.pdl, "enable_fp_fusion": True}
    if cfg.maxnreg:
        opts["maxnreg"] = cfg.maxnreg
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
        cmd = [get_ptxas(target.arch).path, "-arch=sm_90a", "-v", str(ptx), "-o", str(Path(d) / "k.cubin")]
        proc = subprocess.run(cmd, capture_output=True, text=True)
    log = proc.stdout + proc.stderr
    regs = re.search(r"Used (\d+) registers", log)
    if proc.returncode or not regs:
        raise RuntimeError(f"ptxas failed for {hidden}:{tokens}:{int(residual)} {cfg}: {log[-500:]}")
    smem = re.search(r"(\d+) bytes smem", log)
    spill = re.search(r"(\d+) bytes spill stores", log)
    return int(regs.group(1)), int(smem.group(1)) if smem else 0, int(spill.group(1)) if spill else 0


def registers_row(key: str, cfg, sms: int = 132) -> dict:
    """One table entry compiled (bf16) with the lean (v8) code and the v7 code: registers, programs per SM,
    and whether the lean code fits fewer programs per SM while the grid has more programs than fit at once."""
    from .kernels.occupancy import grid_programs, occupancy
    h, t, r = map(int, key.split(":"))
    cfg = as_config(cfg)
    got = {}
    for name, lean in (("lean", True), ("v7", False)):
        regs, smem, spill = compile_sm90(h, t, bool(r), cfg.replace(lean=lean))
        got[name] = (regs, occupancy(regs, cfg.warps, smem), spill)
    programs = grid_programs(t, cfg.rows, cfg.per_sm, sms)
    lower = got["lean"][1] < got["v7"][1] and programs > got["lean"][1] * sms
    return {"key": key, "config": json.dumps(cfg.to_dict(compact=True)), "programs": programs,
            "lean_regs": got["lean"][0], "lean_per_sm": got["lean"][1], "lean_spill": got["lean"][2],
            "v7_regs": got["v7"][0], "v7_per_sm": got["v7"][1], "lower_occupancy": lower}


def dtype_check(key: str, cfg, sms: int = 132) -> dict:
    """One table entry compiled (lean) in each of DTYPES: registers, programs per SM, spills, and whether a
    dtype loses: it fits fewer programs per SM than another while the grid has more programs than fit at
    once for it, or it spills where another does not. ``cap`` is then the register cap that would fit the
    better dtype's programs per SM (0 if none would, or nothing is lost)."""
    from .kernels.occupancy import grid_programs, occupancy, regs_cap_for
    h, t, r = map(int, key.split(":"))
    cfg = as_config(cfg)
    programs = grid_programs(t, cfg.rows, cfg.per_sm, sms)
    row = {"key": key, "config": json.dumps(cfg.to_dict(compact=True)), "programs": programs}
    per_sm, spills = {}, {}
    for dt in DTYPES:
        regs, smem, spill = compile_sm90(h, t, bool(r), cfg, dt)
        per_sm[dt], spills[dt] = occupancy(regs, cfg.warps, smem), spill
        row.update({f"{dt}_regs": regs, f"{dt}_per_sm": per_sm[dt], f"{dt}_spill": spill})
    best = max(per_sm.values())
    losers = [dt for dt in DTYPES if (per_sm[dt] < best and programs > per_sm[dt] * sms)
              or (spills[dt] and not all(spills.values()))]
    row["loses"] = " ".join(losers)
    cap = regs_cap_for(best, cfg.warps) if any(per_sm[dt] < best for dt in losers) else 0
    row["cap"] = cap if cap >= 24 and not (cfg.maxnreg and cfg.maxnreg <= cap) else 0
    return row


def registers_main(args) -> int:
    from .kernels.tables import DEFAULT_TABLE
    from .device import interpreter_on
    if interpreter_on():
        print("tune --registers: unset TRITON_INTERPRET (it compiles the kernel, it does not run it)", file=sys.stderr)
        return 2
    table = _read_table_meta(args.table or DEFAULT_TABLE)["configs"]
    rows = []
    for key in args.keys or list(table):
        if args.dtype_check:
            row = dtype_check(key, table[key], args.sms)
            regs = " | ".join(f"{dt} {row[f'{dt}_regs']:3d} regs, {row[f'{dt}_per_sm']:2d} per SM, spill "
                              f"{row[f'{dt}_spill']}" for dt in DTYPES)
            note = f"  <- {row['loses']} loses" + (f"; cap {row['cap']} would fit as many" if row["cap"] else "")
            print(f"{key:15s} {row['config']:40s} {regs} | {row['programs']} programs"
                  f"{note if row['loses'] else ''}", flush=True)
        else:
            row = registers_row(key, table[key], args.sms)
            print(f"{key:15s} {row['config']:40s} lean {row['lean_regs']:3d} regs, {row['lean_per_sm']:2d} per SM | "
                  f"v7 {row['v7_regs']:3d} regs, {row['v7_per_sm']:2d} per SM | {row['programs']} programs"
                  f"{'  <- lean fits fewer and the grid is larger than one wave' if row['lower_occupancy'] else ''}",
                  flush=True)
        rows.append(row)
    if args.dtype_check:
        lost = [r["key"] for r in rows if r["loses"]]
        print(f"{len(lost)} of {len(rows)} entries where a dtype loses: {' '.join(lost) or 'none'}", flush=True)
    if args.out_csv and rows:
        with open(args.out_csv, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)
    return 0


# ---------------------------------------------------------------- the command line


def parser() -> argparse.ArgumentParser:
    from .validate import OneLineParser
    ap = OneLineParser(prog="python -m rmsnorm_lab tune", description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", help="folder for table.json, retune.csv, peers.csv")
    ap.add_argument("--hidden", "--hidden-size", dest="hidden", type=int, nargs="+", default=HIDDEN)
    ap.add_argument("--tokens", type=int, nargs="+", default=TOKENS)
    ap.add_argument("--models", nargs="+", default=None, metavar="MODEL",
                    help="instead of --hidden/--tokens: these models' hidden sizes ('all' or names; "
                         "`python -m rmsnorm_lab list --models`) x the token counts of their tune split "
                         "(the validate split is never searched)")
    ap.add_argument("--residual", type=int, nargs="+", default=[0, 1], choices=[0, 1])
    ap.add_argument("--base", default=None, help="the table to start from (default: the one this GPU reads)")
    ap.add_argument("--history", nargs="*", default=[], help="earlier retune.csv files: their best configs are tried")
    ap.add_argument("--peers", default="peers",
                    help="comma-separated registry names, 'peers' (every implementation whose role is peer) or '' (none)")
    ap.add_argument("--budget-ms", type=float, default=5.0)
    ap.add_argument("--workers", type=int, default=12, help="compile / warm-up processes (0: none)")
    ap.add_argument("--device", default="cuda", help="cpu: a smoke run under TRITON_INTERPRET=1 (cold only)")
    ap.add_argument("--shapes", nargs="*", default=[], help="HIDDEN:TOKENS:RES keys (instead of the grid)")
    ap.add_argument("--no-new", action="store_true", help="only the base pick and history's best (no new variants)")
    ap.add_argument("--wide", action="store_true", help="every geometry too (shapes far from the table)")
    ap.add_argument("--cap-twins", action="store_true",
                    help="add each candidate's twin with a register cap that fits one more program per SM (CUDA)")
    ap.add_argument("--overlay", action="store_true",
                    help="write only the searched shapes, as an overlay (kernels.tables.use_table(path) uses it)")
    ap.add_argument("--install", action="store_true",
                    help="with --overlay: put the overlay in the user's tables folder for this GPU, which every "
                         "later run on it reads (kernels.tables.user_dir(); table_info and env.json say so)")
    ap.add_argument("--repick", nargs="*", default=[],
                    help="no timing: pick again with the current score from these earlier --out dirs")
    ap.add_argument("--merge", nargs="*", default=[],
                    help="no timing: join the tables of --out dirs searched apart: the first one's table, then each "
                         "later one's searched shapes")
    ap.add_argument("--registers", action="store_true", help="no GPU: compile each table entry for sm_90a")
    ap.add_argument("--table", default=None, help="--registers: the table (default: tables/default.json)")
    ap.add_argument("--keys", nargs="*", default=[], help="--registers: HIDDEN:TOKENS_BUCKET:RES entries (default: all)")
    ap.add_argument("--sms", type=int, default=132, help="--registers: SMs of the GPU the grid is sized for")
    ap.add_argument("--dtype-check", action="store_true",
                    help="--registers: each entry in bf16 and fp16 (lean); mark where a dtype loses a wave or spills")
    ap.add_argument("--out-csv", default=None, help="--registers: a CSV of every entry")
    return ap


def use_models(ap, args):
    """With --models: the models' hidden sizes and their tune split's token counts replace --hidden/--tokens."""
    if args.models:
        from .models import check_models, shapes
        if args.hidden is not HIDDEN or args.tokens is not TOKENS:
            ap.error("--models: the models give the hidden sizes and the tune split the token counts; "
                     "drop --hidden/--tokens")
        args.hidden, args.tokens = shapes(check_models(args.models, "--models"), "tune")
    return args


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    ap = parser()
    args = use_models(ap, ap.parse_args(argv))
    if args.registers:
        return registers_main(args)
    if not args.out:
        ap.error("--out is required (except with --registers)")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.repick:
        repick_main(args, argv, out)
        return 0
    if args.merge:
        merge_main(args, argv, out)
        return 0
    if args.install and not args.overlay:
        ap.error("--install: only with --overlay (an overlay goes over the GPU's own table)")
    if args.install and not str(args.device).startswith("cuda"):
        ap.error("--install: only for a table searched on a GPU (--device cuda)")
    search = _Search(args, argv)
    path = search.run(out)
    if args.install:
        from .kernels.tables import install_overlay
        print(f"installed: {install_overlay(path, search.gpu)} (read by every run on this GPU)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
