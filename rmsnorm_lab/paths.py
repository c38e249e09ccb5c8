"""Where things are, resolved from the package (never from the working directory).

A notebook runs with its own folder as the working directory in JupyterLab and
nbval, and with the caller's in papermill; every path the lab reads or writes
goes through here so all three agree.

``RMSNORM_LAB_ROOT`` overrides the repository root (e.g. for an installed
package used from another checkout).
"""
from __future__ import annotations

import os
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent


def repo_root() -> Path:
    """The checkout holding the package (with notebooks/ and reports/), else the working directory."""
    env = os.environ.get("RMSNORM_LAB_ROOT")
    if env:
        return Path(env).expanduser().resolve()
    root = PACKAGE_DIR.parent
    if (root / "notebooks").is_dir() or (root / "pyproject.toml").exists():
        return root
    return Path.cwd().resolve()


def notebooks_dir() -> Path:
    return repo_root() / "notebooks"


def reports_dir() -> Path:
    return repo_root() / "reports"


def presets_dir() -> Path:
    return PACKAGE_DIR / "presets"


def default_results_dir(device: str | None = None, config=None) -> Path:
    """Scratch results of interactive runs: <repo>/configs/rmsnorm/notebook-<device slug> (git-ignored).

    With ``config`` (a SweepConfig) the folder name ends in a short hash of what defines the run,
    so runs of other parameters get folders of their own instead of being refused.
    """
    from .device import device_name, resolve_device, slug

    name = f"notebook-{slug(device_name(resolve_device(device)))}"
    if config is not None:
        import hashlib
        import json
        from dataclasses import asdict

        from .results import RUN_DEFAULTS, run_identity
        ident = run_identity(asdict(config), None)
        # fields at their default are left out, so a plain forward run keeps the folder it had before they existed
        ident = {k: v for k, v in ident.items() if not (k in RUN_DEFAULTS and v == RUN_DEFAULTS[k])}
        run = json.dumps(ident, sort_keys=True, default=str)
        name += "-" + hashlib.sha256(run.encode()).hexdigest()[:8]
    return repo_root() / "configs" / "rmsnorm" / name


def resolve(path) -> Path:
    """An absolute path; relative ones are taken from the repository root, '~' is expanded."""
    p = Path(str(path)).expanduser()
    return p if p.is_absolute() else (repo_root() / p)


def notebook_paths() -> list[Path]:
    """The narrative notebooks, in reading order."""
    return sorted(notebooks_dir().glob("[0-9][0-9]_*.ipynb"))
