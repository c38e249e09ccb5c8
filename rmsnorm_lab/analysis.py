"""Tables and readings the notebooks show: computed here, from results, never typed by hand.

- correctness: ``error_table``, ``support_from_check``, ``support_pivot``
- one run: ``fastest_per_shape``, ``written_reading``
- several runs: ``discover_runs``, ``compare_runs``, ``comparison_reading``

Everything takes and returns pandas DataFrames (pandas is imported lazily).
"""
from __future__ import annotations

from pathlib import Path

SHAPE = ["dtype", "residual", "hidden", "batch", "seq", "tokens"]
# a point is the same point in two runs when these agree (gpu_name is what differs between GPUs)
MATCH = ["impl", "dtype", "hidden", "batch", "seq", "tokens", "residual", "mode"]
STATUS_ORDER = ["ok", "refused", "wrong", "crash"]            # worst last
CHECK_TO_SUPPORT = {"ok": "ok", "wrong": "wrong", "skip": "refused", "error": "crash"}


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


def _case_label(row) -> str:
    return f"{row['dtype']}{' +residual' if row['residual'] else ''}"


def support_from_check(chk):
    """A support table from check_all's statuses: impl, case, status (ok/wrong/refused/crash), message."""
    import pandas as pd

    return pd.DataFrame({
        "impl": chk["impl"],
        "case": [f"{_case_label(r)} h{r['hidden']}" for _, r in chk.iterrows()],
        "status": chk["status"].map(CHECK_TO_SUPPORT).fillna(chk["status"]),
        "message": chk["reason"].fillna(""),
    })


def _worst(statuses) -> str:
    s = list(statuses)
    worst = max(s, key=lambda v: STATUS_ORDER.index(v) if v in STATUS_ORDER else len(STATUS_ORDER))
    n = sum(v == worst for v in s)
    return worst if n == len(s) else f"{worst} ({n}/{len(s)})"


def support_pivot(sup):
    """implementation x case-group table of statuses; groups cases by their text before ' h<hidden>'."""
    d = sup.copy()
    d["group"] = d["case"].astype(str).str.replace(r"\s+h\d+$", "", regex=True)
    order = list(dict.fromkeys(d["impl"]))
    t = d.pivot_table(index="impl", columns="group", values="status", aggfunc=_worst)
    return t.reindex([i for i in order if i in t.index])


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
    (their p20-p80 bands do not overlap).
    """
    import pandas as pd

    d = _ok(df, mode)
    rows = []
    for key, g in d.groupby(SHAPE, sort=True):
        g = g.sort_values("us_median")
        a = g.iloc[0]
        row = dict(zip(SHAPE, key))
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


def restrict(df, cfg):
    """Rows of a results directory that belong to this sweep's grid (the directory may hold earlier runs)."""
    keep = (df["dtype"].isin(cfg.dtypes) & df["hidden"].isin(cfg.hidden) & df["residual"].isin(cfg.residual)
            & df["impl"].isin(cfg.impls) & df["mode"].isin(cfg.modes))
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
        if "speedup_vs_hf" in m and m["speedup_vs_hf"].notna().any():
            sp = m[m["impl"] != "huggingface"].groupby("impl")["speedup_vs_hf"].median().sort_values(ascending=False)
            if len(sp):
                part.append("; median speedup vs HuggingFace: "
                            + ", ".join(f"{i} {v:.2f}×" for i, v in sp.items()))
        if "triton" in set(m["impl"]):
            rank = m.groupby(SHAPE)["us_median"].rank(method="min")
            tr = rank[m["impl"] == "triton"]
            first = rank == 1
            n_first = first.groupby([m[k] for k in SHAPE]).transform("sum")   # implementations ranked 1st
            shared = int((first & (n_first > 1) & (m["impl"] == "triton")).sum())
            part.append(f"; our Triton kernel is fastest on {int((tr == 1).sum())} of {len(tr)} shapes "
                        + (f"({shared} of them tied on the median with another; " if shared else "(")
                        + f"median rank {tr.median():.0f} of {m['impl'].nunique()})")
        lines.append("".join(part) + ".")
    if str(env.get("device", "")).startswith("cpu") and "triton" in set(ok["impl"]):
        lines.append("_CPU run: the Triton kernel runs in the interpreter (TRITON_INTERPRET=1); its times "
                     "are not a kernel's and say nothing about a GPU._")
    return "\n\n".join(lines)


# ---------------------------------------------------------------- several runs
def discover_runs(root) -> list[Path]:
    """Every results directory (one holding results.csv) under root, sorted."""
    root = Path(root)
    if not root.is_dir():
        return []
    return sorted({p.parent for p in root.rglob("results.csv") if ".ipynb_checkpoints" not in p.parts})


def run_label(run_dir, root=None) -> str:
    p = Path(run_dir)
    if root is not None:
        try:
            return str(p.resolve().relative_to(Path(root).resolve()))
        except ValueError:
            pass
    return "/".join(p.parts[-2:])


def compare_runs(base, other, mode: str | None = None):
    """Per matching point: time ratio other/base with its spread, and a verdict beyond the noise.

    ratio = other median / base median (< 1: the other run is faster);
    ratio_lo / ratio_hi = other p20 / base p80 and other p80 / base p20 (the spread
    the two p20-p80 bands allow). verdict: 'faster' / 'slower' only when the
    bands do not overlap, else 'same (within noise)'.
    """
    import numpy as np

    cols = MATCH + ["us_median", "us_p20", "us_p80"]
    b, o = _ok(base, mode)[cols], _ok(other, mode)[cols]
    m = b.merge(o, on=MATCH, suffixes=("_base", "_other"))
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
    import numpy as np

    lines = [f"**{other_label}** compared with **{base_label}** on {len(cmp)} matching points "
             "(ratio = time of the other run / time of the base; < 1 means faster):"]
    for (mode, impl), g in cmp.groupby(["mode", "impl"]):
        v = g["verdict"].value_counts()
        gm = float(np.exp(np.log(g["ratio"]).mean())) if len(g) else float("nan")
        lines.append(f"- {mode}, {impl}: geometric-mean ratio {gm:.3f}; faster on {v.get('faster', 0)}, "
                     f"slower on {v.get('slower', 0)}, within noise on {v.get('same (within noise)', 0)} "
                     f"of {len(g)} shapes")
    return "\n".join(lines)

