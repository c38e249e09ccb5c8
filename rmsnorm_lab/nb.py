"""Small conveniences for the notebooks (display, progress bars); nothing here computes results."""
from __future__ import annotations

import os

BATCH_ENV = "RMSNORM_LAB_BATCH"     # set by the report runner and the nbval configuration


def batch_mode() -> bool:
    """True when the notebook runs unattended (papermill report, nbval), where progress bars are noise."""
    return os.environ.get(BATCH_ENV, "") not in ("", "0")


def want_progress(progress: bool) -> bool:
    """The progress parameter, switched off in batch runs; silences tqdm's 'IProgress not found' warning."""
    if not progress or batch_mode():
        return False
    import warnings
    warnings.filterwarnings("ignore", message="IProgress not found")
    return True


def quiet_logs() -> None:
    """Keep library noise out of the cell output: torch.compile's recompilation warnings (expected:
    one graph per shape), and tqdm's "IProgress not found" warning, which ``import tqdm.auto`` (done
    by peers' packages when they load) prints in a kernel without ipywidgets; progress bars then
    fall back to text, so the warning says nothing about the results."""
    import logging
    import warnings
    for name in ("torch._dynamo", "torch._inductor"):
        logging.getLogger(name).setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="IProgress not found")
            import tqdm.auto  # noqa: F401 - imported once here, silently; later imports are cached
    except ImportError:
        pass


def md(text: str):
    """Show Markdown in a notebook, print it elsewhere."""
    try:
        from IPython.display import Markdown, display
        display(Markdown(text))
    except ImportError:
        print(text)


def figure(fig) -> None:
    """Show a plot of ``rmsnorm_lab.plots`` once and close it: the PNG it was saved to (the inline
    backend would draw the figure a second time at the cell's end, about a second a figure on a slow
    CPU), else the figure itself. None (nothing to draw) shows nothing."""
    if fig is None:
        return
    import matplotlib.pyplot as plt
    try:
        from IPython.display import Image, display
    except ImportError:
        plt.close(fig)
        return
    png = getattr(fig, "saved_png", None)
    display(Image(filename=str(png)) if png is not None and png.is_file() else fig)
    plt.close(fig)


CHILDREN_TIMING = "children-timing.json"    # 01's child processes; the report runner moves it into timings.json


def children_timing(out_dir, **frames) -> str:
    """Where the child processes' time went (``.attrs["children"]`` of ``check.check_all``,
    ``probe.probe_support`` or ``probe.check_and_probe`` results, given by name), written to ``out_dir``; returns a one-line
    summary: per name, the children, their cases and the longest child."""
    import json
    from pathlib import Path

    data = {k: {"wall_s": df.attrs.get("wall_s"), "children": df.attrs.get("children", [])}
            for k, df in frames.items() if df is not None}
    Path(out_dir, CHILDREN_TIMING).write_text(json.dumps(data, indent=1) + "\n")
    parts = []
    for k, d in data.items():
        ch = d["children"]
        if ch:
            last = max(ch, key=lambda u: u["end_s"] - u["start_s"])
            parts.append(f"{k}: {len(ch)} children, longest {last['impl']} "
                         f"({last['cases']} cases, {last['end_s'] - last['start_s']:.1f} s)")
    return "; ".join(parts)
