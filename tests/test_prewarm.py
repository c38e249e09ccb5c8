"""rmsnorm_lab.prewarm on CPU: it collects each entry's jobs once, runs them through the entry, and a
failing job is reported, not raised. (Which jobs an entry asks for is tested with that entry.)"""
from __future__ import annotations

import pickle

import pytest

from rmsnorm_lab.cases import Case
from rmsnorm_lab.impls import get_impl, registry
from rmsnorm_lab.impls.base import Impl
from rmsnorm_lab.prewarm import jobs_for, prewarm, prewarm_cases, warm_job


def _entry(monkeypatch, name, jobs=None, ran=None):
    impl = Impl(name, name, "test", lambda: None, devices=("cpu", "cuda"))
    if jobs is not None:
        impl.prewarm_jobs = lambda cases, device: [(name, c.hidden, c.residual, device) for c in cases] \
            if jobs == "per-case" else jobs
    if ran is not None:
        impl.run_prewarm_job = ran.append
    monkeypatch.setitem(registry(), name, impl)
    return impl


def test_jobs_for_asks_each_entry_once_per_job(monkeypatch):
    _entry(monkeypatch, "_pw_a", "per-case")
    _entry(monkeypatch, "_pw_b", [])
    cases = [Case(1, t, h, "float16", res) for h in (64, 128) for t in (1, 16) for res in (False, True)]
    jobs = jobs_for(cases + cases[:3], ["_pw_a", "_pw_b"], "cuda")
    assert jobs == list(dict.fromkeys(("_pw_a", c.hidden, c.residual, "cuda") for c in cases))
    assert len(jobs) == 4                 # tokens do not matter to this entry: one job per (hidden, residual)
    assert jobs_for(cases, ["_pw_b"], "cuda") == []
    pickle.dumps(jobs)                    # jobs travel to spawned workers


def test_a_job_must_name_its_entry(monkeypatch):
    _entry(monkeypatch, "_pw_bad", [("someone_else", 1)])
    with pytest.raises(ValueError, match="first element must be the implementation's name"):
        jobs_for([Case(1, 1, 64)], ["_pw_bad"], "cuda")


def test_warm_job_runs_through_the_entry(monkeypatch):
    ran: list = []
    _entry(monkeypatch, "_pw_run", ran=ran)
    assert warm_job(("_pw_run", 64, True)) is None and ran == [("_pw_run", 64, True)]
    assert "tuple starting with an implementation's name" in warm_job(("",)[1:])


def test_failures_are_reported_not_raised():
    assert "_no_such_impl" in warm_job(("_no_such_impl", 1))
    assert prewarm([("_no_such_impl", 1)], workers=0) == {"jobs": 1, "failed": 0, "seconds": 0.0, "first_error": ""}
    got = prewarm([("_no_such_impl", 1)], workers=1)          # fails in the spawned worker
    assert got["jobs"] == 1 and got["failed"] == 1 and "_no_such_impl" in got["first_error"]


def test_nothing_is_compiled_ahead_off_cuda():
    assert prewarm_cases([Case(1, 1, 64)], list(registry()), "cpu")["jobs"] == 0
    assert get_impl("huggingface")         # the registry is untouched by the tests above
