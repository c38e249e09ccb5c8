"""``python -m rmsnorm_lab.report``: run the three notebooks with papermill into a report folder.

    python -m rmsnorm_lab.report [--preset auto|ci|full|targets|models|variants|training|PATH]
                                 [--set KEY=VALUE ...] [--run-name NAME] [--out DIR]

writes ``<out>/<device slug>/<run name>/``: each executed notebook (``.ipynb``),
its HTML export (formulas drawn as images: readable offline), and the sweep's
results (``results.csv``, ``env.json``, PNG plots, fastest/summary CSVs, the
correctness and support tables) in that same folder, and ``timings.json``: the
wall time of the whole run, of each notebook (kernel start, each cell, the HTML
export) and of the sweep's phases, as printed at the end. ``--preset auto`` is
``ci`` (tiny, seconds) on a machine without a GPU and ``full`` (the seed's grid)
with one. Notebook 03 compares the new run with every other run found under
``<out>`` of the same device, grid, norm variant and pass, or says there is
nothing to compare.

``--set KEY=VALUE`` (repeatable) overrides one of the preset's parameters; the
value is read as YAML (``--set variant=gemma``, ``--set hidden_sizes=[4096,8192]``,
``--set check=false``) and checked like the preset's. The overrides are recorded
in ``parameters.yaml`` and name the run folder: ``<date>-<preset>[-<variant>][-<pass>]``
and the names of the other keys set. The report sections:

    python -m rmsnorm_lab report --preset variants --set variant=gemma
    python -m rmsnorm_lab report --preset training
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import sys
import time
from pathlib import Path

NOTEBOOKS = ["01_correctness", "02_performance_sweep", "03_compare_runs"]


from .validate import OneLineParser as _Parser  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="python -m rmsnorm_lab.report", description=__doc__,
                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="auto",
                   help="auto (ci without a GPU, full with one), ci, full, targets, models (real models' shapes), "
                        "variants (the norm variants' grid), training (fwd+bwd), or a YAML parameter file "
                        "(default: auto)")
    p.add_argument("--set", dest="overrides", action="append", default=[], type=parse_override,
                   metavar="KEY=VALUE",
                   help="override a preset parameter, the value read as YAML (repeatable): e.g. --set variant=gemma "
                        "--set hidden_sizes=[4096,8192]")
    p.add_argument("--run-name", default=None,
                   help="folder name of this run (default: <UTC date-time>-<preset>, then the variant and pass "
                        "where not plain / fwd and the names of the keys set with --set)")
    p.add_argument("--out", default=None, help="reports root (default: the repository's reports/)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: auto)")
    p.add_argument("--notebooks", nargs="+", default=NOTEBOOKS, choices=NOTEBOOKS, metavar="NAME",
                   help=f"which notebooks to run (default: all: {' '.join(NOTEBOOKS)})")
    p.add_argument("--no-html", action="store_true", help="skip the HTML export")
    return p


# parameters the runner sets itself, and what sets them instead
RUNNER_KEYS = {"device": "--device", "save_dir": "--out and --run-name", "run_dirs": "--out",
               "reports_root": "--out", "new_run": "--out and --run-name", "progress": "the runner (off)"}


def _yaml_value(raw: str):
    """A --set value as YAML; '' is the empty string and 1e-6 a number (YAML 1.1 reads it as text)."""
    import re

    import yaml
    if not raw.strip():
        return ""
    value = yaml.safe_load(raw)
    if isinstance(value, str) and re.fullmatch(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+", value.strip()):
        return float(value)
    return value


def parse_override(text: str) -> tuple[str, object]:
    """``KEY=VALUE`` -> (key, the value read as YAML); argparse's type for ``--set``."""
    import yaml
    key, sep, raw = str(text).partition("=")
    key = key.strip()
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE (e.g. variant=gemma), got {text!r}")
    try:
        return key, _yaml_value(raw)
    except yaml.YAMLError as e:
        problem = getattr(e, "problem", None) or type(e).__name__
        raise argparse.ArgumentTypeError(f"{key}: the value {raw!r} is not YAML ({problem})") from None


def check_overrides(overrides) -> dict:
    """--set's (key, value) pairs (or a dict) as a dict, the last of a key winning; ValueError naming the key
    for one that is no parameter or one the runner sets itself (the values: validate_params)."""
    from .params import SCHEMA
    from .validate import suggest

    items = list(overrides.items()) if isinstance(overrides, dict) else list(overrides or [])
    out = {}
    for key, value in items:
        if key in RUNNER_KEYS:
            raise ValueError(f"--set {key}: set by the report runner; use {RUNNER_KEYS[key]}")
        if key not in SCHEMA:
            known = sorted(set(SCHEMA) - set(RUNNER_KEYS))
            raise ValueError(f"--set {key}: unknown parameter (expected one of {', '.join(known)})"
                             f"{suggest(key, known)}")
        out[key] = value
    return out


def default_run_name(pname: str, params: dict, overrides: dict, now=None) -> str:
    """``<UTC date-time>-<preset>``, then the variant and pass where not plain / fwd (qk-norm: its head size)
    and the names of the other keys set, e.g. ``20260101-120000-variants-gemma-hidden-sizes``."""
    from .device import slug
    from .points import DEFAULT_HEAD_DIM, PLAIN

    now = now or _dt.datetime.now(_dt.timezone.utc)
    variant, pass_ = params.get("variant", PLAIN), params.get("pass_", "fwd")
    parts = [variant] if variant != PLAIN else []
    parts += [pass_] if pass_ != "fwd" else []
    if variant == "qk-norm":
        parts.append(f"hd{params.get('head_dim', DEFAULT_HEAD_DIM)}")
    parts += [k for k in overrides if k not in ("variant", "pass_", "head_dim")]
    return f"{now:%Y%m%d-%H%M%S}-{pname}" + "".join(f"-{slug(str(p))}" for p in parts)


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


_MATH = None


def _math_re():
    global _MATH
    if _MATH is None:
        import re
        # $$...$$ (display) or $...$ (inline: no space inside the dollars, no digit after the closing one)
        _MATH = re.compile(r"\$\$(.+?)\$\$|(?<![\\$])\$(?=\S)([^$\n]+?)(?<=\S)\$(?!\d)", re.S)
    return _MATH


def render_tex(tex: str) -> str | None:
    """A TeX formula as an inline SVG image (matplotlib's mathtext, no network), or None where
    mathtext cannot parse it (``\\tfrac``/``\\dfrac`` are tried as ``\\frac``)."""
    import base64
    import html
    import io

    from matplotlib import mathtext
    for src in (tex, tex.replace(r"\tfrac", r"\frac").replace(r"\dfrac", r"\frac")):
        buf = io.BytesIO()
        try:
            mathtext.math_to_image(f"${' '.join(src.split())}$", buf, format="svg", dpi=100)
        except Exception:  # noqa: BLE001 - left as TeX for MathJax where it loads
            continue
        data = base64.b64encode(buf.getvalue()).decode("ascii")
        return (f'<img src="data:image/svg+xml;base64,{data}" alt="{html.escape(tex.strip(), quote=True)}" '
                f'style="vertical-align: middle">')
    return None


def prerender_math(nb) -> int:
    """Replace the TeX formulas of markdown cells by inline SVG images, so the HTML shows them offline
    (nbconvert's MathJax comes from a CDN); returns how many were rendered. A formula mathtext cannot
    draw stays TeX and is typeset by MathJax where the page can load it."""
    n = 0

    def sub(m):
        nonlocal n
        display = m.group(1) is not None
        img = render_tex(m.group(1) if display else m.group(2))
        if img is None:
            return m.group(0)
        n += 1
        return f'\n<div style="text-align: center">{img}</div>\n' if display else img
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            parts = cell.source.split("`")            # code spans (odd parts) keep their dollars
            cell.source = "`".join(p if i % 2 else _math_re().sub(sub, p) for i, p in enumerate(parts))
    return n


def export_html(ipynb: Path) -> Path:
    """The executed notebook as HTML beside it, formulas pre-rendered (readable offline)."""
    import nbformat
    from nbconvert import HTMLExporter

    nb = nbformat.read(str(ipynb), as_version=4)
    prerender_math(nb)
    body, _ = HTMLExporter().from_notebook_node(nb)
    out = ipynb.with_suffix(".html")
    out.write_text(body, encoding="utf-8")
    return out


def notebook_timings(ipynb: Path) -> dict:
    """Per-cell wall seconds that papermill recorded in an executed notebook, each with the cell's first line."""
    import nbformat

    nb = nbformat.read(str(ipynb), as_version=4)
    cells = []
    for i, c in enumerate(nb.cells):
        d = (c.get("metadata", {}).get("papermill") or {}).get("duration")
        if c.cell_type == "code" and d is not None:
            code = [ln.strip() for ln in c.source.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
            heavy = [ln for ln in code if any(h in ln for h in ("run_sweep(", "check_and_probe("))]
            plain = [ln for ln in code if not ln.startswith(("import ", "from "))]
            first = (heavy or plain or code or [""])[0]
            cells.append({"cell": i, "s": round(float(d), 2), "code": first[:80]})
    return {"cells_s": round(sum(c["s"] for c in cells), 2), "cells": cells}


def _sweep_phases(run_dir: Path) -> dict:
    try:
        env = json.loads((run_dir / "env.json").read_text())
    except (OSError, ValueError):
        return {}
    out = {k: env[k] for k in ("wall_s", "prewarm") if k in env}
    if env.get("phases"):
        out["phases"] = env["phases"]
    return out


def format_timings(t: dict) -> str:
    """The table printed at the end of a report run."""
    lines = [f"wall time: {t['total_s']:.1f} s ({t['device']}, preset {t['preset']})"]
    for name, nb in t["notebooks"].items():
        busy = nb.get("host_cpu_busy")
        lines.append(f"  {name}: {nb['wall_s']:.1f} s (kernel start and I/O {nb['overhead_s']:.1f} s, "
                     f"HTML {nb.get('html_s', 0):.1f} s" + (f", host CPU {busy:.0%} busy" if busy is not None else "")
                     + ")")
        for c in sorted(nb["cells"], key=lambda c: -c["s"])[:4]:
            if c["s"] >= 0.5:
                lines.append(f"    cell {c['cell']:>2}: {c['s']:7.1f} s  {c['code']}")
    for name, b in (t.get("build_ahead") or {}).items():
        lines.append(f"  built ahead: {name}" + (f" by {b['ready_s']:.1f} s" if b.get("ready_s") is not None else "")
                     + (f" ({b['error'][:100]})" if b.get("error") else ""))
    for key, label in (("prewarm_ahead", "compiled ahead during 01"), ("prewarm", "sweep's own prewarm")):
        pw = t.get(key) or t.get("sweep", {}).get(key)
        if pw and pw.get("jobs"):
            lines.append(f"  {label}: {pw['jobs']} jobs, {pw['failed']} failed, {pw['seconds']:.1f} s"
                         + (f" ({pw['first_error'][:100]})" if pw.get("first_error") else ""))
    phases = t.get("sweep", {}).get("phases", {})
    if phases:
        groups: dict = {}
        for k, v in phases.items():
            groups[k.split(":")[0]] = groups.get(k.split(":")[0], 0.0) + v
        lines.append("  sweep phases: " + ", ".join(f"{k} {v:.1f} s" for k, v in
                                                   sorted(groups.items(), key=lambda kv: -kv[1])))
    return "\n".join(lines)


def cpu_ticks() -> tuple | None:
    """(busy, total) CPU ticks of the whole host so far (Linux ``/proc/stat``), or None elsewhere."""
    try:
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = v[3] + (v[4] if len(v) > 4 else 0)          # idle + iowait
    return sum(v) - idle, sum(v)


def busy_between(a, b) -> float | None:
    """The host's CPU busy fraction between two ``cpu_ticks()`` readings (None when unknown)."""
    if a is None or b is None or b[1] <= a[1]:
        return None
    return round((b[0] - a[0]) / (b[1] - a[1]), 3)


def _build_entry(name: str) -> tuple:
    """Load implementation ``name`` in this (spawned) process, which builds what it builds on load; returns
    (the wall clock when done, "" or the error as text)."""
    try:
        from .impls import get_impl
        get_impl(name).load()
        return time.time(), ""
    except Exception as e:  # noqa: BLE001 - reported, never fatal
        return time.time(), f"{type(e).__name__}: {e}"[:300]


class BuildAhead:
    """Entries that build native code when they load (``Impl.load_builds``: FlashInfer's CUDA kernels,
    built by nvcc on first use; on an H200 host done 43 s after a report's start, imports included)
    start building in a process of their own as the report starts, at full priority. The correctness
    notebook's child for such an entry then waits on the library's build lock and loads the result,
    instead of starting the build itself some seconds later, among the other children. CUDA only; a
    failure here is never the report's (the child loads, or reports why not)."""

    def __init__(self, pool, results: dict, t0: float):
        self.pool, self.results, self.t0 = pool, results, t0

    @classmethod
    def start(cls, params: dict, device: str):
        if not str(device).startswith("cuda"):
            return None
        try:
            import multiprocessing as mp

            from .impls import get_impl, resolve_names
            names = [n for n in resolve_names(params.get("impls", "all"))
                     if get_impl(n).load_builds and get_impl(n).available(device)]
            if not names:
                return None
            t0 = time.time()
            pool = mp.get_context("spawn").Pool(len(names))
            return cls(pool, {n: pool.apply_async(_build_entry, (n,)) for n in names}, t0)
        except Exception:  # noqa: BLE001 - the notebook's child builds it
            return None

    def done(self) -> dict:
        """{name: {"ready_s": seconds from the report's start until built, or None, "error": text}}
        of the builds finished by now; those still running are stopped."""
        out = {}
        for name, res in self.results.items():
            ready, err = None, "still building when it was no longer needed"
            if res.ready():
                try:
                    end, err = res.get()
                    ready = round(end - self.t0, 1)
                except Exception as e:  # noqa: BLE001
                    err = f"{type(e).__name__}: {e}"
            out[name] = {"ready_s": ready, "error": err[:300]}
        self.stop()
        return out

    def stop(self) -> None:
        self.pool.terminate()
        self.pool.join()


class AheadPrewarm:
    """The sweep's compile jobs (``rmsnorm_lab.prewarm``) run in worker processes while the
    correctness notebook runs, which times nothing; the sweep then finds the on-disk caches warm.
    CUDA only; a failure here is never the report's (the sweep compiles what is missing).

    The workers run at a lower CPU priority (``NICE``): the correctness notebook's child processes
    (its check and its support probe run in the same children, 1.5 per core) come
    first and the prewarm takes the cores they leave idle. Fewer workers instead would leave cores
    idle whenever the notebook is not compiling, and the sweep would wait longer for the rest.
    """
    NICE = 19

    def __init__(self, pool, result, jobs: int):
        self.pool, self.result, self.jobs, self.t0 = pool, result, jobs, time.perf_counter()

    @staticmethod
    def applies(params: dict, device: str) -> bool:
        """CUDA, and the plain forward: the jobs are its graphs, nothing a variant or a backward uses."""
        return (str(device).startswith("cuda") and params.get("variant", "plain") == "plain"
                and params.get("pass_", "fwd") == "fwd")

    @classmethod
    def start(cls, params: dict, device: str):
        if not cls.applies(params, device):
            return None
        try:
            import multiprocessing as mp

            from .prewarm import default_workers, jobs_for, warm_job, worker_init
            from .sweep import SweepConfig
            grid = {k: params[n] for k, n in (("hidden", "hidden_sizes"), ("batch", "batch_sizes"),
                                               ("seq", "seq_lens")) if n in params}
            cfg = SweepConfig(**grid, dtypes=[params["dtype"]], residual=params["residual"], impls=params["impls"],
                              tokens=params.get("tokens") or None, models=params.get("models") or None,
                              models_split=params.get("models_split", "validate"), device=device).validate()
            jobs = jobs_for(cfg.cases(), cfg.impls, cfg.device)
            if not jobs:
                return None
            workers = min(default_workers(), len(jobs))
            pool = mp.get_context("spawn").Pool(workers, initializer=worker_init, initargs=(cls.NICE,))
            try:
                return cls(pool, pool.map_async(warm_job, jobs, chunksize=1), len(jobs))
            except Exception:
                pool.terminate()            # no workers left behind
                pool.join()
                raise
        except Exception:  # noqa: BLE001 - the sweep compiles what is missing
            return None

    def wait(self) -> dict:
        t_wait = time.perf_counter()
        try:
            errs = [e for e in self.result.get() if e]
        except Exception as e:  # noqa: BLE001
            errs = [f"{type(e).__name__}: {e}"]
        finally:
            self.stop()
        return {"jobs": self.jobs, "failed": len(errs), "seconds": round(time.perf_counter() - self.t0, 1),
                "waited_s": round(time.perf_counter() - t_wait, 1), "first_error": errs[0][:300] if errs else ""}

    def stop(self) -> None:
        self.pool.terminate()
        self.pool.join()


def run_report(preset: str = "auto", run_name: str | None = None, out: str | os.PathLike | None = None,
               device: str = "auto", notebooks=NOTEBOOKS, html: bool = True, log=print, overrides=None) -> Path:
    """Run the notebooks into ``<out>/<device slug>/<run name>/``; returns that folder.

    overrides: parameters replacing the preset's (``--set``: a dict or (key, value) pairs), checked with it.
    Raises ValueError / TypeError naming the parameter before anything runs, RuntimeError naming the
    notebook (and its saved, partly executed copy) when one fails.
    """
    import papermill as pm

    from . import nb as nb_mod
    from .device import device_name, resolve_device, slug
    from .params import validate_params
    from .paths import notebooks_dir, reports_dir

    t_run = time.perf_counter()
    dev = resolve_device(device)
    pname, params = resolve_preset(preset, dev)
    overrides = check_overrides(overrides)
    params = {**params, **overrides, "device": device}
    validate_params({k: v for k, v in params.items()})          # a bad preset or --set fails before anything runs
    root = Path(out).expanduser().resolve() if out else reports_dir()
    run_name = run_name or default_run_name(pname, params, overrides)
    if not run_name or "/" in run_name or run_name in (".", ".."):
        raise ValueError(f"--run-name: expected a folder name, got {run_name!r}")
    run_dir = root / slug(device_name(dev)) / run_name
    run_dir.mkdir(parents=True, exist_ok=True)
    set_text = " ".join(f"--set {k}={_flow(v)}" for k, v in overrides.items())
    log(f"report: {device_name(dev)}, preset {pname}{' ' + set_text if set_text else ''} -> {run_dir}")

    from .device import cpu_cores, physical_cores
    timings = {"device": device_name(dev), "preset": pname, "overrides": overrides,
               "host": {"cpu_cores": cpu_cores(), "physical_cores": physical_cores()}, "notebooks": {}}
    injected = {"01_correctness": {"save_dir": str(run_dir)},
                "02_performance_sweep": {"save_dir": str(run_dir), "progress": False},
                "03_compare_runs": {"run_dirs": [], "reports_root": str(root), "new_run": str(run_dir)}}
    env_before = os.environ.get("RMSNORM_LAB_BATCH")
    path_before = os.environ.get("PYTHONPATH")
    os.environ["RMSNORM_LAB_BATCH"] = "1"                        # the kernels inherit it: no progress bars
    # the kernels import this very package, also from a checkout that was never pip-installed
    pkg_parent = str(Path(__file__).resolve().parents[1])
    os.environ["PYTHONPATH"] = os.pathsep.join([pkg_parent] + ([path_before] if path_before else []))
    ahead = builds = None
    try:
        if {"01_correctness", "02_performance_sweep"} & set(notebooks):    # the notebooks that load peers
            builds = BuildAhead.start(params, dev)           # nvcc builds start before the first notebook
        if "02_performance_sweep" in notebooks and notebooks[0] != "02_performance_sweep":
            ahead = AheadPrewarm.start(params, dev)          # compiles 02's sweep while 01 checks
        for name in notebooks:
            if name == "02_performance_sweep" and ahead is not None:
                timings["prewarm_ahead"] = ahead.wait()
                ahead = None
                if not timings["prewarm_ahead"]["failed"]:    # every job compiled: the sweep need not look again
                    injected[name]["prewarm"] = 0
            src = notebooks_dir() / f"{name}.ipynb"
            if not src.exists():
                raise FileNotFoundError(f"notebook {name}: {src} not found")
            known = _notebook_params(src)
            nb_params = {k: v for k, v in {**params, **injected.get(name, {})}.items() if k in known}
            dst = run_dir / f"{name}.ipynb"
            t0, ticks0 = time.perf_counter(), cpu_ticks()
            try:
                pm.execute_notebook(str(src), str(dst), parameters=nb_params, kernel_name="python3",
                                    cwd=str(src.parent), progress_bar=False, report_mode=False)
            except pm.PapermillExecutionError as e:
                if html and dst.exists():
                    export_html(dst)
                raise RuntimeError(f"notebook {name} failed in cell {e.exec_count}: {e.ename}: {e.evalue} "
                                   f"(executed copy: {dst})") from None
            run_s = time.perf_counter() - t0
            nbt = notebook_timings(dst)
            nbt["overhead_s"] = round(run_s - nbt["cells_s"], 2)
            if html:
                t1 = time.perf_counter()
                export_html(dst)
                nbt["html_s"] = round(time.perf_counter() - t1, 2)
            nbt["wall_s"] = round(time.perf_counter() - t0, 2)
            nbt["host_cpu_busy"] = busy_between(ticks0, cpu_ticks())
            children = run_dir / nb_mod.CHILDREN_TIMING
            if children.exists():                               # 01's child processes (check and probe)
                try:
                    nbt["children"] = json.loads(children.read_text())
                except ValueError:
                    pass
                children.unlink()
            timings["notebooks"][name] = nbt
            log(f"  {name}: {nbt['wall_s']:.1f} s")
            if builds is not None:                              # the first notebook loaded what they built
                timings["build_ahead"] = builds.done()
                builds = None
    finally:
        if ahead is not None:
            ahead.stop()
        if builds is not None:
            builds.stop()
        if path_before is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = path_before
        if env_before is None:
            os.environ.pop("RMSNORM_LAB_BATCH", None)
        else:
            os.environ["RMSNORM_LAB_BATCH"] = env_before
        # written also when a notebook failed: the notebooks that ran, and how long they took
        timings["total_s"] = round(time.perf_counter() - t_run, 2)
        timings["sweep"] = _sweep_phases(run_dir)
        (run_dir / "timings.json").write_text(json.dumps(timings, indent=1) + "\n")
        log(format_timings(timings))
    import yaml
    (run_dir / "parameters.yaml").write_text(
        f"# preset {pname}, run by: python -m rmsnorm_lab report {' '.join(_report_args())}\n"
        + (f"# overrides of the preset: {set_text}\n" if set_text else "")
        + yaml.safe_dump(params, sort_keys=False))
    return run_dir


def _flow(value) -> str:
    """A value as one line of YAML (what --set takes back)."""
    import yaml
    return yaml.safe_dump(value, default_flow_style=True, width=10**6).strip().removesuffix("\n...").strip()


def _report_args() -> list:
    """This process's command-line arguments after the command name, from the front door or the module."""
    args = sys.argv[1:]
    return args[1:] if args[:1] == ["report"] else args


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        run_dir = run_report(args.preset, args.run_name, args.out, args.device, args.notebooks, not args.no_html,
                             overrides=args.overrides)
    except KeyboardInterrupt:
        print("interrupted: the sweep's finished points are in the run's results.csv", file=sys.stderr)
        return 130
    except (ValueError, TypeError, KeyError, FileNotFoundError, PermissionError, NotADirectoryError,
            RuntimeError) as e:
        from .validate import exit_with_error
        return exit_with_error("python -m rmsnorm_lab report", e)
    files = sorted(p.name for p in run_dir.iterdir() if p.is_file())
    print(f"report: {run_dir}\n  " + "\n  ".join(files))
    return 0


if __name__ == "__main__":
    sys.exit(main())
