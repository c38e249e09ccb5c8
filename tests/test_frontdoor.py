"""The command line's front door and a new user's first runs, on CPU.

One ``python -m rmsnorm_lab`` with commands; a results directory holds one
configuration; clear refusals (exit 2, one line) where nothing can run; dtype
messages list exactly what is accepted; our kernel runs on CPU through the
Triton interpreter in the CLI as in the notebooks; progress lines when piped;
a CPU default grid; files written with the usual mode; the CPU's model name.
"""
from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from cli_helpers import assert_one_line_exit_2 as _one_line_exit_2
from cli_helpers import run_cli as _cli
from rmsnorm_lab import cli

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--device", "cpu", "--impls", "torch", "--batch-size", "1", "--seq-len", "2", "--timing", "eager",
        "--no-check", "--no-plots"]






def _env(**extra):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "MPLBACKEND": "Agg", **extra}
    return {k: v for k, v in env.items() if v is not None}


# ---------------------------------------------------------------- one front door

def test_run_is_the_default_command(capsys, tmp_path):
    for argv in (["--hidden-size", "0"], ["run", "--hidden-size", "0"]):
        code, _, err = _cli(argv, capsys)
        _one_line_exit_2(code, err)
        assert "argument --hidden-size: expected a positive integer, got 0" in err


def test_list_command_and_flag(capsys):
    for argv in (["list", "--device", "cpu"], ["--list", "--device", "cpu"]):
        code, out, err = _cli(argv, capsys)
        assert code == 0, err
        assert "huggingface" in out and "yes" in out


@pytest.mark.parametrize("argv,part", [
    (["bogus"], "unknown command 'bogus'"),
    (["list", "--device", "tpu"], "device: expected 'auto', 'cpu', 'cuda' or 'cuda:N', got 'tpu'"),
    (["report", "--no-such-flag"], "unrecognized arguments: --no-such-flag"),
    (["probe", "--impls", "huggingfase", "--device", "cpu"], "huggingfase"),
])
def test_command_errors_are_one_line_exit_2(argv, part, capsys):
    code, _, err = _cli(argv, capsys)
    _one_line_exit_2(code, err)
    assert part in err


def test_missing_command_module_is_said_clearly(capsys, monkeypatch):
    monkeypatch.setitem(cli.COMMANDS, "tune", ("rmsnorm_lab._no_such_module", "search"))
    code, _, err = _cli(["tune", "--help"], capsys)
    _one_line_exit_2(code, err)
    assert "tune: error: rmsnorm_lab._no_such_module is not part of this installation" in err


def test_pyproject_has_one_entry_point_and_spdx_license():
    import tomllib
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert data["project"]["scripts"] == {"rmsnorm-lab": "rmsnorm_lab.cli:main"}
    assert data["project"]["license"] == "Apache-2.0"           # SPDX string, not the deprecated table
    req = [r for r in data["build-system"]["requires"] if r.startswith("setuptools")]
    assert req and int(req[0].split(">=")[1].split(".")[0]) >= 77


# ---------------------------------------------------------------- nothing can run: say so, exit 2, at once

@pytest.mark.parametrize("argv,part", [
    (["--timing", "graph"], "--timing: graph timing needs CUDA"),
    (["--impls", "flashinfer"], "--impls: nothing can run on cpu"),
])
def test_nothing_to_run_is_refused(argv, part, capsys, tmp_path):
    code, _, err = _cli(["--device", "cpu", *argv, "--save-path", str(tmp_path), "--no-plots"], capsys)
    _one_line_exit_2(code, err)
    assert part in err
    assert not (tmp_path / "results.csv").exists()


def test_api_refuses_graph_on_cpu():
    from rmsnorm_lab.sweep import run_sweep
    with pytest.raises(ValueError, match="modes: graph timing needs CUDA"):
        run_sweep(device="cpu", modes=["graph"], impls=["torch"], hidden=[16], batch=[1], seq=[1])


def test_cli_dtype_message(capsys, tmp_path):
    code, _, err = _cli(["--device", "cpu", "--dtype", "float8", "--save-path", str(tmp_path)], capsys)
    _one_line_exit_2(code, err)
    assert ("argument --dtype: unknown dtype 'float8'; expected one of float32, float16, bfloat16, float64 "
            "(or fp32, float, f32, fp16, half, f16, bf16, fp64, double, f64)") in err


def test_dtype_message_lists_exactly_what_is_accepted():
    from rmsnorm_lab.validate import DTYPE_ALIASES, SWEEP_DTYPES, dtype_name
    with pytest.raises(ValueError) as e:
        dtype_name("float8", SWEEP_DTYPES)
    msg = str(e.value)
    listed = msg.split("expected one of ")[1].split(";")[0]
    hints = msg.split("did you mean ")[1] if "did you mean" in msg else ""
    for name in SWEEP_DTYPES:
        assert name in listed
    for alias, canon in DTYPE_ALIASES.items():
        assert (alias in listed.replace(",", " ").replace(")", " ").split()) == (canon in SWEEP_DTYPES), alias
    for quoted in hints.split("'")[1::2]:                   # every suggestion is accepted
        assert dtype_name(quoted, SWEEP_DTYPES)


def test_params_refuse_graph_on_cpu():
    from rmsnorm_lab.params import validate_params
    with pytest.raises(ValueError, match="parameter 'modes': graph timing needs CUDA"):
        validate_params({"device": "cpu", "modes": ["graph"]})
    assert validate_params({"device": "cpu", "modes": ["graph", "eager"]})["modes"] == ["graph", "eager"]


# ---------------------------------------------------------------- one configuration per results directory

def test_cli_refuses_another_configuration_and_resumes_the_same(capsys, tmp_path):
    save = ["--save-path", str(tmp_path)]
    code, _, err = _cli([*TINY, "--hidden-size", "16", *save], capsys)
    assert code == 0, err
    rows = (tmp_path / "results.csv").read_text()
    code, _, err = _cli([*TINY, "--hidden-size", "32", *save], capsys)
    _one_line_exit_2(code, err)
    assert "--save-path" in err and "another configuration" in err and "hidden [16] there, [32] now" in err
    assert (tmp_path / "results.csv").read_text() == rows              # nothing mixed in
    code, _, err = _cli([*TINY, "--hidden-size", "16", *save], capsys)  # the same command again: resumes
    assert code == 0, err
    assert (tmp_path / "results.csv").read_text().count("\n") == rows.count("\n")


def test_api_refuses_another_configuration(tmp_path):
    from rmsnorm_lab.results import stored_run
    from rmsnorm_lab.sweep import run_sweep
    kw = dict(device="cpu", impls=["torch"], batch=[1], seq=[2], modes=["eager"], budget_ms=1, check=False,
              progress=False, save_path=str(tmp_path))
    run_sweep(hidden=[16], **kw)
    assert stored_run(tmp_path)["hidden"] == [16]
    with pytest.raises(ValueError, match="save_path: .* holds results of another configuration"):
        run_sweep(hidden=[16], seed=1, **kw)
    assert len(run_sweep(hidden=[16], **kw)) == 2            # the same configuration: resumed (residual both)


def test_results_without_a_recorded_configuration_are_not_mixed(tmp_path):
    from rmsnorm_lab.results import check_same_run
    (tmp_path / "results.csv").write_text("impl,status\ntorch,ok\n")
    with pytest.raises(ValueError, match="without a recorded configuration"):
        check_same_run(tmp_path, {"hidden": [16]})
    check_same_run(tmp_path / "empty", {"hidden": [16]})          # no results: nothing to mix


def test_files_have_the_usual_mode(tmp_path):
    from rmsnorm_lab.results import ResultStore
    store = ResultStore(tmp_path)
    store.add({"impl": "torch", "status": "ok"})
    store.write_meta({"device": "cpu"})
    mask = os.umask(0)
    os.umask(mask)
    for name in ("results.csv", "env.json"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o666 & ~mask, name


def test_notebook_default_folder_is_per_configuration():
    from rmsnorm_lab.paths import default_results_dir
    from rmsnorm_lab.sweep import SweepConfig
    a = default_results_dir("cpu", SweepConfig(device="cpu", hidden=[16]).validate())
    b = default_results_dir("cpu", SweepConfig(device="cpu", hidden=[32]).validate())
    c = default_results_dir("cpu", SweepConfig(device="cpu", hidden=[16]).validate())
    assert a != b and a == c and a.name.startswith("notebook-cpu-")


# ---------------------------------------------------------------- our kernel on CPU, as in the notebooks

def test_cli_runs_our_kernel_through_the_interpreter_without_being_told():
    p = subprocess.run([sys.executable, "-m", "rmsnorm_lab", "list", "--device", "cpu"], capture_output=True,
                       text=True, timeout=120, env=_env(TRITON_INTERPRET=None), cwd=ROOT)
    assert p.returncode == 0, p.stderr
    assert "Triton interpreter (TRITON_INTERPRET=1)" in p.stdout
    line = [ln for ln in p.stdout.splitlines() if ln.startswith("triton ")]
    assert line and " yes " in line[0] + " ", p.stdout


def test_interpreter_helper_says_when_it_is_too_late():
    code = ("import os, sys; os.environ.pop('TRITON_INTERPRET', None)\n"
            "from rmsnorm_lab.device import use_triton_interpreter_on_cpu as u\n"
            "assert u('cuda') is None\n"
            "import types; m = types.ModuleType('rmsnorm_lab.kernels._fake'); m.triton = object()\n"
            "sys.modules[m.__name__] = m\n"
            "print(u('cpu')); print(os.environ.get('TRITON_INTERPRET'))\n")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                       env=_env(TRITON_INTERPRET=None), cwd=ROOT)
    assert p.returncode == 0, p.stderr
    assert "imported before TRITON_INTERPRET=1" in p.stdout and p.stdout.strip().endswith("None")


def test_interpreter_helper_keeps_an_explicit_choice(monkeypatch):
    from rmsnorm_lab.device import use_triton_interpreter_on_cpu
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    assert "skipped on cpu" in use_triton_interpreter_on_cpu("cpu")
    assert os.environ["TRITON_INTERPRET"] == "0"


# ---------------------------------------------------------------- progress and the CPU default grid

def test_line_progress_estimates_time_left():
    import io

    from rmsnorm_lab.progress import LineProgress, fmt_seconds
    buf = io.StringIO()
    p = LineProgress(3, stream=buf)
    for i in range(3):
        p.set_postfix_str(f"torch {i}")
        p.update(1)
    lines = buf.getvalue().splitlines()
    assert len(lines) == 3 and lines[0].startswith("sweep [1/3] torch 0;") and "left" in lines[0]
    assert lines[-1].endswith("done")
    assert (fmt_seconds(5), fmt_seconds(125), fmt_seconds(7300)) == ("5s", "2m05s", "2h01m")


def test_piped_sweep_prints_a_line_per_point(tmp_path):
    code = ("from rmsnorm_lab.sweep import run_sweep\n"
            "run_sweep(device='cpu', impls=['huggingface', 'torch'], hidden=[16], batch=[1], seq=[1, 2],"
            " residual=[False], modes=['eager'], budget_ms=1, check=False)\n")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                       env=_env(TRITON_INTERPRET="1"), cwd=ROOT)
    assert p.returncode == 0, p.stderr
    lines = [ln for ln in p.stderr.splitlines() if ln.startswith("sweep [")]
    assert len(lines) == 4 and lines[0].startswith("sweep [1/4]") and "left" in lines[0], p.stderr


def test_cpu_default_grid(capsys, monkeypatch, tmp_path):
    import pandas as pd

    import rmsnorm_lab.sweep as sweep
    from rmsnorm_lab.device import CPU_GRID
    monkeypatch.setattr("rmsnorm_lab.device._said", set())       # notes are said once per process
    seen = []

    def fake(cfg=None, **kw):
        seen.append(cfg)
        return pd.DataFrame(columns=["status", "mode"])
    monkeypatch.setattr(sweep, "run_sweep", fake)
    code, out, err = _cli(["--device", "cpu", "--impls", "torch", "--no-check", "--no-plots",
                           "--save-path", str(tmp_path)], capsys)
    assert code == 0, err
    cfg = seen[0]
    assert (cfg.hidden, cfg.batch, cfg.seq) == (CPU_GRID["hidden"], CPU_GRID["batch"], CPU_GRID["seq"])
    assert "note: CPU grid: hidden" in out

    from rmsnorm_lab.seed import get_benchmark
    seen.clear()
    monkeypatch.setattr(sweep, "run_sweep", lambda cfg=None, **kw: seen.append(cfg) or pd.DataFrame(
        columns=["status", "mode", "residual"]))
    get_benchmark(True, device="cpu", impls=["torch"], seq=[4]).run()
    assert (seen[0].hidden, seen[0].batch, seen[0].seq) == (CPU_GRID["hidden"], CPU_GRID["batch"], [4])
    assert "CPU grid" in capsys.readouterr().out


# ---------------------------------------------------------------- validation details

def test_check_inputs_mixed_dtypes():
    import torch

    from rmsnorm_lab.validate import check_inputs
    x = torch.zeros(2, 8, dtype=torch.bfloat16)
    w = torch.ones(8, dtype=torch.float32)
    r = torch.zeros(2, 8, dtype=torch.float16)
    with pytest.raises(TypeError, match="weight: expected dtype torch.bfloat16"):
        check_inputs(x, w)
    assert check_inputs(x, w, r, mixed_dtypes=True) == 1e-6
    with pytest.raises(TypeError, match="weight: expected a floating-point tensor"):
        check_inputs(x, torch.ones(8, dtype=torch.int32), mixed_dtypes=True)
    with pytest.raises(TypeError, match="residual: expected a floating-point tensor"):
        check_inputs(x, w, torch.zeros(2, 8, dtype=torch.int64), mixed_dtypes=True)


def test_cpu_model_name(tmp_path):
    from rmsnorm_lab.device import cpu_model, device_name
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: Intel(R)  Xeon(R) CPU @ 2.20GHz\n")
    assert cpu_model(str(info)) == "Intel(R) Xeon(R) CPU @ 2.20GHz"
    assert cpu_model(str(tmp_path / "missing")) != ""
    if Path("/proc/cpuinfo").exists() and "model name" in Path("/proc/cpuinfo").read_text():
        assert "unknown" not in device_name("cpu")


def test_quiet_logs_imports_tqdm_auto_without_a_warning():
    code = ("import warnings, sys; warnings.simplefilter('error')\n"
            "from rmsnorm_lab import nb; nb.quiet_logs(); assert 'tqdm.auto' in sys.modules\n")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=_env(),
                       cwd=ROOT)
    assert p.returncode == 0, p.stderr
