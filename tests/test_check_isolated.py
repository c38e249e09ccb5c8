"""check_all in child processes (``isolated``): the same rows as in this process, an implementation
that compiles per case split among several children (``isolate.shard``), a crash in one of them
costing only its case; one Inductor compile thread per child and prewarm worker; the support probe
in the background; check and probe in the same children."""
from __future__ import annotations

import math
import multiprocessing as mp
import os
import subprocess
import sys

import pandas as pd
import pytest

from rmsnorm_lab import isolate
from rmsnorm_lab.cases import Case
from rmsnorm_lab.check import check_all
from rmsnorm_lab.impls import get_impl, registry
from rmsnorm_lab.impls.base import Impl
from rmsnorm_lab.isolate import default_jobs, shard

HERE = os.path.dirname(os.path.abspath(__file__))
CRASHY = os.path.join(HERE, "crashy_impl.py")
THREADS = os.path.join(HERE, "threads_impl.py")


def _h(hidden, dtype="float32", **kw):
    return Case(1, 3, hidden, dtype, name=f"h{hidden}{'+res' if kw.get('residual') else ''} {dtype}", **kw)


@pytest.fixture
def test_impls():
    """The test-only entries register through ``imports``; removed afterwards."""
    yield
    for n in ("crashy", "threads"):
        registry().pop(n, None)


def _per_case_jobs(monkeypatch, name):
    """Make an entry ask for one compile job per (hidden, dtype), as a per-shape compiler would."""
    monkeypatch.setattr(get_impl(name), "prewarm_jobs",
                        lambda cases, device: [(name, c.hidden, c.dtype) for c in cases])


def test_children_give_the_in_process_rows(test_impls):
    """Statuses, errors, reasons and columns match, case by case (each case's inputs from its own
    seed, seed + i, in whichever child it runs): ok, wrong (crashy answers x1.5 at 5120), error
    (crashy refuses hidden=1), skip (a weight on the CPU needs x elsewhere)."""
    cases = [_h(1), _h(33, residual=True), _h(40), _h(5120), _h(24, "float16", residual=True),
             Case(1, 3, 16, "float32", weight_device="cpu", name="weight on cpu")]
    names = ["huggingface", "torch", "crashy"]
    here = check_all(cases, names, "cpu", seed=3, imports=[CRASHY], isolated=False)
    there = check_all(cases, names, "cpu", seed=3, imports=[CRASHY], jobs=2, isolated=True)
    assert list(there.columns) == list(here.columns)
    pd.testing.assert_frame_equal(here, there)
    st = there.set_index(["case", "impl"])["status"]
    assert st["h1 float32", "crashy"] == "error" and st["h5120 float32", "crashy"] == "wrong"
    assert (st.xs("weight on cpu") == "skip").all()
    assert (there[(there["impl"] != "crashy") & (there["case"] != "weight on cpu")]["status"] == "ok").all()
    twice = check_all([_h(40), _h(40)], ["huggingface"], "cpu", seed=3, jobs=2, isolated=True)
    assert twice["err_out"][0] != twice["err_out"][1]           # the same shape, other inputs


def test_skip_rows_and_in_process_entries(monkeypatch):
    """Cases an entry cannot take are skip rows made here (no child); an entry registered in this
    process only (a child could not look it up) is checked here, also when isolated."""
    local = Impl("_local_only", "local", "test", lambda: (lambda x, w, r=None, eps=1e-6: get_impl("huggingface")
                                                            .load()(x, w, r, eps)),
                 devices=("cpu",), dtypes=("float32",))
    monkeypatch.setitem(registry(), "_local_only", local)
    monkeypatch.setattr(isolate, "run_isolated", lambda *a, **k: pytest.fail("no child expected"))
    df = check_all([_h(16, "float16"), _h(16)], ["_local_only"], "cpu", jobs=2, isolated=True)
    assert list(df["status"]) == ["skip", "ok"] and "float16 not supported" in df["reason"][0]


def test_shard_splits_compile_jobs(monkeypatch):
    """torch.compile per exact shape: one job per case; with dynamic tokens, one per (hidden, dtype,
    residual) whatever the token count: its cases stay in one child."""
    cases = [Case(1, s, h, d) for h in (8, 16, 24, 32, 40) for d in ("float32", "float16") for s in (2, 64)]
    todo = list(range(len(cases)))                                             # 20 cases
    assert shard("huggingface", cases, todo, "cpu", jobs=4) == [todo]          # no compile jobs: one child
    parts = shard("torch_compile", cases, todo, "cpu", jobs=4, per_child=8)
    assert sorted(len(p) for p in parts) == [6, 7, 7]                          # ceil(20 jobs / 8) children
    assert sorted(i for p in parts for i in p) == todo and all(p == sorted(p) for p in parts)
    parts = shard("torch_compile_dynamic", cases, todo, "cpu", jobs=4, per_child=3)
    assert len(parts) == 4 and sorted(len(p) for p in parts) == [4, 4, 6, 6]   # 10 jobs: min(4, ceil(10 / 3))
    for p in parts:                                                            # both token counts together
        graphs = [(cases[i].hidden, cases[i].dtype) for i in p]
        assert all(graphs.count(g) == 2 for g in graphs)
    assert shard("torch_compile", cases, todo, "cpu", jobs=1) == [todo]       # one at a time: one child
    assert shard("torch_compile", cases, todo, "cpu", jobs=4, per_child=20) == [todo]   # 20 jobs fit in one
    assert shard("torch_compile", cases, [3, 7], "cpu", jobs=4, per_child=1) == [[3], [7]]
    monkeypatch.setattr(get_impl("torch_compile"), "prewarm_jobs", lambda cs, device: 1 / 0)
    assert shard("torch_compile", cases, todo, "cpu", jobs=4) == [todo]       # a failing hook: one child


def test_child_cost_puts_compiling_children_first():
    """The cost model that orders children: a per-case compiler's child costs a compile per case more
    than a child of an entry that compiles nothing."""
    from rmsnorm_lab import isolate
    cases = [Case(1, s, h, "float32") for h in (8, 16, 24) for s in (2, 64)]
    todo = list(range(len(cases)))
    plain = isolate.child_cost("huggingface", todo, cases, "cpu")
    assert plain == pytest.approx(isolate.CHILD_START_S + isolate.CASE_S * len(todo))
    assert isolate.child_cost("torch_compile", todo, cases, "cpu") == pytest.approx(plain + isolate.COMPILE_S * 6)
    assert isolate.child_cost("liger", todo, cases, "cpu") == pytest.approx(plain + isolate.LIBRARY_S)
    assert isolate.child_cost("_not_registered", todo, cases, "cpu") == plain


def test_expected_faults_run_alone(monkeypatch):
    """A probe case its entry says faults the GPU context runs in a child of its own, so its crash
    restarts no other case's child; a check case (known limits on) and other refusals do not."""
    from rmsnorm_lab.impls.base import Support
    entry = get_impl("huggingface")
    monkeypatch.setattr(entry, "case_check", lambda c, d: Support.no("faults", fault=True) if c.hidden == 16
                        else Support.no("refuses") if c.hidden == 24 else Support.yes())
    cases = [Case(1, 2, h, "float32") for h in (8, 16, 24, 16)]
    limits = [False, False, False, True]
    assert isolate.expected_failures("huggingface", cases, range(4), "cpu", limits) == [1]
    assert isolate.expected_failures("_not_registered", cases, range(4), "cpu", limits) == []
    seen = []
    monkeypatch.setattr(isolate, "run_isolated", lambda name, cs, *a, **k: seen.append([c.hidden for c in cs]) or {})
    isolate.run_children([("huggingface", [0, 1, 2, 3])], cases, "cpu", jobs=2, known_limits=limits)
    assert sorted(seen) == [[8, 24, 16], [16]]
    seen.clear()
    isolate.run_children([("huggingface", [0, 1, 2, 3])], cases, "cpu", jobs=1, known_limits=limits)
    assert seen == [[8, 16, 24, 16]]                    # one at a time: one child, as before


def test_shard_splits_by_jit_compile_key(monkeypatch):
    """An entry that JIT-compiles per shape without prewarm jobs (quack's CuTe-DSL kernels) is
    split by its compile key: cases of one key stay together; quack buckets rows by powers of two."""
    cases = [Case(1, s, h, "bfloat16", residual=r) for h in (1024, 2048, 4096, 8192) for r in (False, True)
             for s in (3, 4, 100)]
    todo = list(range(len(cases)))                                             # 24 cases, 16 keys
    parts = shard("quack", cases, todo, "cuda", jobs=8, per_child=4)
    assert len(parts) == 4 and sorted(i for p in parts for i in p) == todo
    for p in parts:                                                            # 3 and 4 rows: one bucket
        keys = [(cases[i].hidden, cases[i].residual, cases[i].tokens > 4) for i in p]
        assert all(keys.count(k) == (2 if not k[2] else 1) for k in keys)
    monkeypatch.setattr(get_impl("quack"), "compile_key", None)
    assert shard("quack", cases, todo, "cuda", jobs=8, per_child=4) == [todo]  # no key: one child


def test_check_all_profiles_its_children(test_impls):
    """Where the time went: one entry per child process, with its cases and times."""
    df = check_all([_h(8), _h(16)], ["huggingface"], "cpu", jobs=2, isolated=True)
    (child,) = df.attrs["children"]
    assert child["impl"] == "huggingface" and child["cases"] == 2
    assert 0 <= child["start_s"] <= child["end_s"] and 0 <= child["case_s"] <= child["end_s"] - child["start_s"] + 0.1
    span = child["end_s"] - child["start_s"] + 0.1
    assert 0 <= child["load_s"] <= child["ready_s"] <= span and child["wait_s"] == 0    # no large case here
    assert child["ready_s"] + child["case_s"] <= span


def test_default_jobs():
    from rmsnorm_lab.device import cpu_cores
    assert default_jobs("cpu") == max(1, min(isolate.MAX_JOBS, cpu_cores()))
    assert 1 <= default_jobs("cuda") <= isolate.MAX_JOBS
    with pytest.raises(ValueError, match="jobs"):
        check_all([_h(8)], ["huggingface"], "cpu", jobs=0)
    with pytest.raises(TypeError, match="jobs"):
        check_all([_h(8)], ["huggingface"], "cpu", jobs="2")


def test_a_crash_in_one_shard_leaves_a_row_for_every_case(monkeypatch, test_impls):
    """crashy split in two children (one compile job per case, one job per child, at most jobs=2):
    its abort (h127) is that case's crash row; every other case of both children is checked."""
    isolate.import_extra(CRASHY)
    _per_case_jobs(monkeypatch, "crashy")
    monkeypatch.setattr(isolate, "COMPILES_PER_CHILD", 1)
    children = []
    real = isolate.run_isolated

    def spy(name, cases, *a, **k):
        children.append((name, [c.hidden for c in cases]))
        return real(name, cases, *a, **k)
    monkeypatch.setattr(isolate, "run_isolated", spy)
    cases = [_h(2), _h(127), _h(3, residual=True), _h(4)]
    df = check_all(cases, ["crashy"], "cpu", imports=[CRASHY], jobs=2, isolated=True)
    assert sorted(children) == [("crashy", [2, 3]), ("crashy", [127, 4])]
    assert list(df["case"]) == [c.label for c in cases]
    assert list(df["status"]) == ["ok", "crash", "ok", "ok"]
    crash = df.iloc[1]
    assert "SIGABRT" in crash["reason"] and crash["hidden"] == 127 and crash["tolerance"] > 0
    assert math.isnan(crash["err_out"]) and crash["impl"] == "crashy"


def test_one_compile_thread_in_children_and_prewarm_workers(test_impls):
    df = check_all([_h(8)], ["threads"], "cpu", imports=[THREADS], jobs=2, isolated=True)
    assert df["status"][0] == "error" and "compile_threads=1" in df["reason"][0]
    nice = min(os.nice(0) + isolate.CHILD_NICE, 19)    # children side by side yield to a build
    assert f"nice={nice}" in df["reason"][0] and df.attrs["children"][0]["nice"] == isolate.CHILD_NICE
    df = check_all([_h(8)], ["threads"], "cpu", imports=[THREADS], jobs=1, isolated=True)
    assert f"nice={os.nice(0)}" in df["reason"][0]       # one child at a time: the caller's priority
    with mp.get_context("spawn").Pool(1, initializer=_worker_init_nice) as pool:
        threads, nice = pool.apply(_threads_and_nice)
    assert threads == 1 and nice >= 5
    code = ("from rmsnorm_lab.prewarm import single_compile_thread as s; import sys; s(); s(); "
            "assert 'torch._inductor.config' not in sys.modules; "
            "import torch._inductor.config as c; assert c.compile_threads == 1, c.compile_threads")
    root = os.path.dirname(HERE)
    subprocess.run([sys.executable, "-c", code], check=True, cwd=root,
                   env={**os.environ, "PYTHONPATH": root})


def _worker_init_nice():
    from rmsnorm_lab.prewarm import worker_init
    worker_init(5)


def _threads_and_nice():
    import torch._inductor.config as inductor_config
    return inductor_config.compile_threads, os.nice(0)


def test_probe_in_the_background(test_impls):
    """probe_support(background=True) checks its arguments at once, then returns a Future whose
    result is the DataFrame a plain call returns."""
    from concurrent.futures import Future

    from rmsnorm_lab.probe import probe_support
    cases = [_h(2), _h(127)]
    fut = probe_support(["crashy"], cases, "cpu", imports=[CRASHY], background=True)
    assert isinstance(fut, Future)
    plain = probe_support(["crashy"], cases, "cpu", imports=[CRASHY])
    got = fut.result(timeout=120)
    cols = [c for c in plain.columns if c not in ("seconds", "message")]
    pd.testing.assert_frame_equal(plain[cols], got[cols])
    assert list(got["status"]) == ["ok", "crash"]
    with pytest.raises(ValueError, match="timeout_s"):
        probe_support(["crashy"], cases, "cpu", imports=[CRASHY], timeout_s=0, background=True)


def test_check_and_probe_share_children(test_impls):
    """check_and_probe gives check_all's and probe_support's rows, with one child per implementation
    for both (each loads once), and the probe's declared limits run anyway while the check's skip."""
    from rmsnorm_lab.probe import check_and_probe, probe_support

    cases = [_h(1), _h(33, residual=True), _h(5120)]
    probes = [_h(40), _h(24, "float16", residual=True), Case(1, 3, 16, "float32", weight_device="cpu", name="weight on cpu")]
    names = ["huggingface", "crashy"]
    chk_alone = check_all(cases, names, "cpu", seed=3, imports=[CRASHY], isolated=False)
    sup_alone = probe_support(names, probes, "cpu", seed=3, imports=[CRASHY], jobs=2)
    chk, sup = check_and_probe(cases, names, "cpu", seed=3, probe_cases=probes, imports=[CRASHY], jobs=2,
                               isolated=True)
    pd.testing.assert_frame_equal(chk_alone, chk)
    cols = [c for c in sup.columns if c != "seconds"]
    pd.testing.assert_frame_equal(sup_alone[cols], sup[cols])
    children = chk.attrs["children"]
    assert sorted(u["impl"] for u in children) == sorted(names)                # one child each, check and probe cases
    assert {u["impl"]: u["cases"] for u in children} == {"huggingface": 5, "crashy": 5}
    assert sup.attrs["children"] == [] and chk.attrs["wall_s"] > 0
    # in this process (the CPU default): the check here, the probe's children alongside
    chk2, sup2 = check_and_probe(cases, names, "cpu", seed=3, probe_cases=probes, imports=[CRASHY])
    pd.testing.assert_frame_equal(chk_alone, chk2)
    pd.testing.assert_frame_equal(sup_alone[cols], sup2[cols])
    assert sorted(u["impl"] for u in chk2.attrs["children"]) == sorted(names) and sup2.attrs["children"] == []
