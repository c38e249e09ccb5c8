"""Plots that read results and compute nothing of their own.

Colours and line weights come from the registry (``Impl.color``, ``Impl.role``: ours is drawn
thicker); an implementation the registry does not know (an old run's) gets a colour of its own.
"""
from __future__ import annotations

from pathlib import Path

_FALLBACK = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
             "#bcbd22", "#17becf"]


def color(impl: str) -> str:
    """The implementation's plot colour (``Impl.color``), else a stable one derived from its name."""
    from .impls import get_impl
    try:
        c = getattr(get_impl(impl), "color", "")
    except KeyError:
        c = ""
    if c:
        return c
    return _FALLBACK[sum(map(ord, impl)) % len(_FALLBACK)]


def _is_ours(impl: str) -> bool:
    from .analysis import role_of
    return role_of(impl) == "ours"


def _lw(impl: str, thick: float, thin: float) -> float:
    return thick if _is_ours(impl) else thin


def _baseline_label() -> str:
    from .analysis import _label, by_role
    names = by_role("baseline")
    return ", ".join(_label(n) for n in names) or "the baseline"


def _plt():
    import matplotlib
    if matplotlib.get_backend().lower() not in ("module://matplotlib_inline.backend_inline", "inline"):
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _ok(df, mode):
    d = df[(df["status"] == "ok") & (df["mode"] == mode)].copy()
    extra = {c: (c, "median") for c in ("copy_same_us", "pct_copy_same") if c in d}
    d = d.groupby(["impl", "dtype", "residual", "hidden", "tokens"], as_index=False).agg(
        us_median=("us_median", "median"), us_p20=("us_p20", "median"), us_p80=("us_p80", "median"),
        pct_copy=("pct_copy", "median"), speedup_vs_hf=("speedup_vs_hf", "median"), **extra)
    return d


def plot_metric(df, mode: str, metric: str = "us_median", save_path=None, title: str | None = None):
    """One panel per (hidden, residual): metric vs tokens, one line per implementation (p20-p80 band for µs)."""
    plt = _plt()
    d = _ok(df, mode)
    if d.empty or metric not in d or not d[metric].notna().any():
        return None              # nothing to draw (no baseline row for speedups, no copy ceiling in graph)
    panels = sorted({(h, r, dt) for h, r, dt in zip(d["hidden"], d["residual"], d["dtype"])})
    ncol = min(2, len(panels))
    nrow = -(-len(panels) // ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(6.5 * ncol, 4.2 * nrow), squeeze=False)
    ylabel = {"us_median": f"time per call, µs ({mode})", "pct_copy": "% of measured copy bandwidth",
              "pct_copy_same": "% of a same-size copy, same timing",
              "speedup_vs_hf": f"speedup vs {_baseline_label()} (×)"}[metric]
    for ax, (h, r, dt) in zip(axes.flat, panels):
        p = d[(d["hidden"] == h) & (d["residual"] == r) & (d["dtype"] == dt)]
        for impl, g in p.groupby("impl", sort=False):
            g = g.sort_values("tokens")
            kw = dict(color=color(impl), lw=_lw(impl, 2.2, 1.4), marker="o", ms=3)
            ax.plot(g["tokens"], g[metric], label=impl, **kw)
            if metric == "us_median":
                ax.fill_between(g["tokens"], g["us_p20"], g["us_p80"], color=color(impl), alpha=0.15, lw=0)
        if metric == "us_median" and "copy_same_us" in p and p["copy_same_us"].notna().any():
            c = p.dropna(subset=["copy_same_us"]).groupby("tokens")["copy_same_us"].median()
            ax.plot(c.index, c.values, color="black", ls="--", lw=1, label="copy, same bytes")
        ax.set_xscale("log", base=2)
        if metric == "us_median" or metric == "speedup_vs_hf":
            ax.set_yscale("log")
        if metric == "pct_copy":
            ax.set_ylim(0, 105)
            ax.axhline(100, color="grey", ls=":", lw=1)
        if metric == "pct_copy_same":
            ax.axhline(100, color="grey", ls=":", lw=1)
        ax.set_xlabel("tokens (rows)")
        ax.set_ylabel(ylabel)
        ax.set_title(f"hidden {h}, {dt}, {'with' if r else 'without'} residual", fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
    for ax in list(axes.flat)[len(panels):]:
        ax.set_visible(False)
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper center", ncol=min(len(labels), 9), frameon=False,
               bbox_to_anchor=(0.5, 1.0))
    gpu = df.attrs.get("env", {}).get("gpu_name") or (df["gpu_name"].iloc[0] if "gpu_name" in df and len(df) else "")
    fig.suptitle(title or f"RMSNorm, {mode} timing — {gpu}", y=1.04, fontsize=11)
    fig.tight_layout()
    return _save(fig, save_path)


def save_all(df, out_dir, prefix: str = "") -> list[str]:
    """latency / %-of-copy / speedup PNGs for every timing mode in the results (file names start with
    ``prefix``, e.g. a pass's name when one run holds several)."""
    plt = _plt()
    out = []
    for mode in sorted(set(df.loc[df["status"] == "ok", "mode"])):
        for metric, stem in (("us_median", "latency"), ("pct_copy", "bandwidth"), ("pct_copy_same", "ceiling"),
                             ("speedup_vs_hf", "speedup")):
            p = Path(out_dir) / f"{prefix}{stem}-{mode}.png"
            fig = plot_metric(df, mode, metric, p)
            if fig is not None:
                plt.close(fig)
                out.append(str(p))
    return out


def _header(fig, axes, title: str, legend_ax=None):
    """Legend and title above the panels, sized in inches so they never cover data."""
    h = fig.get_size_inches()[1]
    ax0 = legend_ax if legend_ax is not None else list(axes.flat)[0]
    handles, labels = ax0.get_legend_handles_labels()
    n_title = title.count("\n") + 1
    top = 1 - (0.3 * n_title + (0.4 if labels else 0) + 0.1) / h
    fig.tight_layout(rect=(0, 0, 1, top))
    if labels:
        fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 9), frameon=False,
                   bbox_to_anchor=(0.5, top), fontsize=9)
    fig.suptitle(title, y=1 - 0.05 / h, va="top", fontsize=11)


def _plain_log_ticks(axis):
    from matplotlib.ticker import FuncFormatter, NullFormatter
    lo, hi = axis.get_view_interval()
    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    if hi / max(lo, 1e-300) < 20:        # a narrow log range: label the minor ticks plainly too
        axis.set_minor_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    else:
        axis.set_minor_formatter(NullFormatter())


def _save(fig, save_path):
    """Write the PNG (when given a path) and note it on the figure (``saved_png``: what
    ``nb.figure`` shows instead of drawing the figure again)."""
    fig.saved_png = None
    if save_path:
        Path(save_path).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(save_path, dpi=110, bbox_inches="tight")
        fig.saved_png = Path(save_path)
    return fig


def plot_errors(chk, save_path=None):
    """Relative error vs the float64 reference: one panel per dtype, one column of points per implementation.

    Circles: the output; triangles: the new residual (fused add). Dashed: the dtype's tolerance.
    """
    plt = _plt()
    d = chk[chk["status"].isin(["ok", "wrong"])]
    if d.empty:
        return None
    dtypes = list(dict.fromkeys(d["dtype"]))
    impls = list(dict.fromkeys(d["impl"]))
    fig, axes = plt.subplots(1, len(dtypes), figsize=(4.6 * len(dtypes), 4.0), squeeze=False)
    for ax, dt in zip(axes.flat, dtypes):
        p = d[d["dtype"] == dt]
        for i, impl in enumerate(impls):
            g = p[p["impl"] == impl]
            if g.empty:
                continue
            jitter = (g["hidden"].rank(method="dense") - 1) * 0.08 - 0.08
            ax.scatter(i + jitter, g["err_out"].clip(lower=1e-12), color=color(impl), marker="o", s=22,
                       label="output" if i == 0 else None)
            gr = g[g["residual"]]
            if len(gr):
                ax.scatter(i + jitter[g["residual"]] + 0.25, gr["err_residual"].clip(lower=1e-12),
                           color=color(impl), marker="^", s=22, alpha=0.7,
                           label="new residual" if i == 0 else None)
        ax.axhline(p["tolerance"].iloc[0], color="red", ls="--", lw=1, label="tolerance")
        ax.set_yscale("log")
        ax.set_xticks(range(len(impls)))
        ax.set_xticklabels(impls, rotation=35, ha="right", fontsize=8)
        ax.set_ylabel("relative error ‖out − ref‖ / ‖ref‖")
        ax.set_title(dt, fontsize=10)
        ax.grid(True, axis="y", which="both", alpha=0.3)
    _header(fig, axes, "Error against the float64 reference (each point: one hidden size and token count)")
    return _save(fig, save_path)


def plot_roofline(df, mode: str, save_path=None):
    """Achieved GB/s against bytes moved (log-log), the measured copy bandwidth as the ceiling."""
    plt = _plt()
    d = _ok(df, mode)
    if d.empty:
        return None
    full = df[(df["status"] == "ok") & (df["mode"] == mode)]
    d = d.merge(full.groupby(["impl", "dtype", "residual", "hidden", "tokens"], as_index=False)
                .agg(bytes=("bytes", "first"), copy_gbps=("copy_gbps", "first")),
                on=["impl", "dtype", "residual", "hidden", "tokens"])
    d["gbps"] = d["bytes"] / (d["us_median"] * 1e-6) / 1e9      # unrounded: the CSV's gbps has 0.1 steps
    res_vals = sorted(set(d["residual"]))
    fig, axes = plt.subplots(1, len(res_vals), figsize=(6.5 * len(res_vals), 4.4), squeeze=False)
    markers = ["o", "s", "D", "v", "P", "X"]
    hiddens = sorted(set(d["hidden"]))
    for ax, r in zip(axes.flat, res_vals):
        p = d[d["residual"] == r]
        for impl, g in p.groupby("impl", sort=False):
            for k, h in enumerate(hiddens):
                gh = g[g["hidden"] == h].sort_values("bytes")
                if gh.empty:
                    continue
                ax.plot(gh["bytes"], gh["gbps"], color=color(impl), marker=markers[k % len(markers)], ms=4,
                        lw=_lw(impl, 2.0, 1.2), label=f"{impl}" if k == 0 else None)
        copy = float(p["copy_gbps"].median())
        ax.axhline(copy, color="grey", ls="--", lw=1.2)
        ax.annotate(f"measured copy bandwidth {copy:.0f} GB/s", (p["bytes"].min(), copy), xytext=(2, -3),
                    textcoords="offset points", fontsize=8, color="grey", va="top")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("bytes moved per call (x, weight, out" + (", residual in/out)" if r else ")"))
        ax.set_ylabel(f"achieved bandwidth, GB/s ({mode})")
        ax.set_title(f"{'with' if r else 'without'} residual; markers: hidden "
                     + ", ".join(f"{markers[k % len(markers)]}={h}" for k, h in enumerate(hiddens)), fontsize=9)
        ax.grid(True, which="both", alpha=0.3)
        _plain_log_ticks(ax.xaxis)
        _plain_log_ticks(ax.yaxis)
    _header(fig, axes, f"Roofline view: achieved vs measured copy bandwidth, {mode} timing")
    return _save(fig, save_path)


def plot_comparison(cmp, title: str, save_path=None):
    """Time ratio (other / base) per shape with its p20-p80 spread; filled markers: beyond the noise."""
    plt = _plt()
    if cmp is None or cmp.empty:
        return None
    panels = sorted({(m, dt, h, r) for m, dt, h, r in zip(cmp["mode"], cmp["dtype"], cmp["hidden"], cmp["residual"])})
    ncol = min(2, len(panels))
    nrow = -(-len(panels) // ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(6.5 * ncol, 4.0 * nrow), squeeze=False)
    for ax, (m, dt, h, r) in zip(axes.flat, panels):
        p = cmp[(cmp["mode"] == m) & (cmp["dtype"] == dt) & (cmp["hidden"] == h) & (cmp["residual"] == r)]
        for impl, g in p.groupby("impl", sort=False):
            g = g.groupby("tokens", as_index=False).agg(ratio=("ratio", "median"), lo=("ratio_lo", "median"),
                                                         hi=("ratio_hi", "median"),
                                                         sig=("verdict", lambda v: (v != "same (within noise)").any()))
            c = color(impl)
            ax.errorbar(g["tokens"], g["ratio"], yerr=[g["ratio"] - g["lo"], g["hi"] - g["ratio"]], color=c,
                        lw=1.2, capsize=2, label=impl, marker=None)
            ax.scatter(g["tokens"], g["ratio"], color=c, s=18, zorder=3,
                       facecolors=[c if s else "white" for s in g["sig"]])
        ax.axhline(1.0, color="grey", lw=1)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("tokens (rows)")
        ax.set_ylabel("time ratio other / base (<1: faster)")
        ax.set_title(f"{m}, hidden {h}, {dt}, {'with' if r else 'without'} residual", fontsize=9)
        ax.grid(True, which="both", alpha=0.3)
        _plain_log_ticks(ax.yaxis)
    for ax in list(axes.flat)[len(panels):]:
        ax.set_visible(False)
    _header(fig, axes, title + "\n(bars: p20-p80 spread; filled markers: difference beyond the noise)")
    return _save(fig, save_path)


def plot_target_ratios(combined, title: str, save_path=None):
    """Ours / the fastest peer per shape (``analysis.combine_ratios``), one panel per residual variant,
    one line per hidden size; the band is the min-max over the runs where there are several."""
    from .analysis import MISS
    plt = _plt()
    if combined is None or combined.empty:
        return None
    res_vals = sorted(set(combined["residual"]))
    fig, axes = plt.subplots(1, len(res_vals), figsize=(6.5 * len(res_vals), 4.2), sharey=True, squeeze=False)
    for ax, res in zip(axes.flat, res_vals):
        for h, g in combined[combined["residual"] == res].groupby("hidden"):
            g = g.sort_values("tokens")
            line, = ax.plot(g["tokens"], g["ratio"], marker="o", ms=3, label=f"hidden {h}")
            if g["runs"].max() > 1:
                ax.fill_between(g["tokens"], g["ratio_min"], g["ratio_max"], color=line.get_color(), alpha=0.15)
        ax.axhline(1.0, color="k", lw=1)
        ax.axhline(MISS, color="grey", ls=":", lw=1)
        ax.set_xscale("log", base=2)
        ax.set_xlabel("tokens (rows)")
        ax.set_title(f"{'with' if res else 'without'} residual", fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
    n = int(combined["runs"].max())
    axes.flat[0].set_ylabel("our µs / fastest peer's µs (<1: ours faster)"
                            + (f"\nmedian of {n} runs, band min-max" if n > 1 else ""))
    _header(fig, axes, title, legend_ax=axes.flat[-1])
    return _save(fig, save_path)
