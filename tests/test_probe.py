"""Probe mode: crash isolation (an implementation that aborts its process), the
statuses, the CSV, and a small support matrix on CPU."""
import csv
import os
import subprocess
import sys

import pandas as pd
import pytest
import torch

import rmsnorm_lab as L
from rmsnorm_lab.probe import CRASH_ENV, ProbeCase, default_cases, support_matrix

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CASES = ["hidden=1", "hidden=127", "hidden=3584 +res", "hidden=5120", "3-D +res", "transposed"]


def test_crash_isolation_and_every_status(monkeypatch, tmp_path):
    monkeypatch.setenv(CRASH_ENV, "1")           # _crash: 127 aborts, 1 refuses, 5120 is wrong
    df = L.probe_support(["_crash", "huggingface"], cases=CASES, device="cpu", timeout_s=60, save_path=tmp_path)
    assert len(df) == 2 * len(CASES)
    st = df.set_index(["impl", "case"])
    crash = st.loc[("_crash", "hidden=127")]
    assert crash["status"] == "crash"
    assert "SIGABRT" in crash["message"] and "Aborted" in crash["message"]
    refused = st.loc[("_crash", "hidden=1")]
    assert refused["status"] == "refused" and "ValueError: x: _crash refuses hidden=1" in refused["message"]
    wrong = st.loc[("_crash", "hidden=5120")]
    assert wrong["status"] == "wrong" and abs(wrong["error"] - 0.5) < 1e-2 and "output error" in wrong["message"]
    # the cases after the abort ran in a fresh child
    for c in ("hidden=3584 +res", "3-D +res", "transposed"):
        assert st.loc[("_crash", c), "status"] == "ok", st.loc[("_crash", c)].to_dict()
    # a peer's crash never touches another implementation
    assert set(st.loc["huggingface", "status"]) == {"ok"}
    # saved, readable, the same rows
    saved = pd.read_csv(tmp_path / "support_matrix.csv")
    assert list(saved["status"]) == list(df["status"]) and list(saved["case"]) == list(df["case"])
    m = support_matrix(df)
    assert m.loc["_crash", "hidden=127"] == "crash" and m.loc["_crash", "hidden=5120"].startswith("wrong (")
    assert list(m.columns) == CASES


def test_timeout_is_a_crash_and_the_rest_runs(monkeypatch, tmp_path):
    monkeypatch.setenv(CRASH_ENV, "127=hang")
    df = L.probe_support(["_crash"], cases=["hidden=1", "hidden=127", "hidden=3584"], device="cpu", timeout_s=3)
    st = dict(zip(df["case"], df["status"]))
    assert st == {"hidden=1": "ok", "hidden=127": "crash", "hidden=3584": "ok"}
    assert "timed out after 3 s (case 'hidden=127')" in df.set_index("case").loc["hidden=127", "message"]


def test_crash_impl_hidden_from_registry(monkeypatch):
    monkeypatch.delenv(CRASH_ENV, raising=False)
    with pytest.raises(KeyError, match="unknown implementation '_crash'"):
        L.probe_support(["_crash"], cases=["hidden=1"], device="cpu")
    monkeypatch.setenv(CRASH_ENV, "1")
    assert "_crash" not in L.registry() and "_crash" not in [r["impl"] for r in L.list_impls("cpu")]


def test_small_matrix_on_cpu(tmp_path):
    names = ["huggingface", "torch", "triton", "vllm"]
    df = L.probe_support(names, device="cpu", timeout_s=120, save_path=tmp_path / "m.csv")
    cases = default_cases()
    assert len(df) == len(names) * len(cases)
    assert set(df["status"]) <= {"ok", "wrong", "refused", "crash", "skip"}
    st = df.set_index(["impl", "case"])
    for c in cases:
        for n in ("huggingface", "torch", "triton"):
            row = st.loc[(n, c.name)]
            if c.large:
                assert row["status"] == "skip" and "needs CUDA" in row["message"]
            elif c.dtype == "float64":
                continue
            else:
                assert row["status"] == "ok", (n, c.name, row.to_dict())
    assert st.loc[("triton", "float64 +res"), "status"] == "skip"
    assert "float64 not supported" in st.loc[("triton", "float64 +res"), "message"]
    assert st.loc[("torch", "float64 +res"), "status"] == "ok"
    # an implementation that cannot run here: every case a skip with the reason
    assert set(st.loc["vllm", "status"]) == {"skip"}
    assert all("needs CUDA" in m for m in st.loc["vllm", "message"])
    # the Triton kernel copies non-contiguous inputs with a warning (recorded, not hidden)
    assert "not contiguous" in st.loc[("triton", "transposed"), "note"]
    with open(tmp_path / "m.csv", newline="") as f:
        assert len(list(csv.DictReader(f))) == len(df)


def test_custom_case_dict_and_probecase():
    df = L.probe_support("torch", cases=[{"shape": (2, 3, 33), "dtype": "fp16", "layout": "strided_rows",
                                          "residual": "alias"}, ProbeCase("tiny", (1, 1), "float32")],
                         device="cpu")
    assert list(df["status"]) == ["ok", "ok"]
    assert df["case"][0] == "2x3x33 float16 strided_rows res=alias"


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
    df = L.probe_support(["huggingface", "triton"], cases=["hidden=3584", "2^31+ elements"], device="cuda",
                         timeout_s=300)
    st = df.set_index(["impl", "case"])["status"]
    assert st[("triton", "hidden=3584")] == "ok"
    assert st[("triton", "2^31+ elements")] in ("ok", "skip")   # skip only when the GPU lacks memory


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_fault_is_a_crash_and_the_rest_runs(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "0")     # a real CUDA fault, not the interpreter's CPU segfault
    monkeypatch.setenv(CRASH_ENV, "127=fault")
    df = L.probe_support(["_crash"], cases=["hidden=1", "hidden=127", "hidden=3584"], device="cuda", timeout_s=120)
    st = dict(zip(df["case"], df["status"]))
    assert st == {"hidden=1": "ok", "hidden=127": "crash", "hidden=3584": "ok"}, df.to_dict("records")
    assert "illegal memory access" in df.set_index("case").loc["hidden=127", "message"].lower()
