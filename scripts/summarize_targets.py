"""Per-shape ratio of our Triton kernel to the fastest peer, from bench_targets.py results.

    python scripts/summarize_targets.py RESULTS_DIR [RESULTS_DIR ...] --out DIR

A ratio counts as a tie when the two p20-p80 bands overlap. Writes DIR/ratios.csv,
DIR/ratios-<mode>.png and prints a markdown summary (for README and notes).
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
        rows.append({**dict(zip(keys, k)), "ours_us": o["us_median"], "best_peer": b["impl"],
                     "best_peer_us": b["us_median"], "ratio": o["us_median"] / b["us_median"],
                     "tie": tie, "bytes": o["bytes"], "ours_pct_copy": o["pct_copy"],
                     "best_peer_pct_copy": b["pct_copy"]})
    return pd.DataFrame(rows)


def single_peer_geomeans(df: pd.DataFrame, mode: str, dtype: str) -> dict:
    ok = df[(df["status"] == "ok") & (df["mode"] == mode) & (df["dtype"] == dtype)]
    p = ok.pivot_table(index=["residual", "hidden", "tokens"], columns="impl", values="us_median")
    peers = [c for c in p.columns if c not in NOT_PEERS]
    best = p[peers].min(axis=1)
    return {c: float(np.exp(np.log(p[c] / best).mean())) for c in peers + ([OURS] if OURS in p else [])}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("dirs", nargs="+")
    ap.add_argument("--out", required=True)
    ap.add_argument("--tables", action="store_true", help="also print per-shape ratio tables (markdown)")
    args = ap.parse_args()
    from rmsnorm_lab.results import load_results
    df = pd.concat([load_results(d) for d in args.dirs], ignore_index=True)
    r = ratios(df)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    r.round(4).to_csv(out / "ratios.csv", index=False)
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    for (dtype, mode), g in r.groupby(["dtype", "mode"]):
        fig, axes = plt.subplots(1, 2, figsize=(13, 4.2), sharey=True)
        for ax, res in zip(axes, (False, True)):
            for h, gg in g[g["residual"] == res].groupby("hidden"):
                gg = gg.sort_values("tokens")
                ax.plot(gg["tokens"], gg["ratio"], marker="o", ms=3, label=f"hidden {h}")
            ax.axhline(1.0, color="k", lw=1)
            ax.axhline(1.03, color="grey", ls=":", lw=1)
            ax.set_xscale("log", base=2)
            ax.set_xlabel("tokens (rows)")
            ax.set_title(f"{'with' if res else 'without'} residual", fontsize=10)
            ax.grid(True, which="both", alpha=0.3)
        axes[0].set_ylabel("our µs / fastest peer's µs (<1: ours faster)")
        axes[1].legend(fontsize=8, ncol=2)
        gpu = df["gpu_name"].iloc[0]
        fig.suptitle(f"rmsnorm-lab Triton vs the fastest peer per shape — {gpu}, {dtype}, {mode} timing",
                     fontsize=11)
        fig.tight_layout()
        fig.savefig(out / f"ratios-{dtype}-{mode}.png", dpi=110, bbox_inches="tight")
        plt.close(fig)
    for (dtype, mode), g in r.groupby(["dtype", "mode"]):
        gm = float(np.exp(np.log(g["ratio"]).mean()))
        w = g.loc[g["ratio"].idxmax()]
        losses = g[(g["ratio"] > 1.03) & ~g["tie"]]
        big = g[g["bytes"] > 64e6]
        sp = single_peer_geomeans(df, mode, dtype)
        best_single = min((v, k) for k, v in sp.items() if k != OURS)
        print(f"## {dtype}, {mode}: {len(g)} shapes")
        print(f"- ours / best peer per shape: geomean {gm:.3f}, worst {w['ratio']:.3f} "
              f"(hidden {w['hidden']}, tokens {w['tokens']}, residual {w['residual']}, vs {w['best_peer']})")
        print(f"- shapes slower than 1.03x and outside the p20-p80 spread: {len(losses)}")
        print(f"- best single peer: {best_single[1]} at {best_single[0]:.3f}x the per-shape best (geomean); "
              f"ours {sp.get(OURS, float('nan')):.3f}x; ours vs that peer: "
              f"{sp.get(OURS, float('nan')) / best_single[0]:.3f}")
        if len(big):
            print(f"- % of copy bandwidth where bytes > 64 MB: ours min {big['ours_pct_copy'].min():.1f}, "
                  f"median {big['ours_pct_copy'].median():.1f}; best peer median {big['best_peer_pct_copy'].median():.1f}; "
                  f"ours >= 97% at {int((big['ours_pct_copy'] >= 97).sum())} of {len(big)} such shapes")
            top = g[g["tokens"] == g["tokens"].max()]
            print(f"- at {g['tokens'].max()} tokens (the largest shapes): ours "
                  + ", ".join(f"{'res' if rr else 'no res'} {hh}: {pc:.1f}%" for rr, hh, pc in
                              top.sort_values(["residual", "hidden"])[["residual", "hidden", "ours_pct_copy"]]
                              .itertuples(index=False)))
        ok = g[(g["ratio"] <= 1.03) | g["tie"]]
        print(f"- shapes at ratio <= 1.03 or tied within the spread: {len(ok)} of {len(g)}")
        print()
        if args.tables:
            toks = sorted(g["tokens"].unique())
            print(f"**{dtype}, {mode}** (ours / fastest peer; < 1: ours faster; * = slower than 1.03x and "
                  "outside the p20-p80 spread)\n")
            print("| residual | hidden | " + " | ".join(str(t) for t in toks) + " |")
            print("| --- | --- | " + " | ".join("---" for _ in toks) + " |")
            for (res, h), gg in g.groupby(["residual", "hidden"]):
                cells = gg.set_index("tokens")
                row = []
                for t in toks:
                    if t not in cells.index:
                        row.append("")
                        continue
                    c = cells.loc[t]
                    row.append(f"{c['ratio']:.2f}" + ("*" if c["ratio"] > 1.03 and not c["tie"] else ""))
                print(f"| {'yes' if res else 'no'} | {h} | " + " | ".join(row) + " |")
            print()


if __name__ == "__main__":
    main()
