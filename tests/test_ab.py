"""rmsnorm_lab.ab: the one interleaved A/B helper (rotating order, a fresh runner per timing, medians, ratios)."""
from __future__ import annotations

import csv

import pytest
import torch

from rmsnorm_lab import ab
from rmsnorm_lab.cases import Case
from rmsnorm_lab.timing import Timing


def _norm(x, w, r, eps):
    if r is not None:
        r.add_(x)
        x = r
    v = x.float()
    return (v * torch.rsqrt(v.pow(2).mean(-1, keepdim=True) + eps)).to(x.dtype) * w


def _slow(x, w, r, eps):
    return _norm(x, w, r, eps)


def test_rotate():
    assert ab.rotate(["a", "b", "c"], 0) == ["a", "b", "c"]
    assert ab.rotate(["a", "b", "c"], 1) == ["b", "c", "a"]
    assert ab.rotate(["a", "b", "c"], 4) == ["b", "c", "a"]
    assert ab.rotate([], 3) == []


def test_interleave_rotates_and_takes_a_fresh_runner_per_timing():
    seen = []

    def fake(runner, mode, device, budget_ms):
        seen.append((runner, runner.fn.__name__, mode))
        us = {"_norm": 10.0, "_slow": 20.0}[runner.fn.__name__] + len(seen) * 1e-3
        return Timing(us, us - 1, us + 1, 5, mode)

    x = torch.randn(4, 64)
    inputs = {"a": (x, torch.ones(64), None), "b": (x, torch.ones(64), x.clone())}
    res = ab.interleave({"fast": _norm, "slow": (_slow, True)}, inputs, modes=("cold", "eager"), device="cpu",
                        rounds=3, time_fn=fake)
    assert len(res.rows) == 3 * 2 * 2 * 2
    assert len({id(r) for r, _, _ in seen}) == len(seen)            # a new Runner every time
    first = [n for _, n, m in seen[::2]][:2]                          # round 1, input a: fast then slow
    assert first == ["_norm", "_slow"]
    assert [n for _, n, m in seen[8:12:2]] == ["_slow", "_norm"]      # round 2 starts with the other one
    s = {(r["input"], r["mode"], r["subject"]): r for r in res.summary()}
    assert s[("a", "cold", "fast")]["ratio"] == 1.0
    assert s[("a", "cold", "slow")]["ratio"] == pytest.approx(2.0, rel=1e-3)
    assert s[("b", "eager", "slow")]["rounds"] == 3
    assert s[("a", "cold", "slow")]["us_min"] <= s[("a", "cold", "slow")]["us_median"] <= s[("a", "cold", "slow")]["us_max"]
    g = res.geomean_ratios(baseline="slow")
    assert g[("cold", "fast")] == pytest.approx(0.5, rel=1e-3)
    assert "fast / slow geomean 0.5" in res.table(baseline="slow")


def test_errors_become_rows_and_the_rounds_go_on(tmp_path):
    def boom(x, w, r, eps):
        raise RuntimeError("no kernel")

    res = ab.interleave({"ok": _norm, "boom": boom}, {"a": (torch.randn(2, 32), torch.ones(32), None)},
                        device="cpu", rounds=2, budget_ms=1.0)
    errs = [r for r in res.rows if r.get("error")]
    assert len(errs) == 2 and "RuntimeError: no kernel" in errs[0]["error"]
    s = {r["subject"]: r for r in res.summary()}
    assert s["ok"]["rounds"] == 2 and s["boom"]["errors"] == 2 and s["boom"]["ratio"] != s["boom"]["ratio"]
    with open(res.to_csv(tmp_path / "ab.csv")) as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 4 and set(rows[0]) == set(ab.FIELDS)


def test_real_cpu_timing_with_cases_and_outputs_agree():
    inputs = ab.inputs_for([Case(1, 4, 64, "float32", True)], "cpu", seed=1)
    (label, (x, w, r)), = inputs.items()
    assert label == "64x4+res float32"
    outs = ab.outputs({"a": _norm, "b": _slow}, x, w, r)
    assert torch.equal(outs["a"], outs["b"])
    res = ab.interleave({"a": (_norm, True), "b": (_slow, True)}, inputs, device="cpu", rounds=2, budget_ms=1.0)
    assert all(r["us_median"] > 0 for r in res.rows)
    assert res.frame()["subject"].tolist() == ["a", "b"]


@pytest.mark.parametrize("kw, match", [
    (dict(subjects={}), "subjects"), (dict(inputs={}), "inputs"), (dict(modes=("warm",)), "modes"),
    (dict(rounds=0), "rounds"), (dict(subjects={"a": 3}), "subjects"),
])
def test_bad_arguments_name_themselves(kw, match):
    args = dict(subjects={"a": _norm}, inputs={"a": (torch.randn(2, 8), torch.ones(8), None)})
    args.update(kw)
    with pytest.raises((ValueError, TypeError), match=match):
        ab.interleave(args.pop("subjects"), args.pop("inputs"), device="cpu", **args)


def test_unknown_baseline():
    res = ab.interleave({"a": _norm}, {"i": (torch.randn(2, 8), torch.ones(8), None)}, device="cpu", rounds=1,
                        budget_ms=1.0)
    with pytest.raises(ValueError, match="baseline"):
        res.summary("zzz")
