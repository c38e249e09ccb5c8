"""Tables and readings the notebooks show: computed here, from results, never typed by hand.

- correctness: ``error_table``, ``support_reasons``
- one run: ``fastest_per_shape``, ``written_reading``
- several runs: ``discover_runs`` (optionally only the runs like a given one), ``compare_runs``,
  ``comparison_reading``
- target runs (our kernel against the fastest peer per shape): ``target_ratios``, ``combine_ratios``,
  ``summarize_targets``

No implementation is named here: which one is ours, which is the baseline and which are peers comes
from the registry (``Impl.role``, ``impls.by_role``). Everything takes and returns pandas DataFrames
(pandas is imported lazily).
"""
from __future__ import annotations

import json
import math
from pathlib import Path

SHAPE = ["dtype", "residual", "hidden", "batch", "seq", "tokens"]
# a point is the same point in two runs when these agree (gpu_name is what differs between GPUs)
MATCH = ["impl", "dtype", "hidden", "batch", "seq", "tokens", "residual", "mode"]


# ---------------------------------------------------------------- roles (from the registry)
def by_role(role: str) -> list[str]:
    """Registry names with this role: 'ours', 'baseline' or 'peer'."""
    from .impls import by_role as _by_role
    return list(_by_role(role))


def role_of(name: str) -> str:
    """The registry's role of an implementation; a name the registry does not know (an old run's) is a peer."""
    from .impls import get_impl
    try:
        return get_impl(name).role
    except KeyError:
        return "peer"


def _label(name: str) -> str:
    from .impls import get_impl
    try:
        return get_impl(name).label
    except KeyError:
        return name


# ---------------------------------------------------------------- correctness
def error_table(chk):
    """Worst relative error per (dtype, residual, hidden) and implementation, both outputs.

    Columns: (output, impl) and (new residual, impl); rows with the dtype's tolerance.
    Only implementations that ran (status ok or wrong) appear.
    """
    import pandas as pd

    ran = chk[chk["status"].isin(["ok", "wrong"])]
    if ran.empty:
        return pd.DataFrame()
    idx = ["dtype", "residual", "hidden"]
    out = ran.pivot_table(index=idx, columns="impl", values="err_out", aggfunc="max")
    res = ran[ran["residual"]].pivot_table(index=idx, columns="impl", values="err_residual", aggfunc="max")
    tol = ran.groupby(idx)["tolerance"].first()
    parts = {"output": out, "new residual": res.reindex(out.index)}
    table = pd.concat(parts, axis=1)
    table[("tolerance", "")] = tol
    return table


def support_reasons(sup):
    """One line per (implementation, status, message) that is not 'ok': what happens when it does not run."""
    d = sup[sup["status"] != "ok"]
    return d.groupby(["impl", "status", "message"], as_index=False).agg(cases=("case", "count"))


# ---------------------------------------------------------------- one run
def _ok(df, mode=None):
    d = df[df["status"] == "ok"]
    if mode:
        d = d[d["mode"] == mode]
    return d


def modes_in(df) -> list[str]:
    order = ["cold", "graph", "eager"]
    found = set(_ok(df)["mode"])
    return [m for m in order if m in found] + sorted(found - set(order))


def fastest_per_shape(df, mode: str):
    """Per shape: the fastest implementation, the runner-up and whether the win is beyond the noise.

    ``clear`` is True when the fastest one's p80 is below the runner-up's p20
    (their p20-p80 bands do not overlap). In a run of real models' shapes, ``models`` names the
    models of each hidden size.
    """
    import pandas as pd

    d = _ok(df, mode)
    named = _has_models(d)
    rows = []
    for key, g in d.groupby(SHAPE, sort=True):
        g = g.sort_values("us_median")
        a = g.iloc[0]
        row = dict(zip(SHAPE, key))
        if named:
            row["models"] = a["models"]
        row.update(fastest=a["impl"], us=a["us_median"], pct_copy=a.get("pct_copy"),
                   speedup_vs_hf=a.get("speedup_vs_hf"))
        if len(g) > 1:
            b = g.iloc[1]
            row.update(runner_up=b["impl"], runner_up_us=b["us_median"],
                       margin_pct=round(100 * (b["us_median"] / a["us_median"] - 1), 1),
                       clear=bool(a["us_p80"] < b["us_p20"]))
        else:
            row.update(runner_up="", runner_up_us=float("nan"), margin_pct=float("nan"), clear=False)
        rows.append(row)
    return pd.DataFrame(rows)


def _has_models(df) -> bool:
    return "models" in df and df["models"].fillna("").astype(str).str.len().gt(0).any()


def restrict(df, cfg):
    """Rows of a results directory that belong to this sweep's grid (the directory may hold earlier runs)."""
    keep = (df["dtype"].isin(cfg.dtypes) & df["hidden"].isin(cfg.hidden) & df["residual"].isin(cfg.residual)
            & df["impl"].isin(cfg.impls) & df["mode"].isin(cfg.modes))
    if "variant" in df:
        keep &= (df["variant"] == getattr(cfg, "variant", "plain")) & df["pass"].isin(getattr(cfg, "passes", ["fwd"]))
    if cfg.tokens is None:
        keep &= df["batch"].isin(cfg.batch) & df["seq"].isin(cfg.seq)
    else:
        keep &= df["tokens"].isin(cfg.tokens)
    out = df[keep].reset_index(drop=True)
    out.attrs.update(df.attrs)
    return out


def _fmt_impls(counts) -> str:
    return ", ".join(f"{k} ({v})" for k, v in counts.items())


def written_reading(df) -> str:
    """A short reading of one run, as Markdown, computed from its rows."""
    env = df.attrs.get("env", {}) or {}
    lines = []
    gpu = env.get("gpu_name") or (df["gpu_name"].iloc[0] if len(df) and "gpu_name" in df else "?")
    copy = env.get("copy_gbps")
    lines.append(f"**Device:** {gpu}" + (f"; measured copy bandwidth {copy:.0f} GB/s." if copy else "."))
    ok = _ok(df)
    ran = sorted(set(ok["impl"]))
    notrun = df[df["status"] == "skip"].groupby("impl")["error"].first()
    lines.append(f"**Measured:** {len(ok)} points of {len(ran)} implementations ({', '.join(ran) or 'none'}) "
                 f"over {ok.groupby(SHAPE).ngroups} shapes.")
    if _has_models(ok):
        names = ok[["hidden", "models"]].drop_duplicates().sort_values("hidden")
        lines.append("**Models:** " + "; ".join(f"hidden {h}: {m}" for h, m in names.itertuples(index=False)
                                                 if str(m) not in ("", "nan")) + ".")
    if len(notrun):
        lines.append("**Not run here:** " + "; ".join(f"{i} ({r})" for i, r in notrun.items()) + ".")
    errs = df[df["status"] == "error"]
    if len(errs):
        lines.append(f"**Errors:** {len(errs)} rows, from {', '.join(sorted(set(errs['impl'])))} "
                     "(see the CSV's `error` column).")
    if "correct" in df:
        wrong = ok[ok["correct"] == False]  # noqa: E712 - column holds True/False/NA
        if len(wrong):
            lines.append(f"**Wrong results:** {', '.join(sorted(set(wrong['impl'])))} failed the correctness "
                         f"check on {wrong.groupby(SHAPE).ngroups} shapes; their timings do not count.")
    for mode in modes_in(df):
        fp = fastest_per_shape(df, mode)
        if fp.empty:
            continue
        wins = fp["fastest"].value_counts()
        clear = fp[fp["clear"]]["fastest"].value_counts()
        part = [f"**{mode} timing:** fastest on most shapes: {_fmt_impls(wins)} of {len(fp)} shapes"]
        part.append(f" (beyond the p20-p80 noise on {int(fp['clear'].sum())} of them"
                    + (f": {_fmt_impls(clear)})" if len(clear) else ")"))
        m = _ok(df, mode)
        if "pct_copy" in m and m["pct_copy"].notna().any():
            best = m.loc[m["pct_copy"].idxmax()]
            small = m[m["tokens"] == m["tokens"].min()]["pct_copy"].max()
            big = m[m["tokens"] == m["tokens"].max()]["pct_copy"].max()
            part.append(f"; best bandwidth {best['pct_copy']:.0f}% of copy ({best['impl']}, hidden {best['hidden']}, "
                        f"{best['tokens']} tokens); at {m['tokens'].min()} tokens the best reaches {small:.0f}% "
                        f"and at {m['tokens'].max()} tokens {big:.0f}%"
                        + (" (small shapes are launch-bound, large ones bandwidth-bound)" if big > 2 * small else "")
                        + (" — above 100% only because graph replays keep inputs that fit in L2 warm"
                           if mode == "graph" and best["pct_copy"] > 100 else ""))
        baselines = set(by_role("baseline"))
        if "speedup_vs_hf" in m and m["speedup_vs_hf"].notna().any():
            sp = m[~m["impl"].isin(baselines)].groupby("impl")["speedup_vs_hf"].median().sort_values(ascending=False)
            if len(sp):
                part.append(f"; median speedup vs {', '.join(_label(b) for b in sorted(baselines)) or 'the baseline'}: "
                            + ", ".join(f"{i} {v:.2f}×" for i, v in sp.items()))
        for ours in by_role("ours"):
            if ours not in set(m["impl"]):
                continue
            rank = m.groupby(SHAPE)["us_median"].rank(method="min")
            tr = rank[m["impl"] == ours]
            first = rank == 1
            n_first = first.groupby([m[k] for k in SHAPE]).transform("sum")   # implementations ranked 1st
            shared = int((first & (n_first > 1) & (m["impl"] == ours)).sum())
            part.append(f"; ours ({ours}) is fastest on {int((tr == 1).sum())} of {len(tr)} shapes "
                        + (f"({shared} of them tied on the median with another; " if shared else "(")
                        + f"median rank {tr.median():.0f} of {m['impl'].nunique()})")
        lines.append("".join(part) + ".")
    if str(env.get("device", "")).startswith("cpu") and set(by_role("ours")) & set(ok["impl"]):
        lines.append("_CPU run: our kernel runs in Triton's interpreter (TRITON_INTERPRET=1); its times "
                     "are not a kernel's and say nothing about a GPU._")
    return "\n\n".join(lines)


# ---------------------------------------------------------------- several runs
def _env(run_dir) -> dict:
    try:
        return json.loads((Path(run_dir) / "env.json").read_text())
    except (OSError, ValueError):
        return {}


GRID = ("hidden", "batch", "seq", "tokens", "dtypes", "residual")
MEASURED = ("variant", "passes", "head_dim")       # what a run measures at each point of its grid


def _measured(cfg: dict) -> str:
    """The norm variant, the passes and (qk-norm) the head size of a run's config; a config written before
    these fields existed measured plain RMSNorm's forward (results.RUN_DEFAULTS)."""
    from .results import RUN_DEFAULTS
    m = {k: RUN_DEFAULTS[k] if cfg.get(k) is None else cfg[k] for k in MEASURED}
    m["passes"] = sorted([m["passes"]] if isinstance(m["passes"], str) else m["passes"])
    if m["variant"] != "qk-norm":
        m["head_dim"] = RUN_DEFAULTS["head_dim"]          # the head size matters to qk-norm only
    return json.dumps(m, sort_keys=True, default=str)


def run_identity(run_dir) -> tuple:
    """(device, grid, what is measured) of a results directory, from its env.json: the GPU (or CPU) name;
    the preset name where the run recorded one, else its sweep grid (hidden sizes, batch, seq, tokens,
    dtypes, residual variants); and its norm variant, passes and qk-norm head size. Two runs are
    comparable by default when their identities are equal."""
    env = _env(run_dir)
    cfg = env.get("config") or {}
    grid = env.get("preset") or json.dumps({k: cfg.get(k) for k in GRID}, sort_keys=True, default=str)
    return (env.get("gpu_name") or env.get("device") or "?", grid, _measured(cfg))


def discover_runs(root, like=None) -> list[Path]:
    """Every results directory (one holding results.csv) under root, sorted.

    like: a results directory; then only the runs of the same device, preset, norm variant and pass
    (``run_identity``) are returned (``like`` itself included when it lies under root).
    """
    root = Path(root)
    if not root.is_dir():
        return []
    runs = sorted({p.parent for p in root.rglob("results.csv") if ".ipynb_checkpoints" not in p.parts})
    if like is not None:
        want = run_identity(like)
        runs = [r for r in runs if run_identity(r) == want]
    return runs


def latest_run(runs) -> Path | None:
    """The run whose env.json has the latest time (the last in order when none has one)."""
    runs = list(runs)
    if not runs:
        return None
    return max(enumerate(runs), key=lambda ir: (str(_env(ir[1]).get("time") or ""), ir[0]))[1]


def run_label(run_dir, root=None) -> str:
    p = Path(run_dir)
    if root is not None:
        try:
            return str(p.resolve().relative_to(Path(root).resolve()))
        except ValueError:
            pass
    return "/".join(p.parts[-2:])


MEASURED_COLS = ("variant", "pass", "head_dim")


def _measured_cols(df):
    """variant, pass and head_dim as comparable keys: missing columns or cells are plain / fwd, and the
    head size is 0 except for qk-norm rows."""
    import pandas as pd

    from .results import ROW_DEFAULTS
    out = {c: (df[c].fillna(v) if c in df else v) for c, v in ROW_DEFAULTS.items()}
    hd = pd.to_numeric(df["head_dim"], errors="coerce") if "head_dim" in df else pd.Series(0, index=df.index)
    out["head_dim"] = hd.where(pd.Series(out["variant"], index=df.index) == "qk-norm", 0).fillna(0).astype(int)
    return df.assign(**out)


def compare_runs(base, other, mode: str | None = None, same_device: bool = False):
    """Per matching point: time ratio other/base with its spread, and a verdict beyond the noise.

    A point matches when its implementation, shape, dtype, residual, timing mode, norm variant, pass
    and (qk-norm) head size agree (rows without the variant / pass columns: plain, fwd).
    same_device: compare only rows measured on the same GPU (``gpu_name``); runs of two
    devices then have no point in common.

    ratio = other median / base median (< 1: the other run is faster);
    ratio_lo / ratio_hi = other p20 / base p80 and other p80 / base p20 (the spread
    the two p20-p80 bands allow). verdict: 'faster' / 'slower' only when the
    bands do not overlap, else 'same (within noise)'.
    """
    import numpy as np

    match = MATCH + list(MEASURED_COLS) + (["gpu_name"] if same_device else [])
    cols = match + ["us_median", "us_p20", "us_p80"]
    b, o = _measured_cols(_ok(base, mode))[cols], _measured_cols(_ok(other, mode))[cols]
    m = b.merge(o, on=match, suffixes=("_base", "_other"))
    if m.empty:
        return m
    m["ratio"] = m["us_median_other"] / m["us_median_base"]
    m["ratio_lo"] = m["us_p20_other"] / m["us_p80_base"]
    m["ratio_hi"] = m["us_p80_other"] / m["us_p20_base"]
    m["verdict"] = np.where(m["us_p80_other"] < m["us_p20_base"], "faster",
                            np.where(m["us_p20_other"] > m["us_p80_base"], "slower", "same (within noise)"))
    return m.sort_values(["mode", "impl", "dtype", "residual", "hidden", "tokens"]).reset_index(drop=True)


def comparison_reading(cmp, base_label: str, other_label: str) -> str:
    """Markdown: per mode and implementation, how many shapes got faster/slower beyond the noise."""
    if cmp is None or cmp.empty:
        return f"_No points in common between {base_label} and {other_label}._"
    lines = [f"**{other_label}** compared with **{base_label}** on {len(cmp)} matching points "
             "(ratio = time of the other run / time of the base; < 1 means faster):"]
    for (mode, impl), g in cmp.groupby(["mode", "impl"]):
        v = g["verdict"].value_counts()
        gm = geomean(g["ratio"])
        lines.append(f"- {mode}, {impl}: geometric-mean ratio {gm:.3f}; faster on {v.get('faster', 0)}, "
                     f"slower on {v.get('slower', 0)}, within noise on {v.get('same (within noise)', 0)} "
                     f"of {len(g)} shapes")
    return "\n".join(lines)



# ---------------------------------------------------------------- target runs
TARGET_KEYS = ["dtype", "residual", "hidden", "tokens", "mode"]
MISS = 1.03          # a shape is a miss when ours is slower than the fastest peer by more than this, outside the spread


def geomean(values) -> float:
    """The geometric mean of ``values`` (pure Python; NaN and values <= 0 are skipped); NaN when none is left."""
    v = [float(x) for x in values]
    v = [x for x in v if x == x and x > 0]
    return math.exp(sum(map(math.log, v)) / len(v)) if v else float("nan")


def target_ratios(df, ours: str | None = None, peers=None):
    """One row per (shape, mode) of one run: ours, the fastest peer, their ratio, tie, % of both ceilings.

    ours: our implementation (default: the registry's role 'ours'); peers: the implementations we race
    (default: every implementation of the run whose role is 'peer'). ``tie``: the two p20-p80 bands overlap.
    The same-size copy ceiling is taken from cold rows only (graph-mode copies take another path).
    """
    import pandas as pd

    ours = ours or by_role("ours")[0]
    ok = df[df["status"] == "ok"]
    peer_set = set(peers) if peers is not None else {i for i in set(ok["impl"]) if role_of(i) == "peer"}
    peer_set.discard(ours)
    rows = []
    for k, g in ok.groupby(TARGET_KEYS):
        o = g[g["impl"] == ours]
        p = g[g["impl"].isin(peer_set)]
        if o.empty or p.empty:
            continue
        o = o.iloc[0]
        b = p.loc[p["us_median"].idxmin()]
        tie = not (o["us_p20"] > b["us_p80"] or b["us_p20"] > o["us_p80"])
        same = {}
        if k[-1] == "cold" and "pct_copy_same" in g and pd.notna(o.get("pct_copy_same")):
            same = {"copy_same_us": o["copy_same_us"], "ours_pct_copy_same": o["pct_copy_same"],
                    "best_peer_pct_copy_same": b.get("pct_copy_same")}
        rows.append({**dict(zip(TARGET_KEYS, k)), "ours_us": o["us_median"], "best_peer": b["impl"],
                     "best_peer_us": b["us_median"], "ratio": o["us_median"] / b["us_median"], "tie": bool(tie),
                     "bytes": o.get("bytes"), "ours_pct_copy": o.get("pct_copy"),
                     "best_peer_pct_copy": b.get("pct_copy"), **same})
    return pd.DataFrame(rows)


def combine_ratios(r):
    """Per (shape, mode) over the runs (column ``run``): median / min / max ratio, and in how many runs
    it was a miss (ratio > 1.03 and no tie)."""
    r = r.assign(miss=(r["ratio"] > MISS) & ~r["tie"].astype(bool))
    agg = {"ratio": ["median", "min", "max"], "miss": "sum", "run": "nunique", "bytes": "first",
           "ours_pct_copy": "median", "best_peer_pct_copy": "median"}
    same = "ours_pct_copy_same" in r
    if same:
        agg.update(ours_pct_copy_same="median", best_peer_pct_copy_same="median")
    c = r.groupby(TARGET_KEYS).agg(agg)
    c.columns = ["ratio", "ratio_min", "ratio_max", "miss_runs", "runs", "bytes", "ours_pct_copy",
                 "best_peer_pct_copy"] + (["ours_pct_copy_same", "best_peer_pct_copy_same"] if same else [])
    peers = r.groupby(TARGET_KEYS)["best_peer"].agg(lambda v: "/".join(sorted(set(v))))
    return c.join(peers).reset_index()


def _single_peer_geomeans(df, mode: str, dtype: str, ours: str, peers) -> dict:
    ok = df[(df["status"] == "ok") & (df["mode"] == mode) & (df["dtype"] == dtype)]
    p = ok.pivot_table(index=["residual", "hidden", "tokens"], columns="impl", values="us_median")
    cols = [c for c in p.columns if c in peers]
    if not cols:
        return {}
    best = p[cols].min(axis=1)
    return {c: geomean(p[c] / best) for c in cols + ([ours] if ours in p else [])}


def _ratio_table(g, n: int) -> list[str]:
    toks = sorted(g["tokens"].unique())
    lines = ["| residual | hidden | " + " | ".join(str(t) for t in toks) + " |",
             "| --- | --- | " + " | ".join("---" for _ in toks) + " |"]
    for (res, h), gg in g.groupby(["residual", "hidden"]):
        cells = gg.set_index("tokens")
        row = []
        for t in toks:
            if t not in cells.index:
                row.append("")
                continue
            cc = cells.loc[t]
            mark = "*" if cc["miss_runs"] == cc["runs"] else ("+" if cc["miss_runs"] > 0 else "")
            row.append(f"{cc['ratio']:.2f}{mark}")
        lines.append(f"| {'yes' if res else 'no'} | {h} | " + " | ".join(row) + " |")
    return lines


def summarize_targets(runs, ours: str | None = None, peers=None, tables: bool = True) -> dict:
    """Ours against the fastest peer per shape over one or more target runs (DataFrames of results).

    Runs of one dtype are combined per shape: a cold figure can move between processes by more than
    its p20-p80 band, so a shape is a miss "in every run" or "in some runs". Returns a dict with
    ``ratios`` (one row per run and shape), ``combined`` (per shape over the runs) and ``markdown``
    (the reading per dtype and mode, with per-shape tables when ``tables``).
    """
    import pandas as pd

    runs = [r for r in runs if len(r)]
    if not runs:
        raise ValueError("runs: expected at least one results DataFrame with rows")
    ours = ours or by_role("ours")[0]
    per_run = []
    for i, one in enumerate(runs):
        label = one.attrs.get("label") or f"run {i + 1}"
        t = target_ratios(one, ours, peers)
        if len(t):
            per_run.append(t.assign(run=label))
    if not per_run:
        raise ValueError(f"runs: no shape has both {ours!r} and a peer measured (status ok)")
    r = pd.concat(per_run, ignore_index=True)
    c = combine_ratios(r)
    md = []
    for (dtype, mode), g in c.groupby(["dtype", "mode"]):
        rr = r[(r["dtype"] == dtype) & (r["mode"] == mode)]
        by_run = rr.groupby("run")["ratio"].apply(geomean)
        n = int(g["runs"].max())
        w = g.loc[g["ratio"].idxmax()]
        gpu = next((one["gpu_name"].iloc[0] for one in runs if "gpu_name" in one), "?")
        md.append(f"## {gpu}, {dtype}, {mode}: {len(g)} shapes, {n} run{'s' if n > 1 else ''}")
        md.append(f"- ours / fastest peer per shape: geomean {geomean(g['ratio']):.3f}"
                  + (f" (per run {', '.join(f'{v:.3f}' for v in by_run)})" if n > 1 else "")
                  + f", worst {w['ratio']:.3f} (hidden {w['hidden']}, tokens {w['tokens']}, residual "
                  f"{w['residual']}, vs {w['best_peer']})")
        every = g[g["miss_runs"] == g["runs"]]
        some = g[(g["miss_runs"] > 0) & (g["miss_runs"] < g["runs"])]
        md.append(f"- shapes slower than {MISS}x and outside the p20-p80 spread: {len(every)}"
                  + (f" in every run, {len(some)} more in some runs (of {n})" if n > 1 else ""))
        peer_names = set(rr["best_peer"]) | ({i for one in runs for i in set(one["impl"]) if role_of(i) == "peer"}
                                             if peers is None else set(peers))
        singles = [_single_peer_geomeans(one, mode, dtype, ours, peer_names) for one in runs
                   if ((one["dtype"] == dtype) & (one["mode"] == mode)).any()]
        vs = []
        for sp in singles:
            cand = [(v, k) for k, v in sp.items() if k != ours]
            if cand:
                b, k = min(cand)
                vs.append((k, b, sp.get(ours, float("nan"))))
        if vs:
            md.append("- best single peer: " + "; ".join(f"{k} at {b:.3f}x the per-shape best (geomean), ours "
                                                         f"{o:.3f}x, ours vs it {o / b:.3f}" for k, b, o in vs))
        big = g[g["bytes"] > 64e6]
        if len(big) and big["ours_pct_copy"].notna().any():
            md.append(f"- % of copy bandwidth (1 GiB copy) where bytes > 64 MB: ours min {big['ours_pct_copy'].min():.1f}, "
                      f"median {big['ours_pct_copy'].median():.1f}; best peer median "
                      f"{big['best_peer_pct_copy'].median():.1f}")
            if "ours_pct_copy_same" in big and big["ours_pct_copy_same"].notna().any():
                md.append(f"- % of a same-size copy timed the same way, bytes > 64 MB: ours min "
                          f"{big['ours_pct_copy_same'].min():.1f}, median {big['ours_pct_copy_same'].median():.1f}; "
                          f">= 97%: ours at {int((big['ours_pct_copy_same'] >= 97).sum())}, the fastest peer at "
                          f"{int((big['best_peer_pct_copy_same'] >= 97).sum())} of {len(big)}")
        fine = g[g["miss_runs"] == 0]
        md.append(f"- shapes at ratio <= {MISS} or tied within the spread{' in every run' if n > 1 else ''}: "
                  f"{len(fine)} of {len(g)}")
        md.append("")
        if tables:
            md.append(f"**{dtype}, {mode}** (ours / fastest peer{', median of the runs' if n > 1 else ''}; < 1: "
                      f"ours faster; * = slower than {MISS}x and outside the p20-p80 spread"
                      + (" in every run, + in some" if n > 1 else "") + ")\n")
            md += _ratio_table(g, n) + [""]
    return {"ratios": r, "combined": c, "markdown": "\n".join(md)}
