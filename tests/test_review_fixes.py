"""Behaviours fixed in review: compile limits lifted in one place, shared SM-count cache, timing buffers,
child processes ended when the parent is interrupted."""
import pytest

torch = pytest.importorskip("torch")


def test_lift_recompile_limits_raises_every_limit():
    """torch.compile subjects (forward, variants, backward) lift the per-function and the total limits alike,
    so a grid of many shapes never falls back to eager."""
    import torch._dynamo

    from rmsnorm_lab.impls.torch_impls import lift_recompile_limits
    cfg = torch._dynamo.config
    names = [n for n in ("recompile_limit", "cache_size_limit", "accumulated_recompile_limit",
                         "accumulated_cache_size_limit") if hasattr(cfg, n)]
    saved = {n: getattr(cfg, n) for n in names}
    try:
        for n in names:
            setattr(cfg, n, 8)
        lift_recompile_limits(5000)
        assert all(getattr(cfg, n) == 5000 for n in names)
        lift_recompile_limits(100)          # never lowers a limit
        assert all(getattr(cfg, n) == 5000 for n in names)
    finally:
        for n, v in saved.items():
            setattr(cfg, n, v)


def test_backward_hf_forward_is_the_registry_function():
    from rmsnorm_lab import backward
    from rmsnorm_lab.impls.torch_impls import hf_rmsnorm
    assert backward.hf_forward is hf_rmsnorm


def test_fast_cpu_cold_makes_its_flush_buffer_once(monkeypatch):
    """The CPU cold timing (both harnesses) keeps one cache-flush buffer: later points neither allocate one
    nor read sysfs again."""
    from rmsnorm_lab import timing
    monkeypatch.setattr(timing, "_FLUSH", {})
    calls = []
    real_empty = torch.empty

    def counting_empty(*a, **kw):
        calls.append(a)
        return real_empty(*a, **kw)
    x, w = torch.randn(4, 64), torch.ones(64)
    runner = timing.Runner(lambda x, w, r, eps: x * w, x, w, None, 1e-6, False)
    monkeypatch.setattr(torch, "empty", counting_empty)
    for harness in timing.HARNESSES:
        for _ in range(3):
            t = timing.time_runner(runner, "cold", "cpu", budget_ms=5.0, harness=harness)
            assert t.n >= 1 and t.median_us > 0
    assert len(calls) == 2          # one buffer per harness


def test_isolated_child_is_ended_when_the_parent_stops_reading(monkeypatch):
    """A parent interrupted while its child runs (here: the log callback raises) ends the child
    instead of leaving it running (the next case would hang for an hour)."""
    import os
    import subprocess

    from rmsnorm_lab import isolate
    from rmsnorm_lab.cases import Case
    from rmsnorm_lab.impls import registry

    crashy = os.path.join(os.path.dirname(os.path.abspath(__file__)), "crashy_impl.py")
    started = []
    real_popen = subprocess.Popen

    def recording_popen(*a, **kw):
        p = real_popen(*a, **kw)
        started.append(p)
        return p
    monkeypatch.setattr(isolate.subprocess, "Popen", recording_popen)

    def log(i, row):
        raise KeyboardInterrupt

    cases = [Case(1, 3, h, "float32", ndim=2, name=f"h{h}") for h in (2, 129)]
    try:
        isolate.import_extra(crashy)
        with pytest.raises(KeyboardInterrupt):
            isolate.run_isolated("crashy", cases, "cpu", timeout_s=600, imports=[crashy], log=log)
    finally:
        registry().pop("crashy", None)
    assert len(started) == 1 and started[0].poll() is not None


def test_checker_flags_a_changed_weight_even_for_in_place_entries():
    """A weight written by the call is ``wrong`` (no entry documents it), for in-place entries too, and the
    caller's weight (shared by every entry in check_all) is never changed."""
    from rmsnorm_lab.cases import Case, make_inputs
    from rmsnorm_lab.check import check_impl
    from rmsnorm_lab.impls import Impl, register, registry
    from rmsnorm_lab.impls.torch_impls import hf_rmsnorm

    def scales_weight(x, w, r=None, eps=1e-6):
        out = hf_rmsnorm(x, w, r, eps)
        w.mul_(2)
        return out
    try:
        for name, inplace in (("w_scribble", False), ("w_scribble_inplace", True)):
            register(Impl(name, name, "test", lambda: scales_weight, devices=("cpu",), requires=("torch",),
                          inplace_residual=inplace))
            for res in (False, True):
                case = Case(1, 3, 16, "float32", res)
                inputs = make_inputs(case, "cpu", 0)
                w0 = inputs[1].clone()
                row = check_impl(name, case, "cpu", inputs=inputs)
                assert row["status"] == "wrong", row
                assert "changed an input it does not document changing" in row["reason"]
                assert torch.equal(inputs[1], w0)
        assert check_impl("huggingface", Case(1, 3, 16, "float32", True), "cpu")["status"] == "ok"
    finally:
        for name in ("w_scribble", "w_scribble_inplace"):
            registry().pop(name, None)


@pytest.mark.parametrize("eps, err", [("1e-6", TypeError), (0.0, ValueError), (float("nan"), ValueError),
                                      (True, TypeError)])
def test_variant_kernels_check_eps_as_every_other_entry(eps, err):
    """The variant kernels refuse a bad eps with validate.check_eps's error (naming eps)."""
    from rmsnorm_lab.kernels.variants import gemma_rmsnorm
    with pytest.raises(err, match="^eps: "):
        gemma_rmsnorm(torch.randn(2, 8), torch.randn(8), None, eps)


def test_clone_layout_copies_broadcast_and_offset_views():
    from rmsnorm_lab.check import clone_layout
    base = torch.randn(9)
    for t in (base[:1].expand(8), base[1:], base.view(3, 3)[:, :2]):
        c = clone_layout(t)
        assert torch.equal(c, t) and c.stride() == t.stride() and c.storage_offset() == t.storage_offset()
        assert c.data_ptr() != t.data_ptr()


def test_use_table_reads_a_rewritten_file_again(tmp_path):
    """use_table(path) takes the file as it is now, also after an earlier use_table of the same path."""
    import json

    from rmsnorm_lab.kernels import tables as kt
    from rmsnorm_lab.kernels.config import LaunchConfig
    p = tmp_path / "table.json"
    try:
        p.write_text(json.dumps({"configs": {"64:8:0": {"rows": 2}}}))
        kt.use_table(p)
        assert kt.pick(64, 8, 2, False) == LaunchConfig(rows=2)
        p.write_text(json.dumps({"configs": {"64:8:0": {"rows": 4}}}))
        kt.use_table(p)
        assert kt.pick(64, 8, 2, False) == LaunchConfig(rows=4)
    finally:
        kt.use_table(None)


def test_ab_inputs_never_merge_two_cases():
    """Two cases that would share a label (same hidden x tokens, other batch x seq) are refused, or kept
    apart by their names."""
    from rmsnorm_lab import ab
    from rmsnorm_lab.cases import Case
    with pytest.raises(ValueError, match="cases: two cases have the input label '64x4 float32'"):
        ab.inputs_for([Case(1, 4, 64, "float32"), Case(2, 2, 64, "float32")], "cpu")
    got = ab.inputs_for([Case(1, 4, 64, "float32", name="1x4"), Case(2, 2, 64, "float32", name="2x2")], "cpu")
    assert list(got) == ["1x4", "2x2"] and got["2x2"][0].shape == (2, 2, 64)


def test_variant_and_training_launches_read_the_launchers_device_cache(monkeypatch):
    """SM counts and PDL support of a GPU are asked once, in kernels.launch.LAUNCHER, for every kernel of ours
    (a GPU faked here: index 1 current)."""
    from types import SimpleNamespace

    from rmsnorm_lab.kernels import variants as kv
    from rmsnorm_lab.kernels.launch import LAUNCHER
    asked = []

    def props(idx):
        asked.append(idx)
        return SimpleNamespace(multi_processor_count=100 + idx)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 1)
    monkeypatch.setattr(torch.cuda, "get_device_properties", props)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda idx=None: (9, 0))
    LAUNCHER.reset()
    try:
        assert kv.sm_count("cuda") == 101 and kv.sm_count("cuda:1") == 101 and kv.sm_count("cuda:0") == 100
        assert LAUNCHER.sm_count(torch.device("cuda", 1)) == 101
        assert asked == [1, 0]
        from rmsnorm_lab.kernels import _rmsnorm_variants
        assert kv.pdl_ok("cuda") == (_rmsnorm_variants.gdc_wait is not None)
        assert kv.sm_count("cpu") == 4 and kv.pdl_ok("cpu") is False
    finally:
        LAUNCHER.reset()


def test_variant_kernels_refuse_cpu_without_the_interpreter_as_the_plain_kernel(monkeypatch):
    """CPU tensors without TRITON_INTERPRET=1: UnsupportedError naming the argument, in every kernel family."""
    from rmsnorm_lab.kernels import variants as kv
    from rmsnorm_lab.kernels.rmsnorm import triton_rmsnorm
    from rmsnorm_lab.validate import UnsupportedError
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    x, w = torch.randn(2, 8), torch.randn(8)
    for call, name in ((lambda: triton_rmsnorm(x, w), "x"), (lambda: kv.gemma_rmsnorm(x, w), "x"),
                       (lambda: kv.quantize_fp8_per_token(x), "y"),
                       (lambda: kv.qk_rmsnorm(x.view(2, 1, 8), x.view(2, 1, 8), w, w), "q")):
        with pytest.raises(UnsupportedError, match=f"^{name}: "):
            call()
