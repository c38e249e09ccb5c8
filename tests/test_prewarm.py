"""rmsnorm_lab.prewarm on CPU: which jobs a sweep needs, and that a failing job is reported, not raised."""
from __future__ import annotations

import pickle

from rmsnorm_lab.cases import Case
from rmsnorm_lab.kernels.config import LaunchConfig
from rmsnorm_lab.kernels.tables import pick
from rmsnorm_lab.prewarm import jobs_for, prewarm, warm_job


def test_jobs_for_covers_each_shape_and_table_config_once():
    cases = [Case(1, t, h, "float16", res) for h in (2048, 4096) for t in (1, 16, 4096) for res in (False, True)]
    jobs = jobs_for(cases + cases[:3], ["torch_compile", "triton", "vllm"])
    tc = [j for j in jobs if j[0] == "tc"]
    k = [j for j in jobs if j[0] == "triton"]
    assert len(tc) == len(cases) + 3 and ("tc", 1, 16, 4096, True, "float16") in tc
    assert len(k) == len(set(k))
    for c in cases:
        assert ("triton", c.hidden, c.residual, "float16", pick(c.hidden, c.tokens, 2, c.residual)) in k
    f32 = Case(1, 600, 4000, "float32", False)        # a table miss: the heuristic, with 4-byte elements
    assert jobs_for([f32], ["triton"]) == [("triton", 4000, False, "float32", pick(4000, 600, 4, False))]
    assert pick(4000, 600, 4, False) != pick(4000, 600, 2, False)
    assert jobs_for(cases, ["vllm"]) == []
    pickle.dumps(jobs)                  # jobs travel to spawned workers


def test_failures_are_reported_not_raised():
    assert "unknown job kind" in warm_job(("zz",))
    assert prewarm([("triton", 64, False, "float16", LaunchConfig(rows=1, warps=1))], workers=0) == \
        {"jobs": 1, "failed": 0, "seconds": 0.0, "first_error": ""}
    got = prewarm([("triton", 64, False, "float16", LaunchConfig(rows=1, warps=1))], workers=1)   # no CUDA here: that job fails
    assert got["jobs"] == 1 and got["failed"] == 1 and "('triton', 64" in got["first_error"]
