"""Plots that read results and compute nothing of their own."""
from __future__ import annotations

from pathlib import Path

STYLE = {  # stable colours per implementation
    "huggingface": "#1f77b4", "torch": "#7f7f7f", "torch_compile": "#8c564b", "flashinfer": "#2ca02c",
    "flashinfer_cuda": "#98df8a", "vllm": "#d62728", "liger": "#9467bd", "quack": "#ff7f0e",
    "triton": "#000000",
}


def _plt():
    import matplotlib
    if matplotlib.get_backend().lower() not in ("module://matplotlib_inline.backend_inline", "inline"):
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _ok(df, mode):
    d = df[(df["status"] == "ok") & (df["mode"] == mode)].copy()
    d = d.groupby(["impl", "dtype", "residual", "hidden", "tokens"], as_index=False).agg(
        us_median=("us_median", "median"), us_p20=("us_p20", "median"), us_p80=("us_p80", "median"),
        pct_copy=("pct_copy", "median"), speedup_vs_hf=("speedup_vs_hf", "median"))
    return d


def plot_metric(df, mode: str, metric: str = "us_median", save_path=None, title: str | None = None):
    """One panel per (hidden, residual): metric vs tokens, one line per implementation (p20-p80 band for µs)."""
    plt = _plt()
    d = _ok(df, mode)
    if d.empty:
        return None
    panels = sorted({(h, r, dt) for h, r, dt in zip(d["hidden"], d["residual"], d["dtype"])})
    ncol = min(2, len(panels))
    nrow = -(-len(panels) // ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(6.5 * ncol, 4.2 * nrow), squeeze=False)
    ylabel = {"us_median": f"time per call, µs ({mode})", "pct_copy": "% of measured copy bandwidth",
              "speedup_vs_hf": "speedup vs HuggingFace (×)"}[metric]
    for ax, (h, r, dt) in zip(axes.flat, panels):
        p = d[(d["hidden"] == h) & (d["residual"] == r) & (d["dtype"] == dt)]
        for impl, g in p.groupby("impl", sort=False):
            g = g.sort_values("tokens")
            kw = dict(color=STYLE.get(impl), lw=2.2 if impl == "triton" else 1.4, marker="o", ms=3)
            ax.plot(g["tokens"], g[metric], label=impl, **kw)
            if metric == "us_median":
                ax.fill_between(g["tokens"], g["us_p20"], g["us_p80"], color=STYLE.get(impl), alpha=0.15, lw=0)
        ax.set_xscale("log", base=2)
        if metric == "us_median" or metric == "speedup_vs_hf":
            ax.set_yscale("log")
        if metric == "pct_copy":
            ax.set_ylim(0, 105)
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
    if save_path:
        Path(save_path).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(save_path, dpi=110, bbox_inches="tight")
    return fig


def save_all(df, out_dir) -> list[str]:
    """latency / %-of-copy / speedup PNGs for every timing mode in the results."""
    plt = _plt()
    out = []
    for mode in sorted(set(df.loc[df["status"] == "ok", "mode"])):
        for metric, stem in (("us_median", "latency"), ("pct_copy", "bandwidth"), ("speedup_vs_hf", "speedup")):
            p = Path(out_dir) / f"{stem}-{mode}.png"
            fig = plot_metric(df, mode, metric, p)
            if fig is not None:
                plt.close(fig)
                out.append(str(p))
    return out
