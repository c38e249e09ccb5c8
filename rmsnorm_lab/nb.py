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
