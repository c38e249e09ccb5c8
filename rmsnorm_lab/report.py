"""``python -m rmsnorm_lab.report``: run the three notebooks with papermill into a report folder.

    python -m rmsnorm_lab.report [--preset auto|ci|full|PATH] [--run-name NAME] [--out DIR]

writes ``<out>/<device slug>/<run name>/``: each executed notebook (``.ipynb``),
its HTML export, and the sweep's results (``results.csv``, ``env.json``,
PNG plots, fastest/summary CSVs, the correctness and support tables) in that
same folder. ``--preset auto`` is ``ci`` (tiny, seconds) on a machine without a
GPU and ``full`` (the seed's grid) with one. Notebook 03 compares the new run
with every other run found under ``<out>``, or says there is nothing to compare.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import os
import sys
import time
from pathlib import Path

NOTEBOOKS = ["01_correctness", "02_performance_sweep", "03_compare_runs"]


class _Parser(argparse.ArgumentParser):
    def error(self, message):               # one line, exit status 2, no traceback
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="python -m rmsnorm_lab.report", description=__doc__,
                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="auto",
                   help="auto (ci without a GPU, full with one), ci, full, or a YAML parameter file (default: auto)")
    p.add_argument("--run-name", default=None, help="folder name of this run (default: <UTC date-time>-<preset>)")
    p.add_argument("--out", default=None, help="reports root (default: the repository's reports/)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: auto)")
    p.add_argument("--notebooks", nargs="+", default=NOTEBOOKS, choices=NOTEBOOKS, metavar="NAME",
                   help=f"which notebooks to run (default: all: {' '.join(NOTEBOOKS)})")
    p.add_argument("--no-html", action="store_true", help="skip the HTML export")
    return p


def resolve_preset(preset: str, device: str) -> tuple[str, dict]:
    """(preset name, parameters); 'auto' picks ci on CPU and full on CUDA."""
    from .cases import load_preset

    name = ("full" if device.startswith("cuda") else "ci") if preset == "auto" else preset
    params = load_preset(name)
    if not isinstance(params, dict):
        raise ValueError(f"preset: {name!r} must hold a mapping of parameter: value, got {type(params).__name__}")
    return Path(name).stem, params


def _notebook_params(nb_path: Path) -> set[str]:
    import papermill as pm
    return set(pm.inspect_notebook(str(nb_path)))


def export_html(ipynb: Path) -> Path:
    import nbformat
    from nbconvert import HTMLExporter

    nb = nbformat.read(str(ipynb), as_version=4)
    body, _ = HTMLExporter().from_notebook_node(nb)
    out = ipynb.with_suffix(".html")
    out.write_text(body, encoding="utf-8")
    return out


def run_report(preset: str = "auto", run_name: str | None = None, out: str | os.PathLike | None = None,
               device: str = "auto", notebooks=NOTEBOOKS, html: bool = True, log=print) -> Path:
    """Run the notebooks into ``<out>/<device slug>/<run name>/``; returns that folder.

    Raises RuntimeError naming the notebook (and its saved, partly executed copy) when one fails.
    """
    import papermill as pm

    from .device import device_name, resolve_device, slug
    from .params import validate_params
    from .paths import notebooks_dir, reports_dir

    dev = resolve_device(device)
    pname, params = resolve_preset(preset, dev)
    params = {**params, "device": device}
    validate_params({k: v for k, v in params.items()})          # a bad preset fails before anything runs
    root = Path(out).expanduser().resolve() if out else reports_dir()
    run_name = run_name or f"{_dt.datetime.now(_dt.timezone.utc):%Y%m%d-%H%M%S}-{pname}"
    if not run_name or "/" in run_name or run_name in (".", ".."):
        raise ValueError(f"--run-name: expected a folder name, got {run_name!r}")
    run_dir = root / slug(device_name(dev)) / run_name
    run_dir.mkdir(parents=True, exist_ok=True)
    log(f"report: {device_name(dev)}, preset {pname} -> {run_dir}")

    injected = {"01_correctness": {"save_dir": str(run_dir)},
                "02_performance_sweep": {"save_dir": str(run_dir), "progress": False},
                "03_compare_runs": {"run_dirs": [], "reports_root": str(root), "new_run": str(run_dir)}}
    env_before = os.environ.get("RMSNORM_LAB_BATCH")
    path_before = os.environ.get("PYTHONPATH")
    os.environ["RMSNORM_LAB_BATCH"] = "1"                        # the kernels inherit it: no progress bars
    # the kernels import this very package, also from a checkout that was never pip-installed
    pkg_parent = str(Path(__file__).resolve().parents[1])
    os.environ["PYTHONPATH"] = os.pathsep.join([pkg_parent] + ([path_before] if path_before else []))
    try:
        for name in notebooks:
            src = notebooks_dir() / f"{name}.ipynb"
            if not src.exists():
                raise FileNotFoundError(f"notebook {name}: {src} not found")
            known = _notebook_params(src)
            nb_params = {k: v for k, v in {**params, **injected.get(name, {})}.items() if k in known}
            dst = run_dir / f"{name}.ipynb"
            t0 = time.perf_counter()
            try:
                pm.execute_notebook(str(src), str(dst), parameters=nb_params, kernel_name="python3",
                                    cwd=str(src.parent), progress_bar=False, report_mode=False)
            except pm.PapermillExecutionError as e:
                if html and dst.exists():
                    export_html(dst)
                raise RuntimeError(f"notebook {name} failed in cell {e.exec_count}: {e.ename}: {e.evalue} "
                                   f"(executed copy: {dst})") from None
            if html:
                export_html(dst)
            log(f"  {name}: {time.perf_counter() - t0:.1f} s")
    finally:
        if path_before is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = path_before
        if env_before is None:
            os.environ.pop("RMSNORM_LAB_BATCH", None)
        else:
            os.environ["RMSNORM_LAB_BATCH"] = env_before
    import yaml
    (run_dir / "parameters.yaml").write_text(
        f"# preset {pname}, run by: python -m rmsnorm_lab.report {' '.join(sys.argv[1:])}\n"
        + yaml.safe_dump(params, sort_keys=False))
    return run_dir


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        run_dir = run_report(args.preset, args.run_name, args.out, args.device, args.notebooks, not args.no_html)
    except KeyboardInterrupt:
        print("interrupted: the sweep's finished points are in the run's results.csv", file=sys.stderr)
        return 130
    except (ValueError, TypeError, KeyError, FileNotFoundError, PermissionError, NotADirectoryError,
            RuntimeError) as e:
        msg = e.args[0] if isinstance(e, KeyError) and e.args else str(e)
        print(f"python -m rmsnorm_lab.report: error: {msg}", file=sys.stderr)
        return 1
    files = sorted(p.name for p in run_dir.iterdir() if p.is_file())
    print(f"report: {run_dir}\n  " + "\n  ".join(files))
    return 0


if __name__ == "__main__":
    sys.exit(main())
