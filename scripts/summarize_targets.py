"""Per-shape ratio of our Triton kernel to the fastest peer, from bench_targets.py results.

    python scripts/summarize_targets.py RESULTS_DIR [RESULTS_DIR ...] --out DIR

A ratio counts as a tie when the two p20-p80 bands overlap. Each directory is one run; runs of one
dtype are combined per shape (median ratio, min-max, in how many runs it was a miss), since a cold
figure can move between processes by more than its p20-p80 band (docs/triton-kernel-notes.md). Writes
DIR/ratios.csv (per run), DIR/ratios-combined.csv, DIR/ratios-<dtype>-<mode>.png and prints a markdown
summary (for README and notes), with % of the 1 GiB copy and, where the sweep timed one, of a same-size
copy timed the same way.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

OURS = "triton"
NOT_PEERS = {OURS, "huggingface", "torch"}    # the race is against the optimized peers


def ratios(df: pd.DataFrame) -> pd.DataFrame:
    """One row per (shape, mode) of one run: ours, the fastest peer, their ratio, tie, % of both ceilings."""
    ok = df[(df["status"] == "ok")].copy()
    keys = ["dtype", "residual", "hidden", "tokens", "mode"]
    rows = []
    for k, g in ok.groupby(keys):
        ours = g[g["impl"] == OURS]
        peers = g[~g["impl"].isin(NOT_PEERS)]
        if ours.empty or peers.empty:
            continue
        o = ours.iloc[0]
        b = peers.loc[peers["us_median"].idxmin()]
        tie = not (o["us_p20"] > b["us_p80"] or b["us_p20"] > o["us_p80"])
        same = {}
        # cold only: graph-mode copies through torch (a memcpy) ran up to 1.5x slower than cold ones at
        # 2 GiB in the first runs that timed them, so they are no ceiling there
        if k[-1] == "cold" and "pct_copy_same" in g and pd.notna(o.get("pct_copy_same")):
            same = {"copy_same_us": o["copy_same_us"], "ours_pct_copy_same": o["pct_copy_same"],
                    "best_peer_pct_copy_same": b.get("pct_copy_same")}
        rows.append({**dict(zip(keys, k)), "ours_us": o["us_median"], "best_peer": b["impl"],
                     "best_peer_us": b["us_median"], "ratio": o["us_median"] / b["us_median"],
                     "tie": tie, "bytes": o["bytes"], "ours_pct_copy": o["pct_copy"],
                     "best_peer_pct_copy": b["pct_copy"], **same})
    return pd.DataFrame(rows)


def single_peer_geomeans(df: pd.DataFrame, mode: str, dtype: str) -> dict:
    ok = df[(df["status"] == "ok") & (df["mode"] == mode) & (df["dtype"] == dtype)]
    p = ok.pivot_table(index=["residual", "hidden", "tokens"], columns="impl", values="us_median")
    peers = [c for c in p.columns if c not in NOT_PEERS]
    best = p[peers].min(axis=1)
    return {c: float(np.exp(np.log(p[c] / best).mean())) for c in peers + ([OURS] if OURS in p else [])}


def combine(r: pd.DataFrame) -> pd.DataFrame:
    """Per (shape, mode) over the runs: median / min / max ratio and in how many runs it was a miss."""
    keys = ["dtype", "residual", "hidden", "tokens", "mode"]
    r = r.assign(miss=(r["ratio"] > 1.03) & ~r["tie"])
    agg = {"ratio": ["median", "min", "max"], "miss": "sum", "run": "nunique", "bytes": "first",
           "ours_pct_copy": "median", "best_peer_pct_copy": "median"}
    if "ours_pct_copy_same" in r:
        agg.update(ours_pct_copy_same="median", best_peer_pct_copy_same="median")
    c = r.groupby(keys).agg(agg)
    c.columns = ["ratio", "ratio_min", "ratio_max", "miss_runs", "runs", "bytes", "ours_pct_copy",
                 "best_peer_pct_copy"] + (["ours_pct_copy_same", "best_peer_pct_copy_same"]
                                          if "ours_pct_copy_same" in r else [])
    peers = r.groupby(keys)["best_peer"].agg(lambda v: "/".join(sorted(set(v))))
    return c.join(peers).reset_index()


def _geo(v) -> float:
    return float(np.exp(np.log(np.asarray(v, dtype=float)).mean()))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("dirs", nargs="+", help="results directories: each one run (several runs of a dtype are combined)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--tables", action="store_true", help="also print per-shape ratio tables (markdown)")
    args = ap.parse_args()
    from rmsnorm_lab.results import load_results
    runs = []
    for i, d in enumerate(args.dirs):
        one = load_results(d)
        one["run"] = f"{i + 1}:{Path(d).name}"
        runs.append(one)
    df = pd.concat(runs, ignore_index=True)
    r = pd.concat([ratios(one).assign(run=one["run"].iloc[0]) for one in runs if len(one)], ignore_index=True)
    c = combine(r)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    r.round(4).to_csv(out / "ratios.csv", index=False)
    c.round(4).to_csv(out / "ratios-combined.csv", index=False)
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    for (dtype, mode), g in c.groupby(["dtype", "mode"]):
        fig, axes = plt.subplots(1, 2, figsize=(13, 4.2), sharey=True)
        for ax, res in zip(axes, (False, True)):
            for h, gg in g[g["residual"] == res].groupby("hidden"):
                gg = gg.sort_values("tokens")
                line, = ax.plot(gg["tokens"], gg["ratio"], marker="o", ms=3, label=f"hidden {h}")
                if gg["runs"].max() > 1:
                    ax.fill_between(gg["tokens"], gg["ratio_min"], gg["ratio_max"], color=line.get_color(), alpha=0.15)
            ax.axhline(1.0, color="k", lw=1)
            ax.axhline(1.03, color="grey", ls=":", lw=1)
            ax.set_xscale("log", base=2)
            ax.set_xlabel("tokens (rows)")
            ax.set_title(f"{'with' if res else 'without'} residual", fontsize=10)
            ax.grid(True, which="both", alpha=0.3)
        n = int(g["runs"].max())
        axes[0].set_ylabel("our µs / fastest peer's µs (<1: ours faster)" + (f"\nmedian of {n} runs, band min-max"
                                                                           if n > 1 else ""))
        axes[1].legend(fontsize=8, ncol=2)
        gpu = df["gpu_name"].iloc[0]
        fig.suptitle(f"rmsnorm-lab Triton vs the fastest peer per shape — {gpu}, {dtype}, {mode} timing",
                     fontsize=11)
        fig.tight_layout()
        fig.savefig(out / f"ratios-{dtype}-{mode}.png", dpi=110, bbox_inches="tight")
        plt.close(fig)
    for (dtype, mode), g in c.groupby(["dtype", "mode"]):
        rr = r[(r["dtype"] == dtype) & (r["mode"] == mode)]
        per_run = rr.groupby("run")["ratio"].apply(_geo)
        n = int(g["runs"].max())
        w = g.loc[g["ratio"].idxmax()]
        big = g[g["bytes"] > 64e6]
        print(f"## {dtype}, {mode}: {len(g)} shapes, {n} run{'s' if n > 1 else ''}")
        print(f"- ours / best peer per shape: geomean {_geo(g['ratio']):.3f}"
              + (f" (per run {', '.join(f'{v:.3f}' for v in per_run)})" if n > 1 else "")
              + f", worst {w['ratio']:.3f} (hidden {w['hidden']}, tokens {w['tokens']}, residual {w['residual']}, "
              f"vs {w['best_peer']})")
        every = g[g["miss_runs"] == g["runs"]]
        some = g[(g["miss_runs"] > 0) & (g["miss_runs"] < g["runs"])]
        print(f"- shapes slower than 1.03x and outside the p20-p80 spread: {len(every)}"
              + (f" in every run, {len(some)} more in some runs (of {n})" if n > 1 else ""))
        singles = [single_peer_geomeans(one, mode, dtype) for one in runs
                   if ((one["dtype"] == dtype) & (one["mode"] == mode)).any()]
        vs = []
        for sp in singles:
            best_single = min((v, k) for k, v in sp.items() if k != OURS)
            vs.append((best_single[1], best_single[0], sp.get(OURS, float("nan"))))
        print("- best single peer: " + "; ".join(f"{k} at {b:.3f}x the per-shape best (geomean), ours {o:.3f}x, "
                                                 f"ours vs it {o / b:.3f}" for k, b, o in vs))
        if len(big):
            print(f"- % of copy bandwidth (1 GiB copy) where bytes > 64 MB: ours min {big['ours_pct_copy'].min():.1f}, "
                  f"median {big['ours_pct_copy'].median():.1f}; best peer median {big['best_peer_pct_copy'].median():.1f}; "
                  f">= 97%: ours at {int((big['ours_pct_copy'] >= 97).sum())}, the fastest peer at "
                  f"{int((big['best_peer_pct_copy'] >= 97).sum())} of {len(big)} such shapes")
            if "ours_pct_copy_same" in big and big["ours_pct_copy_same"].notna().any():
                print(f"- % of a same-size copy timed the same way, bytes > 64 MB: ours min "
                      f"{big['ours_pct_copy_same'].min():.1f}, median {big['ours_pct_copy_same'].median():.1f}; >= 97%: "
                      f"ours at {int((big['ours_pct_copy_same'] >= 97).sum())}, the fastest peer at "
                      f"{int((big['best_peer_pct_copy_same'] >= 97).sum())} of {len(big)}")
            top = g[g["tokens"] == g["tokens"].max()]
            print(f"- at {g['tokens'].max()} tokens (the largest shapes): ours "
                  + ", ".join(f"{'res' if rs else 'no res'} {hh}: {pc:.1f}%" for rs, hh, pc in
                              top.sort_values(["residual", "hidden"])[["residual", "hidden", "ours_pct_copy"]]
                              .itertuples(index=False)) + " of the 1 GiB copy")
        ok = g[g["miss_runs"] == 0]
        print(f"- shapes at ratio <= 1.03 or tied within the spread{' in every run' if n > 1 else ''}: "
              f"{len(ok)} of {len(g)}")
        print()
        if args.tables:
            toks = sorted(g["tokens"].unique())
            print(f"**{dtype}, {mode}** (ours / fastest peer{', median of the runs' if n > 1 else ''}; < 1: ours "
                  "faster; * = slower than 1.03x and outside the p20-p80 spread"
                  + (" in every run, + in some" if n > 1 else "") + ")\n")
            print("| residual | hidden | " + " | ".join(str(t) for t in toks) + " |")
            print("| --- | --- | " + " | ".join("---" for _ in toks) + " |")
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
                print(f"| {'yes' if res else 'no'} | {h} | " + " | ".join(row) + " |")
            print()


if __name__ == "__main__":
    main()
