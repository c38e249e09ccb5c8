"""RMSNorm variants: references against hand computations, our kernels against the float64 references
(under the Triton interpreter on CPU), the FP8 step checker, the bytes model, support reasons, the
benchmark's smoke mode. GPU-only tests skip with a reason."""
from __future__ import annotations

import math
import os
import runpy
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from rmsnorm_lab import variants as V  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CUDA = torch.cuda.is_available()
INTERP = os.environ.get("TRITON_INTERPRET", "") == "1"
needs_cuda = pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU")
needs_kernel = pytest.mark.skipif(not (CUDA or INTERP),
                                  reason="our Triton kernels need CUDA or TRITON_INTERPRET=1 (CPU interpreter)")
DEVICE = "cuda" if CUDA else "cpu"
E4M3 = getattr(torch, "float8_e4m3fn", None)
needs_fp8 = pytest.mark.skipif(E4M3 is None, reason="this torch has no float8_e4m3fn dtype")


def _hand_rms(row, eps):
    return math.sqrt(sum(v * v for v in row) / len(row) + eps)


# ---------------------------------------------------------------------------------------------- references

def test_gemma_reference_by_hand():
    case = V.VariantCase("gemma", 2, 3, "float32", residual=True)
    x = torch.tensor([[1.0, -2.0, 3.0], [0.5, 0.0, -0.5]])
    r = torch.tensor([[1.0, 1.0, 1.0], [0.0, 2.0, 0.0]])
    w = torch.tensor([0.0, 0.5, -0.25])
    ref = V.reference(case, {"x": x, "r": r, "w": w}, eps=1e-6)
    for i in range(2):
        s = [float(a + b) for a, b in zip(x[i], r[i])]
        rms = _hand_rms(s, 1e-6)
        want = [s[j] / rms * (1 + float(w[j])) for j in range(3)]
        assert ref["y"][i].tolist() == pytest.approx(want, rel=1e-12)
        assert ref["residual"][i].tolist() == pytest.approx(s)


def test_qk_reference_by_hand_on_strided_views():
    case = V.VariantCase("qk-norm", 2, 4, "float32", head_dim=2, heads_kv=1, fused_qkv=True)
    inp = V.make_inputs(case, "cpu", seed=3)
    q, k, wq, wk = inp["q"], inp["k"], inp["wq"], inp["wk"]
    assert not q.is_contiguous() and q.data_ptr() == inp["qkv"].data_ptr()
    ref = V.reference(case, inp, eps=1e-6)
    for t in range(2):
        for h in range(2):
            row = q[t, h].tolist()
            rms = _hand_rms(row, 1e-6)
            assert ref["q"][t, h].tolist() == pytest.approx([row[j] / rms * float(wq[j]) for j in range(2)], rel=1e-6)
        row = k[t, 0].tolist()
        rms = _hand_rms(row, 1e-6)
        assert ref["k"][t, 0].tolist() == pytest.approx([row[j] / rms * float(wk[j]) for j in range(2)], rel=1e-6)


@needs_fp8
def test_fp8_static_reference_by_hand_saturates():
    case = V.VariantCase("fp8-static", 1, 4, "float32")
    x = torch.tensor([[1.0, 2.0, -3.0, 4.0]])
    w = torch.tensor([1.0, 1.0, 1.0, 1.0])
    scale = torch.tensor([1.0 / 256.0])
    ref = V.reference(case, {"x": x, "w": w, "r": None, "scale": scale}, eps=0.0 + 1e-12)
    rms = _hand_rms([1, 2, -3, 4], 1e-12)
    want = [min(448.0, max(-448.0, v / rms * 256.0)) for v in (1.0, 2.0, -3.0, 4.0)]
    assert ref["y64"][0].tolist() == pytest.approx([v / rms * 256.0 for v in (1, 2, -3, 4)])
    # 4 / rms * 256 = 374.0 -> 384 on the e4m3 grid (step 32 in [256, 448]); none above 448 here
    got = ref["y"].float()[0].tolist()
    assert got == [torch.tensor(v).to(E4M3).float().item() for v in want]
    big = V.reference(case, {"x": x, "w": w * 10, "r": None, "scale": scale}, eps=1e-12)
    assert big["y"].float().abs().max().item() == 448.0          # saturated, not NaN


@needs_fp8
def test_fp8_per_token_reference_by_hand():
    case = V.VariantCase("fp8-per-token", 2, 2, "float32", scale_ub=0.5)
    x = torch.tensor([[3.0, -4.0], [0.0, 0.0]])
    w = torch.tensor([1.0, 2.0])
    ref = V.reference(case, {"x": x, "w": w, "r": None, "scale_ub": torch.tensor([0.5])}, eps=1e-6)
    rms = _hand_rms([3.0, -4.0], 1e-6)
    amax = min(max(abs(3.0 / rms), abs(-4.0 / rms * 2)), 0.5)
    assert ref["scale"][0, 0].item() == pytest.approx(amax / 448.0, rel=1e-6)
    assert ref["scale"][1, 0].item() == pytest.approx(V.MIN_SCALE, rel=1e-6)   # an all-zero row
    # 3 / rms / scale = 760 > 448: saturated (torch's own cast of an out-of-range value differs by version)
    first = min(448.0, 3.0 / rms / (amax / 448))
    assert ref["y"].float()[0].tolist() == [torch.tensor(first).to(E4M3).float().item(), -448.0]
    assert ref["y"].float()[1].tolist() == [0.0, 0.0]


def test_bytes_model_by_hand():
    t, h = 8, 1024
    assert V.bytes_moved(V.VariantCase("gemma", t, h)) == 2 * t * h * 2 + h * 2
    assert V.bytes_moved(V.VariantCase("gemma", t, h, residual=True)) == 4 * t * h * 2 + h * 2
    assert V.bytes_moved(V.VariantCase("fp8-static", t, h)) == t * h * 2 + t * h + h * 2 + 4
    assert V.bytes_moved(V.VariantCase("fp8-static", t, h, residual=True)) == 3 * t * h * 2 + t * h + h * 2 + 4
    assert V.bytes_moved(V.VariantCase("fp8-per-token", t, h)) == t * h * 2 + t * h + h * 2 + 4 * t
    qk = V.VariantCase("qk-norm", t, 32 * 128, head_dim=128, heads_kv=8)
    assert V.bytes_moved(qk) == 2 * t * (32 + 8) * 128 * 2 + 2 * 128 * 2


def test_case_validation_names_the_argument():
    with pytest.raises(ValueError, match="variant"):
        V.VariantCase("gemma2", 1)
    with pytest.raises(ValueError, match="residual"):
        V.VariantCase("qk-norm", 1, 256, residual=True)
    with pytest.raises(ValueError, match="hidden"):
        V.VariantCase("qk-norm", 1, 100, head_dim=64)
    with pytest.raises(ValueError, match="dtype"):
        V.VariantCase("gemma", 1, dtype="float64")


# ---------------------------------------------------------------------------------------------- FP8 checker

@needs_fp8
def test_fp8_step_counting_on_crafted_values():
    ref = torch.tensor([1.0, 1.0, 1.0, 448.0, -2.0, 0.0, 2 ** -9, float("nan")]).to(E4M3)
    out = torch.tensor([1.0, 1.125, 1.25, 416.0, -2.25, -0.0, 0.0, float("nan")]).to(E4M3)
    assert V.fp8_steps(out, ref).tolist() == [0, 1, 2, 1, 1, 0, 1, 0]
    nan_one_side = torch.tensor([float("nan")]).to(E4M3)
    assert V.fp8_steps(nan_one_side, torch.tensor([1.0]).to(E4M3)).item() >= 1000


@needs_fp8
def test_fp8_checker_counts_elements_off_and_scale_error():
    case = V.VariantCase("fp8-per-token", 4, 4096, "float32")
    inp = V.make_inputs(case, "cpu", seed=1)
    ref = V.reference(case, inp)
    y, s = ref["y"].clone(), ref["scale"].float()
    assert V.check(case, inp, (y, s)).status == "ok"
    bits = y.view(torch.uint8)
    flat = bits.view(-1)
    idx = torch.nonzero((flat & 0x7F) < 0x70).flatten()[:3]   # finite, not near the top: two steps up
    flat[idx] += 2
    res = V.check(case, inp, (y, s))
    assert res.frac_off == pytest.approx(3 / y.numel())
    assert res.status == "ok"                                  # 3 of 16384: within FP8_FRAC_TOL
    flat[torch.nonzero((flat & 0x7F) < 0x70).flatten()[3:30]] += 2
    res = V.check(case, inp, (y, s))
    assert res.status == "wrong" and "e4m3 step" in res.detail
    res = V.check(case, inp, (ref["y"], s * 1.05))
    assert res.status == "wrong" and res.scale_rel_err == pytest.approx(0.05, rel=1e-3) and "scale" in res.detail
    res = V.check(case, inp, (ref["y"].float(), s))
    assert res.status == "wrong" and "float8" in res.detail


def test_l2_checker_tolerances_per_dtype():
    case = V.VariantCase("gemma", 4, 64, "float16")
    inp = V.make_inputs(case, "cpu", seed=2)
    y = V.reference(case, inp)["y"]
    assert V.check(case, inp, y.to(torch.float16)).status == "ok"
    res = V.check(case, inp, (y * 1.01).to(torch.float16))
    assert res.status == "wrong" and res.err == pytest.approx(0.01, rel=0.05)
    assert V.check(case, inp, (y, y)).status == "wrong"       # wrong number of outputs


# ---------------------------------------------------------------------------------------------- subjects

def test_support_reasons_never_empty():
    for variant in V.VARIANTS:
        for res in ((False, True) if V.HAS_RESIDUAL[variant] else (False,)):
            for dev in ("cpu", "cuda"):
                for name in V.SUBJECT_NAMES:
                    s = V.subject_support(name, variant, res, dev)
                    assert s.ok or s.reason.strip(), (name, variant, res, dev)
    assert "vllm" in V.subject_support("vllm", "gemma").reason          # no such form
    assert V.subject_support("ours", "gemma", device="tpu").reason


def test_subjects_list_every_entry_of_a_variant():
    names = [s.name for s in V.subjects("fp8-per-token", True, "cpu")]
    assert names == ["ours", "torch", "torch-compile", "ours-unfused", "vllm"]
    for s in V.subjects("gemma", True, "cpu"):
        assert s.support.ok == (s.fn is not None)
        assert s.role in V.ROLES


@pytest.mark.parametrize("case", [
    V.VariantCase("gemma", 5, 96, "float32", residual=True),
    V.VariantCase("qk-norm", 3, 4 * 64, "float32", head_dim=64, heads_kv=2, fused_qkv=True),
    V.VariantCase("fp8-static", 5, 96, "float32", residual=True),
    V.VariantCase("fp8-per-token", 5, 96, "float32", scale_ub=2.0),
], ids=lambda c: c.key())
def test_torch_subject_matches_reference(case):
    if case.variant in V.FP8 and E4M3 is None:
        pytest.skip("this torch has no float8_e4m3fn dtype")
    inp = V.make_inputs(case, "cpu", seed=4)
    ret = V.call(case, V.TORCH_FNS[case.variant], V.clone_inputs(inp), 1e-6)
    assert V.check(case, inp, ret).status == "ok"


# ---------------------------------------------------------------------------------------------- our kernels

KERNEL_CASES = [
    V.VariantCase("gemma", 7, 300, "float32"),
    V.VariantCase("gemma", 7, 300, "float16", residual=True),
    V.VariantCase("gemma", 3, 2048, "bfloat16", residual=True),
    V.VariantCase("qk-norm", 5, 3 * 64, "float32", head_dim=64, heads_kv=1),
    V.VariantCase("qk-norm", 4, 4 * 48, "float16", head_dim=48, heads_kv=2, fused_qkv=True),
    V.VariantCase("fp8-static", 7, 300, "float32"),
    V.VariantCase("fp8-static", 7, 300, "float16", residual=True),
    V.VariantCase("fp8-per-token", 9, 300, "float32"),
    V.VariantCase("fp8-per-token", 9, 300, "bfloat16", residual=True, scale_ub=3.0),
]


@needs_kernel
@pytest.mark.parametrize("case", KERNEL_CASES, ids=lambda c: c.key())
def test_ours_matches_reference(case):
    if case.variant in V.FP8 and E4M3 is None:
        pytest.skip("this torch has no float8_e4m3fn dtype")
    sub = V.subjects(case.variant, case.residual, DEVICE, names=["ours"])[0]
    assert sub.support, sub.support.reason
    inp = V.make_inputs(case, DEVICE, seed=5)
    ret = V.call(case, sub.fn, V.clone_inputs(inp), 1e-6)
    res = V.check(case, inp, ret)
    assert res.status == "ok", res.detail
    if case.variant in V.FP8:
        assert res.frac_off == 0.0


@needs_kernel
@needs_fp8
@pytest.mark.parametrize("cfg", [dict(rows=2, warps=2), dict(warps=4, chunk=64), dict(warps=2, reread=True),
                                 dict(rows=2, warps=2, per_sm=1, evict_last=True),
                                 dict(warps=2, chunk=64, sum_first=True), dict(warps=2, late_ro=True),
                                 dict(warps=2, chunk=64, hold=1), dict(warps=2, chunk=64, hold=2)])
@pytest.mark.parametrize("variant", ["fp8-static", "gemma"])
def test_ours_with_a_given_launch_matches_reference(variant, cfg):
    """The static-FP8 and Gemma norms with a launch other than the table's (``config``: what a launch
    search times): one pass, two-pass slices, the row read twice, a grid-stride loop."""
    from rmsnorm_lab.kernels import variants as kv
    from rmsnorm_lab.kernels.config import LaunchConfig
    case = V.VariantCase(variant, 5, 200, "bfloat16", residual=True)
    inp = V.make_inputs(case, DEVICE, seed=7)
    c = V.clone_inputs(inp)
    if variant == "gemma":
        ret = kv.gemma_rmsnorm(c["x"], c["w"], c["r"], config=LaunchConfig(**cfg))
    else:
        ret = kv.rmsnorm_fp8_static(c["x"], c["w"], c["scale"], c["r"], config=LaunchConfig(**cfg))
    res = V.check(case, inp, ret)
    assert res.status == "ok", (cfg, res.detail)
    with pytest.raises(ValueError, match="LaunchConfig"):
        kv.gemma_rmsnorm(c["x"], c["w"], config="two rows")


@needs_kernel
@needs_fp8
@pytest.mark.parametrize("policy", [(1, 1, 3, 0), (2, 2, 2, 0), (1, 1, 4, 16), (2, 2, 2, 32), (1, 4, 9, 128),
                                    (1, 1, 4, 16, 1), (2, 2, 2, 32, 2), (1, 1, 9, 16, 2)],
                         ids=lambda p: "rows{}-warps{}-programs{}-chunk{}-hold{}".format(*p, 0))
@pytest.mark.parametrize("residual,ub", [(False, None), (True, None), (True, 2.0)])
def test_per_token_with_a_given_launch_matches_reference(policy, residual, ub):
    """The per-token FP8 norm with launches other than its policy's: one pass, a grid-stride loop, two passes
    over slices that do (16) and do not (32, 128) divide the row, the slices held (hold 1 / 2); in place on
    the residual."""
    from rmsnorm_lab.kernels import variants as kv
    case = V.VariantCase("fp8-per-token", 9, 80, "bfloat16", residual=residual, scale_ub=ub)
    inp = V.make_inputs(case, DEVICE, seed=8)
    c = V.clone_inputs(inp)
    ret = kv.rmsnorm_fp8_per_token(c["x"], c["w"], c["r"], scale_ub=c["scale_ub"], residual_out=c["r"],
                                   policy=kv.Policy(*policy))
    res = V.check(case, inp, ret)
    assert res.status == "ok" and res.frac_off == 0.0, (policy, res.detail)
    with pytest.raises(ValueError, match="policy.chunk"):
        kv.rmsnorm_fp8_per_token(c["x"], c["w"], policy=kv.Policy(1, 1, 1, 24))
    with pytest.raises(ValueError, match="policy.hold"):
        kv.rmsnorm_fp8_per_token(c["x"], c["w"], policy=kv.Policy(1, 1, 1, 0, 1))
    with pytest.raises(TypeError, match="policy"):
        kv.rmsnorm_fp8_per_token(c["x"], c["w"], policy=(1, 1, 1))


@needs_kernel
def test_qk_kernel_writes_in_place_into_the_fused_buffer():
    from rmsnorm_lab.kernels.variants import qk_rmsnorm
    case = V.VariantCase("qk-norm", 3, 2 * 64, "float32", head_dim=64, heads_kv=1, fused_qkv=True)
    inp = V.make_inputs(case, DEVICE, seed=6)
    ref = V.reference(case, inp)
    v_before = inp["qkv"][:, 3 * 64:].clone()
    qk_rmsnorm(inp["q"], inp["k"], inp["wq"], inp["wk"], q_out=inp["q"], k_out=inp["k"])
    assert torch.allclose(inp["q"].double(), ref["q"], rtol=1e-5, atol=1e-6)
    assert torch.allclose(inp["k"].double(), ref["k"], rtol=1e-5, atol=1e-6)
    assert torch.equal(inp["qkv"][:, 3 * 64:], v_before)          # v untouched


@needs_kernel
@needs_fp8
def test_ours_fp8_zero_row_and_saturation():
    from rmsnorm_lab.kernels.variants import rmsnorm_fp8_per_token, rmsnorm_fp8_static
    x = torch.zeros(2, 64, device=DEVICE)
    x[1] = torch.linspace(-3, 3, 64)
    w = torch.ones(64, device=DEVICE)
    y, s = rmsnorm_fp8_per_token(x, w)
    assert s[0, 0].item() == pytest.approx(V.MIN_SCALE) and y[0].float().abs().max().item() == 0.0
    assert y[1].float().abs().max().item() == 448.0
    y8 = rmsnorm_fp8_static(x, w, torch.tensor([1e-3], device=DEVICE))
    assert y8[1].float().abs().max().item() == 448.0 and not torch.isnan(y8.float()).any()


@needs_kernel
def test_launcher_errors_name_the_argument():
    from rmsnorm_lab.kernels import variants as kv
    x = torch.randn(4, 64, device=DEVICE)
    w = torch.ones(64, device=DEVICE)
    with pytest.raises(ValueError, match="weight"):
        kv.gemma_rmsnorm(x, torch.ones(32, device=DEVICE))
    with pytest.raises(TypeError, match="x"):
        kv.gemma_rmsnorm(x.double(), w)
    with pytest.raises(ValueError, match="eps"):
        kv.gemma_rmsnorm(x, w, eps=0.0)
    with pytest.raises(ValueError, match="residual"):
        kv.gemma_rmsnorm(x, w, torch.randn(4, 32, device=DEVICE))
    with pytest.raises(ValueError, match="x"):
        kv.gemma_rmsnorm(x.t(), torch.ones(4, device=DEVICE))
    with pytest.raises((TypeError, ValueError), match="scale"):
        kv.rmsnorm_fp8_static(x, w, torch.tensor([1.0, 2.0], device=DEVICE))
    q = torch.randn(2, 4, 64, device=DEVICE)
    with pytest.raises(ValueError, match="k"):
        kv.qk_rmsnorm(q, torch.randn(3, 1, 64, device=DEVICE), w, w)
    with pytest.raises(ValueError, match="k_weight"):
        kv.qk_rmsnorm(q, torch.randn(2, 1, 64, device=DEVICE), w, torch.ones(32, device=DEVICE))


@needs_kernel
@needs_fp8
def test_every_variant_launch_switches_to_the_tensors_device(monkeypatch):
    """Each kernel launch runs inside kernels.launch.on_device of its input (the input's GPU, not the current one)."""
    import contextlib

    from rmsnorm_lab.kernels import launch as kl
    from rmsnorm_lab.kernels import variants as kv
    seen = []

    def record(t):
        seen.append(t)
        return contextlib.nullcontext()
    monkeypatch.setattr(kv, "on_device", record)
    x, w = torch.randn(2, 64, device=DEVICE), torch.ones(64, device=DEVICE)
    q, k = torch.randn(2, 2, 64, device=DEVICE), torch.randn(2, 1, 64, device=DEVICE)
    kv.gemma_rmsnorm(x, w)
    kv.rmsnorm_fp8_per_token(x, w)
    kv.quantize_fp8_static(x, torch.tensor([1.0], device=DEVICE))
    kv.qk_rmsnorm(q, k, w, w)
    assert [t is u for t, u in zip(seen, (x, x, x, q))] == [True] * 4 and len(seen) == 4
    if not x.is_cuda:
        assert isinstance(kl.on_device(x), contextlib.nullcontext)      # a CPU tensor: nothing to switch


def test_launch_policy():
    from rmsnorm_lab.kernels.variants import Policy, head_policy, per_token_policy, row_policy
    assert per_token_policy(5120, 300, 132, True) == row_policy(5120, 300, 132)     # under 3 rows an SM
    assert per_token_policy(5120, 512, 132, True) == Policy(1, 4, 512, 1024)        # slices from 3 rows an SM
    assert per_token_policy(8192, 1024, 132, True) == Policy(1, 8, 1024, 2048)      # 2048-wide where they divide
    assert per_token_policy(7168, 65536, 132, False) == Policy(1, 4, 65536, 1024)
    assert per_token_policy(4096, 2048, 132, False) == row_policy(4096, 2048, 132)  # one pass from 16 rows an SM
    assert per_token_policy(5120, 65536, 132, False) == Policy(1, 4, 65536, 1024)        # slices, one program a row
    assert per_token_policy(16384, 8192, 132, True) == Policy(1, 16, 8192, 2048)
    assert per_token_policy(2048, 65536, 132, False) == Policy(1, 2, 32 * 132)        # 32 elements a thread
    assert per_token_policy(4096, 65536, 132, True) == Policy(1, 8, 65536)
    p = row_policy(4096, 65536, 132)
    assert (p.rows, p.warps) == (1, 8) and p.programs == 132 * 8      # 64 resident warps an SM
    assert row_policy(256, 3, 132).rows == 8 and row_policy(256, 3, 132).programs == 1
    assert row_policy(16384, 1, 132).warps == 32 and row_policy(16384, 1, 132).programs == 1
    h = head_policy(128, 40 * 65536, 132)
    assert h.rows == 16 and h.programs == 40 * 65536 // 16
    assert head_policy(128, 40, 132).rows == 1                  # few rows: spread them out
    d64 = head_policy(64, 40 * 65536, 132)                      # about 2048 elements a program at any head_dim
    assert (d64.rows, d64.warps) == (32, 4) and head_policy(256, 40 * 65536, 132).rows == 8


# ---------------------------------------------------------------------------------------------- GPU peers

@needs_cuda
@pytest.mark.parametrize("variant", V.VARIANTS)
def test_gpu_every_available_subject_matches_reference(variant):
    for res in ((False, True) if V.HAS_RESIDUAL[variant] else (False,)):
        case = V.VariantCase(variant, 33, 1024 if variant != "qk-norm" else 8 * 128, "bfloat16", residual=res,
                             heads_kv=2 if variant == "qk-norm" else 0, fused_qkv=variant == "qk-norm")
        inp = V.make_inputs(case, "cuda", seed=7)
        for s in V.subjects(variant, res, "cuda"):
            if not s.support:
                continue
            ret = V.call(case, s.fn, V.clone_inputs(inp), 1e-6)
            out = V.check(case, inp, ret)
            assert out.status == "ok", (s.name, case.key(), out.detail)


# ---------------------------------------------------------------------------------------------- benchmark smoke

@needs_kernel
def test_bench_smoke(tmp_path, capsys):
    import csv
    bench = runpy.run_path(str(ROOT / "experiments" / "variants_bench.py"))
    out = tmp_path / "v.csv"
    assert bench["main"](["--smoke", "--device", DEVICE, "--out", str(out), "--modes", "cold"]) == 0
    rows = list(csv.DictReader(out.open()))
    assert rows and list(rows[0]) == bench["COLUMNS"]
    assert {r["variant"] for r in rows} == set(V.VARIANTS)
    assert {r["impl"] for r in rows} >= {"ours", "torch"}
    assert all(r["status"] == "ok" for r in rows), [(r["impl"], r["error"]) for r in rows if r["status"] != "ok"]
    fp8 = [r for r in rows if r["variant"] in V.FP8]
    assert all(r["frac_off_by_more_than_one_step"] == "0" for r in fp8)
    assert "fp8-per-token, cold" in capsys.readouterr().out


# ---------------------------------------------------------------------------------------------- sm90 code, no GPU

_COMPILE_SM90 = r'''
import re, sys, triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from rmsnorm_lab.kernels import _rmsnorm_variants as K
tgt = GPUTarget("cuda", 90, 32)
names = ["X", "W", "Y", "R", "RO", "SCALE_UB", "SCALES_OUT", "stride_x", "stride_y", "stride_r", "stride_ro",
         "n_rows", "eps"]
types = ["*bf16", "*bf16", "*fp8e4nv", "*bf16", "*bf16", "*fp32", "*fp32"] + ["i32"] * 5 + ["fp32"]
sig = dict(zip(names, types))
sig.update({n: "constexpr" for n in ["N", "BLOCK_N", "ROWS", "HAS_RES", "HAS_UB", "MIN_SCALE", "SOFT_ROUND",
                                     "USE_PDL", "CHUNK", "HOLD"]})
attrs = {(i,): [["tt.divisibility", 16]] for i in range(11)}
src = ASTSource(fn=K.norm_per_token_kernel, signature=sig, attrs=attrs, constexprs={
    "N": 4096, "BLOCK_N": 4096, "ROWS": 1, "HAS_RES": True, "HAS_UB": True,
    "MIN_SCALE": 1 / (448 * 512), "SOFT_ROUND": False, "USE_PDL": K.gdc_wait is not None, "CHUNK": 0, "HOLD": 0})
ptx = triton.compile(src, target=tgt, options={"num_warps": 8}).asm["ptx"]
src2 = ASTSource(fn=K.norm_per_token_kernel, signature=sig, attrs=attrs, constexprs={
    "N": 5120, "BLOCK_N": 8192, "ROWS": 1, "HAS_RES": True, "HAS_UB": False, "CHUNK": 1024, "HOLD": 1,
    "MIN_SCALE": 1 / (448 * 512), "SOFT_ROUND": False, "USE_PDL": K.gdc_wait is not None})
ptx2 = triton.compile(src2, target=tgt, options={"num_warps": 4}).asm["ptx"]
print("CVT2", sorted(set(re.findall(r"cvt\.[a-z.]*e4m3[a-z0-9.]*", ptx2))))
qsig = {n: "*bf16" for n in ["Q", "K", "QO", "KO", "WQ", "WK"]}
qsig.update({n: "i32" for n in "sq_t sq_h sk_t sk_h sqo_t sqo_h sko_t sko_h n_q_rows n_k_rows HQ HK".split()})
qsig.update(eps="fp32", D="constexpr", BLOCK_D="constexpr", ROWS="constexpr", USE_PDL="constexpr")
qattrs = {(i,): [["tt.divisibility", 16]] for i in range(14)}
qptx = triton.compile(ASTSource(fn=K.qk_norm_kernel, signature=qsig, attrs=qattrs,
                                constexprs={"D": 128, "BLOCK_D": 128, "ROWS": 16, "USE_PDL": K.gdc_wait is not None}),
                     target=tgt).asm["ptx"]
print("PDL", "griddepcontrol.wait" in ptx and "griddepcontrol.launch_dependents" in qptx)
print("CVT", sorted(set(re.findall(r"cvt\.[a-z.]*e4m3[a-z0-9.]*", ptx))))
loads = r"ld\.global[a-z0-9.]*"
print("LD", sorted(set(re.findall(loads, ptx))), sorted(set(re.findall(loads, qptx))))
'''


def test_kernels_compile_for_sm90_without_a_gpu():
    """The CUDA code path (not the interpreter's) compiles for sm90: FP8 stores use the saturating e4m3
    conversion, activation loads are 16-byte vectors."""
    import subprocess
    import sys
    pytest.importorskip("triton.backends.compiler")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    p = subprocess.run([sys.executable, "-c", _COMPILE_SM90], env=env, capture_output=True, text=True, timeout=300)
    if p.returncode and ("ptxas" in p.stderr or "No module named" in p.stderr):
        pytest.skip(f"cannot compile for sm90 here: {p.stderr.strip().splitlines()[-1]}")
    assert p.returncode == 0, p.stderr[-2000:]
    assert "cvt.rn.satfinite.e4m3x2.f32" in p.stdout
    assert "cvt.rn.satfinite.e4m3x2.f32" in dict(line.split(" ", 1) for line in p.stdout.splitlines())["CVT2"]
    lines = dict(line.split(" ", 1) for line in p.stdout.splitlines() if " " in line)
    assert "ld.global.v4.b32" in lines["LD"]
    assert lines["PDL"] == "True"


def test_bench_keeps_failing_subjects_as_rows():
    """A subject that raises is an error row, one that answers wrong a wrong row, each with its reason;
    an unsupported one a skip row; none is dropped and none is timed."""
    from rmsnorm_lab.impls.base import Support
    bench = runpy.run_path(str(ROOT / "experiments" / "variants_bench.py"))
    case = V.VariantCase("gemma", 3, 64, "float32")

    def boom(x, w, r, eps):
        raise RuntimeError("CUDA error: misaligned address")

    subs = [V.Subject("raises", "gemma", "peer", Support.yes(), boom),
            V.Subject("off", "gemma", "peer", Support.yes(), lambda x, w, r, eps: x * 2),
            V.Subject("absent", "gemma", "peer", Support.no("not installed: nothing"))]
    rows = bench["run_case"](case, subs, ["cold"], "cpu", 1.0)
    by = {r["impl"]: r for r in rows}
    assert by["raises"]["status"] == "error" and "misaligned" in by["raises"]["error"]
    assert by["off"]["status"] == "wrong" and "rel. L2" in by["off"]["error"] and by["off"]["err"]
    assert by["absent"]["status"] == "skip" and by["absent"]["error"] == "not installed: nothing"
    assert all(r["us_median"] == "" for r in rows)


@needs_kernel
@needs_fp8
def test_ours_quantize_is_bit_exact_with_torch_cast():
    """Our e4m3 rounding (saturating, nearest even, subnormals, NaN, signed zero) equals torch's cast of the
    clamped values, bit for bit (on CPU that is the kernels' own rounding, the interpreter's cast being off)."""
    from rmsnorm_lab.kernels.variants import quantize_fp8_static
    g = torch.Generator().manual_seed(8)
    special = [0.0, -0.0, float("nan"), 1e9, -1e9, 2 ** -10, 2 ** -9 * 1.5, 2 ** -9 * 2.5, 0.0155, 124.6, -126.4,
               447.9, 440.0, 464.0, 2 ** -6, 2 ** -7 * 1.01]
    y = torch.cat([torch.randn(3, 256, generator=g) * torch.tensor([[1e-3], [1.0], [300.0]]),
                   torch.tensor([special + [0.0] * (256 - len(special))])]).to(DEVICE)
    q = quantize_fp8_static(y, torch.tensor([1.0], device=DEVICE))
    want = y.clamp(-448, 448).to(E4M3)
    assert torch.equal(q.view(torch.uint8), want.view(torch.uint8))


def test_support_table_lists_each_subject_with_a_reason():
    rows = V.support_table("fp8-static", "cpu")
    assert {r["subject"] for r in rows} == {"ours", "torch", "torch-compile", "ours-unfused", "vllm", "flashinfer"}
    assert all(r["ok"] or r["reason"] for r in rows)
    assert [r["residual"] for r in V.support_table("qk-norm", "cpu")] == [False] * 6
