"""RMSNorm variants that inference stacks run: Gemma's ``(1 + w)``, QK-norm, and RMSNorm fused with FP8.

For each variant (``VARIANTS``): a case type (``VariantCase``), its inputs
(``make_inputs``), a float64 reference (``reference``), a checker (``check``), a
bytes model (``bytes_moved``) and the implementations that run it
(``subjects``), each with a ``Support`` (ok, or why not) and a callable; ``support_table``
lists them without loading any.

Calling conventions (``r`` is the residual or None; where a variant has a fused
residual add, the call also returns the new residual ``x + r``):

- ``gemma``:          fn(x, w, r, eps) -> y | (y, new_r)
- ``fp8-static``:     fn(x, w, r, scale, eps) -> y8 | (y8, new_r)          (scale: fp32, one element)
- ``fp8-per-token``:  fn(x, w, r, scale_ub, eps) -> (y8, scales) | (y8, scales, new_r)   (scale_ub: None or fp32)
- ``qk-norm``:        fn(q, k, wq, wk, eps) -> (q_out, k_out)   (q, k: (tokens, heads, head_dim), maybe strided)

``timing_args(case, inputs, fn)`` adapts any of them to ``fn(x, w, r, eps)`` for
``rmsnorm_lab.timing.Runner``. Nothing heavy is imported at module import.
"""
from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, field
from typing import Callable

from .impls.base import Support, has_module
from .impls.vllm import ENV as VLLM_OPS_ENV   # path of vLLM's op library
from .kernels.variants import MIN_SCALE     # floor of a per-token scale (all-zero rows), as vLLM
from .reference import TOLERANCE as _PLAIN_TOLERANCE
from .validate import suggest

VARIANTS = ("gemma", "qk-norm", "fp8-static", "fp8-per-token")
HAS_RESIDUAL = {"gemma": True, "qk-norm": False, "fp8-static": True, "fp8-per-token": True}
FP8 = ("fp8-static", "fp8-per-token")
FP8_MAX = 448.0
STATIC_SCALE = 5.0 / FP8_MAX               # the static scale the cases use: |y| above 5 saturates
# relative L2 error of the non-FP8 outputs: the plain checker's tolerance of each dtype the variants take
TOLERANCE = {d: _PLAIN_TOLERANCE[d] for d in ("bfloat16", "float16", "float32")}
FP8_FRAC_TOL = 1e-3                        # elements more than one e4m3 step off
FP8_SCALE_TOL = 1e-2                       # per-token scale, relative
ROLES = ("ours", "baseline", "unfused", "peer")   # baseline: HF-style eager torch; peers include torch.compile


def check_variant(variant, name: str = "variant", choices=VARIANTS) -> str:
    """``variant`` when it is one of ``choices`` (rmsnorm_lab.points adds plain), else an error naming ``name``."""
    if not isinstance(variant, str):
        raise TypeError(f"{name}: expected one of {', '.join(choices)}, got {variant!r}")
    if variant not in choices:
        raise ValueError(f"{name}: unknown variant {variant!r}; expected one of {', '.join(choices)}"
                         f"{suggest(variant, choices)}")
    return variant


# ---------------------------------------------------------------------------------------------- cases

@dataclass(frozen=True)
class VariantCase:
    """One shape of one variant. For qk-norm ``hidden`` is the width of q (heads_q x head_dim)."""
    variant: str
    tokens: int
    hidden: int = 4096
    dtype: str = "bfloat16"
    residual: bool = False
    head_dim: int = 128           # qk-norm
    heads_kv: int = 0             # qk-norm: k's heads (0: as many as q)
    fused_qkv: bool = False       # qk-norm: q and k are views into one (tokens, (hq + 2 hkv) head_dim) buffer
    scale_ub: float | None = None  # fp8-per-token: upper bound of the row absmax

    def __post_init__(self):
        check_variant(self.variant)
        for name in ("tokens", "hidden", "head_dim", "heads_kv"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise ValueError(f"{name}: expected an integer >= 0, got {v!r}")
        if self.hidden < 1 or self.head_dim < 1:
            raise ValueError("hidden and head_dim: expected >= 1")
        if self.dtype not in TOLERANCE:
            raise ValueError(f"dtype: expected one of {', '.join(TOLERANCE)}, got {self.dtype!r}")
        if self.residual and not HAS_RESIDUAL[self.variant]:
            raise ValueError(f"residual: the {self.variant} variant has no fused residual form")
        if self.variant == "qk-norm" and self.hidden % self.head_dim:
            raise ValueError(f"hidden: {self.hidden} is not a multiple of head_dim {self.head_dim}")
        if self.scale_ub is not None and not (self.scale_ub > 0):
            raise ValueError(f"scale_ub: expected > 0, got {self.scale_ub}")

    @property
    def heads_q(self) -> int:
        return self.hidden // self.head_dim if self.variant == "qk-norm" else 0

    @property
    def heads_k(self) -> int:
        return (self.heads_kv or self.heads_q) if self.variant == "qk-norm" else 0

    @property
    def itemsize(self) -> int:
        return {"bfloat16": 2, "float16": 2, "float32": 4}[self.dtype]

    @property
    def input_bytes(self) -> int:
        """Bytes of the activation read (x, or q and k)."""
        if self.variant == "qk-norm":
            return self.tokens * (self.heads_q + self.heads_k) * self.head_dim * self.itemsize
        return self.tokens * self.hidden * self.itemsize

    def key(self) -> str:
        extra = f":d{self.head_dim}:kv{self.heads_k}" + (":qkv" if self.fused_qkv else "") \
            if self.variant == "qk-norm" else ""
        return f"{self.variant}:{self.dtype}:{self.hidden}:{self.tokens}:{int(self.residual)}{extra}"

    def as_dict(self) -> dict:
        d = asdict(self)
        d.update(heads=self.heads_q, heads_k=self.heads_k)
        return d


def bytes_moved(case: VariantCase) -> int:
    """The floor of bytes a kernel must move: activations read and written once, weights, scales.
    FP8 outputs are 1 byte; the static scale is read (4 bytes), per-token scales written (4 per row);
    a fused residual add reads r and writes the new residual; qk-norm reads and writes q and k."""
    b, t, h = case.itemsize, case.tokens, case.hidden
    if case.variant == "qk-norm":
        return 2 * case.input_bytes + 2 * case.head_dim * b
    n = t * h * b + h * b                       # read x, read the weight
    n += t * h * (1 if case.variant in FP8 else b)   # write y
    if case.residual:
        n += 2 * t * h * b                      # read r, write x + r
    if case.variant == "fp8-static":
        n += 4
    if case.variant == "fp8-per-token":
        n += 4 * t + (4 if case.scale_ub is not None else 0)
    return n


def make_inputs(case: VariantCase, device="cpu", seed: int = 0) -> dict:
    """Random inputs for a case (weights not all ones): the names of the variant's calling convention."""
    import torch
    dt = getattr(torch, case.dtype)
    g = torch.Generator(device=device).manual_seed(seed)

    def randn(*shape, scale=1.0, shift=0.0):
        return (torch.randn(*shape, generator=g, device=device, dtype=torch.float32) * scale + shift).to(dt)

    if case.variant == "qk-norm":
        t, hq, hk, d = case.tokens, case.heads_q, case.heads_k, case.head_dim
        inp = {"wq": randn(d, scale=0.1, shift=1.0), "wk": randn(d, scale=0.1, shift=1.0)}
        if case.fused_qkv:
            qkv = randn(t, (hq + 2 * hk) * d)
            inp.update(qkv=qkv, q=qkv[:, :hq * d].view(t, hq, d), k=qkv[:, hq * d:(hq + hk) * d].view(t, hk, d))
        else:
            inp.update(q=randn(t, hq, d), k=randn(t, hk, d))
        return inp
    t, h = case.tokens, case.hidden
    gemma = case.variant == "gemma"
    inp = {"x": randn(t, h), "w": randn(h, scale=0.1, shift=0.0 if gemma else 1.0),
           "r": randn(t, h) if case.residual else None}
    if case.variant == "fp8-static":
        inp["scale"] = torch.tensor([STATIC_SCALE], dtype=torch.float32, device=device)
    if case.variant == "fp8-per-token":
        inp["scale_ub"] = (torch.tensor([case.scale_ub], dtype=torch.float32, device=device)
                           if case.scale_ub is not None else None)
    return inp


def clone_inputs(inputs: dict) -> dict:
    """Copies of the tensors a call may mutate (x, r, q, k keep their strides: a fused qkv buffer is copied whole)."""
    out = dict(inputs)
    if "qkv" in inputs:
        qkv = inputs["qkv"].clone()
        t, hq, d = inputs["q"].shape
        hk = inputs["k"].shape[1]
        out.update(qkv=qkv, q=qkv[:, :hq * d].view(t, hq, d), k=qkv[:, hq * d:(hq + hk) * d].view(t, hk, d))
        return out
    for name in ("x", "r", "q", "k"):
        if out.get(name) is not None:
            out[name] = out[name].clone()
    return out


def call(case: VariantCase, fn: Callable, inputs: dict, eps: float):
    """Call a subject with the variant's convention."""
    v = case.variant
    if v == "qk-norm":
        return fn(inputs["q"], inputs["k"], inputs["wq"], inputs["wk"], eps)
    if v == "gemma":
        return fn(inputs["x"], inputs["w"], inputs["r"], eps)
    if v == "fp8-static":
        return fn(inputs["x"], inputs["w"], inputs["r"], inputs["scale"], eps)
    return fn(inputs["x"], inputs["w"], inputs["r"], inputs["scale_ub"], eps)


def timing_args(case: VariantCase, inputs: dict, fn: Callable) -> tuple:
    """(fn2, x, w, r) with fn2(x, w, r, eps) calling fn by the variant's convention:
    what ``rmsnorm_lab.timing.Runner(fn2, x, w, r, eps, inplace)`` takes."""
    v = case.variant
    if v == "qk-norm":
        k, wk = inputs["k"], inputs["wk"]
        return (lambda q, wq, r, eps: fn(q, k, wq, wk, eps)), inputs["q"], inputs["wq"], None
    if v == "gemma":
        return fn, inputs["x"], inputs["w"], inputs["r"]
    extra = inputs["scale"] if v == "fp8-static" else inputs["scale_ub"]
    return (lambda x, w, r, eps: fn(x, w, r, extra, eps)), inputs["x"], inputs["w"], inputs["r"]


# ---------------------------------------------------------------------------------------------- float64 reference

def _norm64(x, w, eps, offset=0.0):
    x = x.double()
    return x * (x.pow(2).mean(-1, keepdim=True) + eps).rsqrt() * (offset + w.double())


def quantize_e4m3(v, scale):
    """``v / scale`` saturated to +-448 and rounded to float8_e4m3fn (v, scale: float64)."""
    import torch
    return (v / scale).clamp(-FP8_MAX, FP8_MAX).to(torch.float8_e4m3fn)


def reference(case: VariantCase, inputs: dict, eps: float = 1e-6, rows: slice | None = None) -> dict:
    """Float64 reference of a case (optionally of a slice of its rows / tokens). Keys:
    gemma: y (, residual); qk-norm: q, k; fp8-static: y (e4m3), y64 (y / scale before rounding)
    (, residual); fp8-per-token: y (e4m3), scale (fp64, one per row), y64 (, residual)."""
    import torch
    rows = rows or slice(None)
    v = case.variant
    if v == "qk-norm":
        return {"q": _norm64(inputs["q"][rows], inputs["wq"], eps), "k": _norm64(inputs["k"][rows], inputs["wk"], eps)}
    x = inputs["x"][rows].double()
    out = {}
    if inputs.get("r") is not None:
        x = x + inputs["r"][rows].double()
        out["residual"] = x
    y = _norm64(x, inputs["w"], eps, 1.0 if v == "gemma" else 0.0)
    if v == "gemma":
        out["y"] = y
        return out
    if v == "fp8-static":
        scale = inputs["scale"].double().reshape(())
    else:
        amax = y.abs().amax(-1, keepdim=True)
        if inputs.get("scale_ub") is not None:
            amax = torch.minimum(amax, inputs["scale_ub"].double().reshape(()))
        scale = (amax / FP8_MAX).clamp(min=MIN_SCALE).float().double()   # the scale as stored (fp32)
        out["scale"] = scale
    out["y64"] = y / scale
    out["y"] = quantize_e4m3(y, scale)
    return out


# ---------------------------------------------------------------------------------------------- checker

def e4m3_index(t):
    """Ordered integer position of each float8_e4m3fn value on the e4m3 grid (+-0 -> 0), and a NaN mask:
    neighbouring representable values differ by 1."""
    import torch
    b = t.view(torch.uint8).to(torch.int16)
    mag = b & 0x7F
    idx = torch.where((b & 0x80) != 0, -mag, mag)
    return idx, mag == 0x7F


def fp8_steps(out, ref):
    """How many e4m3 steps each element of ``out`` is from ``ref`` (both float8_e4m3fn); NaN on one side
    only counts as 1000 steps, NaN on both as 0."""
    import torch
    io, no = e4m3_index(out)
    ir, nr = e4m3_index(ref)
    d = (io - ir).abs()
    d = torch.where(no != nr, torch.full_like(d, 1000), d)
    return torch.where(no & nr, torch.zeros_like(d), d)


@dataclass
class CheckResult:
    status: str                    # "ok" or "wrong"
    err: float = float("nan")      # max relative L2 error over the non-FP8 outputs
    frac_off: float = float("nan")  # FP8: fraction of elements more than one e4m3 step off
    scale_rel_err: float = float("nan")  # fp8-per-token: max relative error of the row scales
    detail: str = ""


def parts(case: VariantCase, ret) -> dict:
    """A subject's return value by name (y, residual, scale, q, k)."""
    v = case.variant
    seq = ret if isinstance(ret, (tuple, list)) else (ret,)
    if v == "qk-norm":
        names = ("q", "k")
    elif v == "fp8-per-token":
        names = ("y", "scale") + (("residual",) if case.residual else ())
    else:
        names = ("y",) + (("residual",) if case.residual else ())
    if len(seq) != len(names):
        raise ValueError(f"expected {len(names)} outputs ({', '.join(names)}), got {len(seq)}")
    return dict(zip(names, seq))


def _chunks(n: int, width: int, budget: int = 1 << 26):
    step = max(1, budget // max(width, 1))
    return [slice(i, min(n, i + step)) for i in range(0, n, step)] or [slice(0, 0)]


def check(case: VariantCase, inputs: dict, ret, eps: float = 1e-6) -> CheckResult:
    """Compare a subject's outputs with the float64 reference (computed in row chunks from ``inputs``,
    which must be the pristine inputs). Non-FP8 outputs: relative L2 error against ``TOLERANCE``;
    FP8 outputs: the fraction of elements more than one e4m3 step from the reference rounded with the
    reference scale (``FP8_FRAC_TOL``) and the per-token scale's relative error (``FP8_SCALE_TOL``)."""
    import torch
    try:
        got = parts(case, ret)
    except ValueError as e:
        return CheckResult("wrong", detail=str(e))
    fp8 = getattr(torch, "float8_e4m3fn", None)
    for name, t in got.items():
        if not isinstance(t, torch.Tensor):
            return CheckResult("wrong", detail=f"{name}: not a tensor ({type(t).__name__})")
    if case.variant in FP8 and got["y"].dtype != fp8:
        return CheckResult("wrong", detail=f"y: dtype {got['y'].dtype}, expected float8_e4m3fn")
    n = case.tokens
    width = case.hidden if case.variant != "qk-norm" else (case.heads_q + case.heads_k) * case.head_dim
    num: dict = {}
    den: dict = {}
    off = total = 0
    scale_err = 0.0
    for rows in _chunks(n, width):
        ref = reference(case, inputs, eps, rows)
        for name in ref:
            if name in ("y64",) or (name == "y" and case.variant in FP8) or name == "scale":
                continue
            o = got[name][rows]
            if o.shape != ref[name].shape:
                return CheckResult("wrong", detail=f"{name}: shape {tuple(o.shape)}, expected {tuple(ref[name].shape)}")
            num[name] = num.get(name, 0.0) + float((o.double() - ref[name]).pow(2).sum())
            den[name] = den.get(name, 0.0) + float(ref[name].pow(2).sum())
        if case.variant in FP8:
            y = got["y"][rows]
            if y.shape != ref["y"].shape:
                return CheckResult("wrong", detail=f"y: shape {tuple(y.shape)}, expected {tuple(ref['y'].shape)}")
            off += int((fp8_steps(y.contiguous(), ref["y"]) > 1).sum())
            total += y.numel()
        if case.variant == "fp8-per-token":
            s = got["scale"][rows].reshape(ref["scale"].shape).double()
            rel = ((s - ref["scale"]).abs() / ref["scale"]).max() if s.numel() else torch.zeros(())
            scale_err = max(scale_err, float(rel))
    errs = {k: math.sqrt(num[k] / den[k]) if den[k] > 0 else math.sqrt(num[k]) for k in num}
    res = CheckResult("ok")
    problems = []
    tol = TOLERANCE[case.dtype]
    if errs:
        res.err = max(errs.values())
        problems += [f"{k}: rel. L2 error {e:.3g} > {tol:g}" for k, e in errs.items() if not e <= tol]
    if case.variant in FP8:
        res.frac_off = off / total if total else 0.0
        if not res.frac_off <= FP8_FRAC_TOL:
            problems.append(f"y: {res.frac_off:.3g} of elements more than one e4m3 step off (> {FP8_FRAC_TOL:g})")
    if case.variant == "fp8-per-token":
        res.scale_rel_err = scale_err
        if not scale_err <= FP8_SCALE_TOL:
            problems.append(f"scale: rel. error {scale_err:.3g} > {FP8_SCALE_TOL:g}")
    if problems:
        res.status, res.detail = "wrong", "; ".join(problems)
    return res


# ---------------------------------------------------------------------------------------------- torch eager

def _hf_norm(x, w, r, eps):
    """HF LlamaRMSNorm (the registry's ``hf_rmsnorm``) as (y, new residual or None)."""
    from .impls.torch_impls import hf_rmsnorm
    got = hf_rmsnorm(x, w, r, eps)
    return got if r is not None else (got, None)


def torch_gemma(x, w, r, eps):
    """HF GemmaRMSNorm: fp32 math, ``* (1 + w.float())``, one rounding; with a residual, the
    decoder's ``x + r`` (in the input dtype) is normalized and returned."""
    import torch
    s = x if r is None else x + r
    h = s.float()
    y = (h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps) * (1.0 + w.float())).to(x.dtype)
    return y if r is None else (y, s)


def torch_qk_norm(q, k, wq, wk, eps):
    """Per-head HF RMSNorm of q and k (Qwen3's q_norm / k_norm), strided views as they are."""
    return _hf_norm(q, wq, None, eps)[0], _hf_norm(k, wk, None, eps)[0]


def _torch_quant(y, scale):
    import torch
    return (y.float() / scale).clamp(-FP8_MAX, FP8_MAX).to(torch.float8_e4m3fn)


def torch_fp8_static(x, w, r, scale, eps):
    """HF RMSNorm, then ``y / scale`` saturated and cast to e4m3 (separate torch ops)."""
    y, new_r = _hf_norm(x, w, r, eps)
    q = _torch_quant(y, scale)
    return q if r is None else (q, new_r)


def torch_fp8_per_token(x, w, r, scale_ub, eps):
    """HF RMSNorm, then per-row scale max(min(absmax, ub) / 448, MIN_SCALE) and e4m3 output."""
    import torch
    y, new_r = _hf_norm(x, w, r, eps)
    amax = y.float().abs().amax(-1, keepdim=True)
    if scale_ub is not None:
        amax = torch.minimum(amax, scale_ub)
    s = (amax / FP8_MAX).clamp(min=MIN_SCALE)
    q = _torch_quant(y, s)
    return (q, s) if r is None else (q, s, new_r)


TORCH_FNS = {"gemma": torch_gemma, "qk-norm": torch_qk_norm,
             "fp8-static": torch_fp8_static, "fp8-per-token": torch_fp8_per_token}


def _compiled(fn):
    """torch.compile(fn, dynamic=False): one graph per shape (the best torch.compile does), recompile limits
    lifted so many shapes do not fall back to eager."""
    import torch

    from .impls.torch_impls import lift_recompile_limits
    lift_recompile_limits()
    return torch.compile(fn, dynamic=False)


# ---------------------------------------------------------------------------------------------- ours

def _ours(variant):
    """Our kernels; with a residual in place, as the plain entry and vLLM / FlashInfer: r <- x + r (and for
    Gemma x <- the norm). A new residual in fresh memory costs L2 space: at shapes whose x and r fit in
    L2, the plain kernel out of place was up to 1.76x slower in graph mode (experiments/INDEX.md, write
    paths)."""
    from .kernels import variants as kv

    if variant == "gemma":
        return lambda x, w, r, eps: kv.gemma_rmsnorm(x, w, r, eps, out=None if r is None else x, residual_out=r)
    if variant == "qk-norm":
        return kv.qk_rmsnorm
    if variant == "fp8-static":
        return lambda x, w, r, scale, eps: kv.rmsnorm_fp8_static(x, w, scale, r, eps, residual_out=r)
    return lambda x, w, r, scale_ub, eps: kv.rmsnorm_fp8_per_token(x, w, r, eps, scale_ub=scale_ub, residual_out=r)


def _ours_unfused(variant):
    """Our plain RMSNorm, then our separate quantize kernel: what the FP8 variants cost without fusion."""
    import rmsnorm_lab
    from .kernels import variants as kv
    plain = rmsnorm_lab.triton_rmsnorm

    def norm(x, w, r, eps):
        out = plain(x, w, r, eps)
        return (out, None) if r is None else out

    if variant == "fp8-static":
        def fp8_static(x, w, r, scale, eps):
            y, new_r = norm(x, w, r, eps)
            q = kv.quantize_fp8_static(y, scale)
            return q if r is None else (q, new_r)
        return fp8_static

    def fp8_per_token(x, w, r, scale_ub, eps):
        y, new_r = norm(x, w, r, eps)
        q, s = kv.quantize_fp8_per_token(y, scale_ub=scale_ub)
        return (q, s) if r is None else (q, s, new_r)
    return fp8_per_token


# ---------------------------------------------------------------------------------------------- peers

def _vllm_ops():
    """torch.ops._C with vLLM's norm ops, from the op library at $RMSNORM_LAB_VLLM_OPS or an installed vllm."""
    import torch
    path = os.environ.get(VLLM_OPS_ENV)
    if path:
        if not os.path.exists(path):
            raise FileNotFoundError(f"{VLLM_OPS_ENV}={path}: no such file")
        if not hasattr(torch.ops._C, "rms_norm_static_fp8_quant"):
            torch.ops.load_library(path)
    else:
        import vllm._C  # noqa: F401 - registers torch.ops._C
    return torch.ops._C


def _vllm(variant):
    import torch
    ops = _vllm_ops()
    fp8 = torch.float8_e4m3fn
    if variant == "fp8-static":
        static, fused = ops.rms_norm_static_fp8_quant, ops.fused_add_rms_norm_static_fp8_quant

        def vllm_fp8_static(x, w, r, scale, eps):
            out = torch.empty(x.shape, dtype=fp8, device=x.device)
            if r is None:
                static(out, x, w, scale, eps)
                return out
            fused(out, x, r, w, scale, eps)          # r <- x + r in place
            return out, r
        return vllm_fp8_static
    if variant == "fp8-per-token":
        dyn = ops.rms_norm_dynamic_per_token_quant

        def vllm_fp8_per_token(x, w, r, scale_ub, eps):
            out = torch.empty(x.shape, dtype=fp8, device=x.device)
            scales = torch.empty((*x.shape[:-1], 1), dtype=torch.float32, device=x.device)
            dyn(out, x, w, scales, eps, scale_ub, r)   # r <- x + r in place
            return (out, scales) if r is None else (out, scales, r)
        return vllm_fp8_per_token
    raise ValueError(f"vllm: no {variant} op")


def _flashinfer(variant):
    import torch
    import flashinfer.norm as fi
    if variant == "gemma":
        def flashinfer_gemma(x, w, r, eps):
            if r is None:
                return fi.gemma_rmsnorm(x, w, eps)
            fi.gemma_fused_add_rmsnorm(x, r, w, eps)   # r <- x + r, x <- norm(r), in place
            return x, r
        return flashinfer_gemma
    if variant == "qk-norm":
        def flashinfer_qk(q, k, wq, wk, eps):
            return fi.rmsnorm(q, wq, eps), fi.rmsnorm(k, wk, eps)
        return flashinfer_qk
    if variant == "fp8-static":
        def flashinfer_fp8_static(x, w, r, scale, eps):
            out = torch.empty(x.shape, dtype=torch.float8_e4m3fn, device=x.device)
            if r is None:
                fi.rmsnorm_quant(out, x, w, scale, eps)
                return out
            fi.fused_add_rmsnorm_quant(out, x, r, w, scale, eps)   # r <- x + r in place
            return out, r
        return flashinfer_fp8_static
    raise ValueError(f"flashinfer: no {variant} function")


def _liger(variant):
    import torch
    from liger_kernel.ops.fused_add_rms_norm import LigerFusedAddRMSNormFunction
    from liger_kernel.ops.rms_norm import LigerRMSNormFunction
    if variant == "gemma":
        def liger_gemma(x, w, r, eps):
            with torch.no_grad():
                if r is None:
                    return LigerRMSNormFunction.apply(x, w, eps, 1.0, "gemma", False)
                return LigerFusedAddRMSNormFunction.apply(x, r, w, eps, 1.0, "gemma", False)
        return liger_gemma
    if variant == "qk-norm":
        def liger_qk(q, k, wq, wk, eps):     # 2-D rows: a strided q / k is copied first
            d = q.shape[-1]
            with torch.no_grad():
                qo = LigerRMSNormFunction.apply(q.reshape(-1, d), wq, eps, 0.0, "llama", False)
                ko = LigerRMSNormFunction.apply(k.reshape(-1, d), wk, eps, 0.0, "llama", False)
            return qo.view(q.shape), ko.view(k.shape)
        return liger_qk
    raise ValueError(f"liger: no {variant} path")


def _quack_fwd():
    import inspect
    from quack.rmsnorm import rmsnorm_fwd
    if "weight_offset" not in inspect.signature(rmsnorm_fwd).parameters:
        raise RuntimeError("this quack version's rmsnorm_fwd has no weight_offset")
    return rmsnorm_fwd


def _quack(variant):
    fwd = _quack_fwd()
    if variant == "gemma":
        def quack_gemma(x, w, r, eps):
            out, res_out, _ = fwd(x, w, residual=r, eps=eps, weight_offset=1.0)
            return out if r is None else (out, res_out)
        return quack_gemma
    if variant == "qk-norm":
        def quack_qk(q, k, wq, wk, eps):     # 2-D rows: a strided q / k is copied first
            d = q.shape[-1]
            qo = fwd(q.reshape(-1, d), wq, eps=eps)[0]
            ko = fwd(k.reshape(-1, d), wk, eps=eps)[0]
            return qo.view(q.shape), ko.view(k.shape)
        return quack_qk
    raise ValueError(f"quack: no {variant} path")


# ---------------------------------------------------------------------------------------------- subjects

@dataclass
class Subject:
    """One implementation of one variant: ``fn`` follows the variant's calling convention (None when
    ``support`` says why it cannot run here). ``inplace``: it writes into x and / or the residual."""
    name: str
    variant: str
    role: str                       # one of ROLES
    support: Support
    fn: Callable | None = field(default=None, repr=False)
    inplace: bool = False
    note: str = ""


# name -> (role, variants, needs, residual form, inplace with residual, loader, note)
_ENTRIES = {
    "ours": ("ours", VARIANTS, ("triton",), True, True, _ours, "one fused pass, fp32 math; the residual in place"),
    "torch": ("baseline", VARIANTS, (), True, False, lambda v: TORCH_FNS[v], "HF-style eager torch"),
    "torch-compile": ("peer", VARIANTS, (), True, False, lambda v: _compiled(TORCH_FNS[v]),
                      "torch.compile(dynamic=False) of the eager torch subject"),
    "ours-unfused": ("unfused", FP8, ("triton",), True, False, _ours_unfused,
                     "our plain RMSNorm, then a separate quantize kernel"),
    "vllm": ("peer", FP8, (), True, True, _vllm, "vLLM's op library"),
    "flashinfer": ("peer", ("gemma", "qk-norm", "fp8-static"), ("flashinfer",), True, True, _flashinfer,
                   "FlashInfer (CuTe-DSL when nvidia-cutlass-dsl is present, else its CUDA JIT kernels)"),
    "liger": ("peer", ("gemma", "qk-norm"), ("liger_kernel", "triton"), True, True, _liger,
              "Liger (offset 1, 'gemma' casting for Gemma; 'llama' for QK-norm)"),
    "quack": ("peer", ("gemma", "qk-norm"), ("quack", "cutlass"), True, False, _quack,
              "quack rmsnorm_fwd (weight_offset=1.0 for Gemma)"),
}
SUBJECT_NAMES = tuple(_ENTRIES)


def subject_variants(name: str) -> tuple:
    """The variants a subject has a form of."""
    if name not in _ENTRIES:
        raise ValueError(f"subject: unknown {name!r}; expected one of {', '.join(_ENTRIES)}")
    return _ENTRIES[name][1]


def subject_role(name: str) -> str:
    """One of ROLES: "ours", "baseline" (eager torch), "unfused" (FP8 without fusion) or "peer"."""
    subject_variants(name)
    return _ENTRIES[name][0]


def _fp8_support() -> Support:
    import torch
    return Support.yes() if hasattr(torch, "float8_e4m3fn") else \
        Support.no(f"no float8_e4m3fn dtype in torch {torch.__version__}")


def _device_support(name: str, variant: str, device: str) -> Support:
    import torch
    dev = str(device).split(":")[0]
    if dev == "cuda" and not torch.cuda.is_available():
        return Support.no("needs CUDA (no GPU visible to torch)")
    if dev == "cuda":
        if name == "quack" and torch.cuda.get_device_capability()[0] < 9:
            return Support.no("needs sm90 or newer")
        if variant in FP8 and torch.cuda.get_device_capability() < (8, 9):
            return Support.no("FP8 e4m3 conversion needs sm89 or newer")
        return Support.yes()
    if dev != "cpu":
        return Support.no(f"device {device!r}: runs on cuda (and the torch / Triton subjects on cpu)")
    if name in ("ours", "ours-unfused"):
        from .device import interpreter_on
        if not interpreter_on():
            return Support.no("Triton on CPU tensors needs TRITON_INTERPRET=1 (set before triton is imported)")
        return Support.yes()
    if name == "torch":
        return Support.yes()
    if name == "torch-compile":
        return Support.no("run on CUDA only (compiling each shape on CPU takes tens of seconds)")
    return Support.no("needs CUDA")


def subject_support(name: str, variant: str, residual: bool = False, device: str = "cuda") -> Support:
    """Whether a subject can run a variant here, and why not (the reason is never empty)."""
    check_variant(variant)
    if name not in _ENTRIES:
        raise ValueError(f"subject: unknown {name!r}; expected one of {', '.join(_ENTRIES)}")
    role, variants, needs, has_res, _, _, _ = _ENTRIES[name]
    if variant not in variants:
        return Support.no(f"{name} has no {variant} form")
    if residual and not has_res:
        return Support.no(f"{name} has no fused-residual {variant} form")
    missing = [m for m in needs if not has_module(m)]
    if not has_module("torch"):
        missing.insert(0, "torch")
    if missing:
        return Support.no("not installed: " + ", ".join(missing))
    if name == "vllm":
        from .impls.vllm import _check as vllm_check     # installed, or the op library's path exists
        s = vllm_check()
        if not s:
            return s
    if variant in FP8:
        s = _fp8_support()
        if not s:
            return s
    return _device_support(name, variant, device)


def subjects(variant: str, residual: bool = False, device: str = "cuda", names=None) -> list:
    """Every subject of a variant (or those named), loaded where supported; a load failure becomes the reason."""
    check_variant(variant)
    out = []
    for name in (names or SUBJECT_NAMES):
        if name not in _ENTRIES:
            raise ValueError(f"subject: unknown {name!r}; expected one of {', '.join(_ENTRIES)}")
        role, variants, _, _, inplace_res, loader, note = _ENTRIES[name]
        if variant not in variants and names is None:
            continue
        s = subject_support(name, variant, residual, device)
        fn = None
        if s:
            try:
                fn = loader(variant)
            except Exception as e:  # noqa: BLE001 - any failure to load is the reason it cannot run
                s = Support.no(f"failed to load: {type(e).__name__}: {e}".strip()[:300])
        out.append(Subject(name, variant, role, s, fn, inplace=bool(residual and inplace_res), note=note))
    return out


def support_table(variant: str, device: str = "cuda") -> list:
    """Which subjects run a variant here, and why not, without loading any: one dict per (subject, residual)
    with subject, role, residual, ok, reason (what ``--list --variant V`` prints)."""
    check_variant(variant)
    rows = []
    for name in SUBJECT_NAMES:
        if variant not in subject_variants(name):
            continue
        for res in ((False, True) if HAS_RESIDUAL[variant] else (False,)):
            s = subject_support(name, variant, res, device)
            rows.append({"subject": name, "role": subject_role(name), "residual": res, "ok": s.ok, "reason": s.reason})
    return rows
