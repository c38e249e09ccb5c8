"""The support matrix and its isolation: an implementation that aborts, hangs, refuses or answers
wrong (the test-only ``crashy`` entry of tests/crashy_impl.py), the statuses, the CSV, the
default cases on CPU, the CLI."""
import csv
import multiprocessing as mp
import os
import subprocess
import sys
import time

import pandas as pd
import pytest
import torch

import rmsnorm_lab as L
from rmsnorm_lab.cases import Case
from rmsnorm_lab.check import STATUSES
from rmsnorm_lab.device import interpreter_on
from rmsnorm_lab.impls import registry
from rmsnorm_lab.probe import default_cases, support_matrix

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CRASHY = os.path.join(ROOT, "tests", "crashy_impl.py")


def _h(hidden, **kw):
    return Case(1, 3, hidden, "float32", ndim=2, name=f"h{hidden}" + ("+res" if kw.get("residual") else ""), **kw)


@pytest.fixture
def crashy():
    """Registers ``crashy`` here (the children import it through ``imports``); removed afterwards."""
    yield [CRASHY]
    registry().pop("crashy", None)


def test_crash_isolation_and_every_status(crashy, tmp_path):
    cases = [_h(1), _h(127), _h(33, residual=True), _h(5120), _h(40, residual=True)]
    df = L.probe_support(["crashy", "huggingface"], cases=cases, device="cpu", timeout_s=60, save_path=tmp_path,
                         imports=crashy)
    assert len(df) == 2 * len(cases) and set(df["status"]) <= set(STATUSES)
    st = df.set_index(["impl", "case"])
    crash = st.loc[("crashy", "h127")]
    assert crash["status"] == "crash"
    assert "SIGABRT" in crash["message"] and "Aborted" in crash["message"]
    error = st.loc[("crashy", "h1")]
    assert error["status"] == "error" and "ValueError: x: crashy refuses hidden=1" in error["message"]
    wrong = st.loc[("crashy", "h5120")]
    assert wrong["status"] == "wrong" and abs(wrong["error"] - 0.5) < 1e-2 and "output error" in wrong["message"]
    # the cases after the abort ran in a fresh child
    for c in ("h33+res", "h40+res"):
        assert st.loc[("crashy", c), "status"] == "ok", st.loc[("crashy", c)].to_dict()
    assert set(st.loc["huggingface", "status"]) == {"ok"}      # a peer's crash never touches another
    saved = pd.read_csv(tmp_path / "support_matrix.csv")
    assert list(saved["status"]) == list(df["status"]) and list(saved["case"]) == list(df["case"])
    m = support_matrix(df)
    assert m.loc["crashy", "h127"] == "crash" and m.loc["crashy", "h5120"].startswith("wrong (")
    assert list(m.columns) == [c.name for c in cases]


def test_timeout_is_a_crash_and_the_rest_runs(crashy):
    df = L.probe_support(["crashy"], cases=[_h(2), _h(129), _h(3)], device="cpu", timeout_s=10, imports=crashy)
    assert dict(zip(df["case"], df["status"])) == {"h2": "ok", "h129": "crash", "h3": "ok"}, df["message"].tolist()
    assert "timed out after 10 s (case 'h129')" in df.set_index("case").loc["h129", "message"]


def test_parallel_children_give_the_same_rows(crashy, capsys):
    """jobs=2 runs two implementations' children at once: the same rows in the same order as jobs=1,
    and crashy's abort (h127) leaves huggingface's child, running beside it, untouched."""
    cases = [_h(2), _h(127), _h(3, residual=True)]
    names = ["crashy", "huggingface"]
    one = L.probe_support(names, cases=cases, device="cpu", timeout_s=60, imports=crashy, jobs=1)
    two = L.probe_support(names, cases=cases, device="cpu", timeout_s=60, imports=crashy, jobs=2, progress=True)
    cols = [c for c in one.columns if c not in ("seconds", "message")]
    pd.testing.assert_frame_equal(one[cols], two[cols])
    assert list(two["impl"]) == ["crashy"] * 3 + ["huggingface"] * 3
    assert list(two["case"]) == ["h2", "h127", "h3+res"] * 2
    assert list(two["status"]) == ["ok", "crash", "ok", "ok", "ok", "ok"]
    assert "SIGABRT" in two["message"][1]
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("probe ")]
    assert len(lines) == 6 and all(ln.split()[1] in names for ln in lines)
    with pytest.raises(ValueError, match="jobs"):
        L.probe_support(names, cases=cases, device="cpu", imports=crashy, jobs=0)
    with pytest.raises(TypeError, match="jobs"):
        L.probe_support(names, cases=cases, device="cpu", imports=crashy, jobs="2")


def _hold_lock(path, log, hold_s):
    from rmsnorm_lab.isolate import exclusive
    with exclusive(path):
        t0 = time.time()
        time.sleep(hold_s)
        with open(log, "a") as f:
            f.write(f"{t0} {time.time()}\n")


def _die_holding(path, ready):
    from rmsnorm_lab.isolate import exclusive
    with exclusive(path):
        open(ready, "w").close()
        time.sleep(60)


def test_large_case_lock_serializes_processes(tmp_path):
    """The lock the children take around a 2**31+ element case: two processes never hold it at once,
    and a holder that dies releases it."""
    pytest.importorskip("fcntl")
    ctx = mp.get_context("spawn")
    lock, log = str(tmp_path / "large.lock"), str(tmp_path / "log.txt")
    procs = [ctx.Process(target=_hold_lock, args=(lock, log, 0.5)) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    (a0, a1), (b0, b1) = sorted(tuple(map(float, ln.split())) for ln in open(log).read().splitlines())
    assert a1 <= b0, ((a0, a1), (b0, b1))
    ready = tmp_path / "ready"
    p = ctx.Process(target=_die_holding, args=(lock, str(ready)))
    p.start()
    deadline = time.time() + 60
    while not ready.exists() and time.time() < deadline:
        time.sleep(0.05)
    assert ready.exists()
    p.kill()
    p.join(10)
    t0 = time.time()
    _hold_lock(lock, log, 0)
    assert time.time() - t0 < 5


def test_waiting_for_the_large_case_lock_does_not_time_out(tmp_path):
    """A child that reported ``wait`` (blocked on the lock) is not killed by its case's time-out."""
    from rmsnorm_lab.isolate import _watch
    out = tmp_path / "out.jsonl"
    out.write_text('{"i": 0, "event": "wait"}\n')
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(1.5)"])
    assert _watch(proc, out, 0.1, lambda i, row: None) == (0, 0, "")
    out.write_text('{"event": "ready", "load_s": 0.25}\n{"i": 0, "event": "wait"}\n')   # where the time went
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(1.0)"])
    phases: dict = {}
    _watch(proc, out, 0.1, lambda i, row: None, phases)
    assert phases["load_s"] == 0.25 and 0 <= phases["ready_s"] < 1.0 and "wait_s" not in phases  # still waiting
    out.write_text('{"event": "ready"}\n{"i": 0, "event": "start"}\n')
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    rc, current, timed_out = _watch(proc, out, 0.3, lambda i, row: None)
    assert current == 0 and timed_out == "timed out after 0.3 s"


def test_test_impl_lives_in_tests_only():
    registry().pop("crashy", None)
    assert "crashy" not in registry()
    with pytest.raises(KeyError, match="unknown implementation 'crashy'"):
        L.probe_support(["crashy"], cases=[_h(2)], device="cpu")
    import rmsnorm_lab.probe as P
    src = open(P.__file__).read() + open(os.path.join(ROOT, "rmsnorm_lab", "isolate.py")).read()
    assert "RMSNORM_LAB_TEST" not in src and "crash_rmsnorm" not in src


def test_default_cases_cover_what_breaks_peers():
    cases = default_cases()
    assert len(cases) >= 35 and len({c.name for c in cases}) == len(cases)
    by = {c.name: c for c in cases}
    assert by["misaligned x"].misaligned == "x" and by["misaligned residual"].misaligned == "residual"
    assert by["misaligned weight"].misaligned == "weight"
    assert by["weight float32"].weight_dtype == "float32" and by["weight float16"].weight_dtype == "float16"
    assert by["residual float32"].residual_dtype == "float32" and by["weight on cpu"].weight_device == "cpu"
    assert by["broadcast weight"].weight_broadcast and by["eps=0 zero row"].eps == 0.0
    assert {65536, 131072} <= {c.hidden for c in cases}
    assert any(c.residual and c.hidden % 8 for c in cases)
    for c in cases:
        assert Case.from_dict(c.to_dict()) == c


# (case, {impl: status}) on CPU; our kernel is ok or a clear refusal that names the argument
CPU_EXPECT = {"weight on cpu": "skip", "2^31+ elements": "skip", "2^31+ elements +res": "skip"}


def test_default_matrix_on_cpu(tmp_path):
    names = ["huggingface", "torch", "triton", "vllm"]
    df = L.probe_support(names, device="cpu", timeout_s=300, save_path=tmp_path / "m.csv")
    cases = default_cases()
    assert len(df) == len(names) * len(cases)
    assert set(df["status"]) <= set(STATUSES)
    st = df.set_index(["impl", "case"])
    for c in cases:
        for n in ("huggingface", "torch", "triton"):
            row = st.loc[(n, c.name)]
            if c.name in CPU_EXPECT:
                assert row["status"] == "skip" and row["message"], (n, c.name)
            elif n == "triton":
                assert row["status"] in ("ok", "error", "skip"), (c.name, row.to_dict())
                if row["status"] == "error":      # a refusal names the argument
                    assert any(a in row["message"] for a in ("x:", "weight", "residual", "eps")), row.to_dict()
            elif c.dtype != "float64":
                assert row["status"] == "ok", (n, c.name, row.to_dict())
    assert "needs CUDA" in st.loc[("huggingface", "2^31+ elements"), "message"]
    # our kernel on CPU tensors: the interpreter refuses float64 by name; without it, a CPU tensor is refused
    triton_f64 = st.loc[("triton", "float64 +res"), "message"]
    assert ("float64 not supported" if interpreter_on() else "needs CUDA") in triton_f64, triton_f64
    assert st.loc[("torch", "float64 +res"), "status"] == "ok"
    assert set(st.loc["vllm", "status"]) == {"skip"}
    assert all("needs CUDA" in m or "another device" in m for m in st.loc["vllm", "message"])
    if interpreter_on():                  # our kernel ran on the CPU tensors: it notes the copy it made
        assert "not contiguous" in st.loc[("triton", "transposed"), "note"]
    with open(tmp_path / "m.csv", newline="") as f:
        assert len(list(csv.DictReader(f))) == len(df)


def test_custom_case_dict_and_case():
    df = L.probe_support("torch", cases=[{"batch": 2, "seq": 3, "hidden": 33, "dtype": "fp16",
                                          "layout": "strided_rows", "residual": True, "residual_is_x": True},
                                         Case(1, 1, 1, "float32", name="tiny")], device="cpu")
    assert list(df["status"]) == ["ok", "ok"]
    assert df["case"][0] == "2x3x33 float16 +res=x layout=strided_rows"


def test_probe_cli(tmp_path):
    env = {**os.environ, "PYTHONPATH": ROOT}
    p = subprocess.run([sys.executable, "-m", "rmsnorm_lab.probe", "--impls", "huggingface", "--cases", "hidden=1",
                        "3-D", "--device", "cpu", "--save-path", str(tmp_path)],
                       capture_output=True, text=True, env=env, timeout=120)
    assert p.returncode == 0, p.stderr
    assert "hidden=1" in p.stdout and (tmp_path / "support_matrix.csv").exists()
    p = subprocess.run([sys.executable, "-m", "rmsnorm_lab.probe", "--impls", "huggingfase", "--device", "cpu"],
                       capture_output=True, text=True, env=env, timeout=120)
    assert p.returncode == 2 and "did you mean 'huggingface'" in p.stderr
    assert len(p.stderr.strip().splitlines()) == 1 and "Traceback" not in p.stderr


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_probe_on_gpu_runs_large_cases(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "0")     # the children compile real kernels (conftest sets 1 for CI)
    df = L.probe_support(["huggingface", "triton"], cases=["hidden=3584", "2^31+ elements", "misaligned x",
                                                           "weight float32"], device="cuda", timeout_s=300)
    st = df.set_index(["impl", "case"])["status"]
    assert st[("triton", "hidden=3584")] == "ok"
    assert st[("triton", "2^31+ elements")] in ("ok", "skip")   # skip only when the GPU lacks memory
    assert st[("triton", "misaligned x")] in ("ok", "error") and st[("triton", "weight float32")] in ("ok", "error")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_fault_is_a_crash_and_the_rest_runs(monkeypatch, crashy):
    monkeypatch.setenv("TRITON_INTERPRET", "0")     # a real CUDA fault, not the interpreter's CPU segfault
    df = L.probe_support(["crashy"], cases=[_h(2), _h(131), _h(3)], device="cuda", timeout_s=120, imports=crashy)
    assert dict(zip(df["case"], df["status"])) == {"h2": "ok", "h131": "crash", "h3": "ok"}, df.to_dict("records")
    assert "illegal memory access" in df.set_index("case").loc["h131", "message"].lower()
