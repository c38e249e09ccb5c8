"""The backward pass's subjects: who computes RMSNorm's gradients, the float64 reference, a bytes model.

Each subject (``SUBJECTS``, by name) says whether it can run here (``supports``, with a
reason when not) and, once loaded, gives ``BwdOps``:

- ``fwd(x, w, r, eps) -> state``       the forward, keeping what the backward needs
- ``bwd(state, dy, d_res) -> grads``   the backward alone, given that state
- ``fwd_bwd(x, w, r, eps, dy, d_res) -> grads``  both, as a training step runs them

``grads`` is ``(dx, dw, dr)``: the gradients of x, of the weight and (with the fused
residual add, else None) of the residual. ``dy`` is the upstream gradient of the
output, ``d_res`` that of the new residual (None without a residual). None of the
calls modifies its inputs.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from .impls.base import Support, missing_here
from .impls.torch_impls import hf_rmsnorm as hf_forward   # HF LlamaRMSNorm, the registry entry's function

DTYPES = ("float32", "float16", "bfloat16")
# ||grad - ref|| / ||ref|| a correct implementation stays under, per dtype (per gradient). bf16/fp16 admit
# a rounding of the saved input / new residual and of x * rstd (HF rounds it before the weight) and, under the
# Triton interpreter, a truncating fp32 -> bf16 store.
TOLERANCE = {"float32": 1e-5, "float16": 5e-3, "bfloat16": 2.5e-2}


@dataclass
class BwdOps:
    fwd: Callable
    bwd: Callable
    fwd_bwd: Callable


@dataclass
class BwdSubject:
    """One implementation of RMSNorm's backward (or one that has none: ``forward_only`` says why)."""
    name: str
    label: str
    role: str                            # "ours", "baseline" (speedups against it) or "peer"
    loader: Callable[[], BwdOps] | None
    devices: tuple = ("cuda",)
    requires: tuple = ()                 # importable modules it needs
    forward_only: str = ""               # non-empty: it has no backward, and this is why
    extra_check: Callable[[str], Support] | None = None
    _ops: BwdOps | None = field(default=None, repr=False)

    def supports(self, device: str = "cuda", dtype: str = "bfloat16") -> Support:
        if self.forward_only:
            return Support.no(f"forward only: {self.forward_only}")
        if dtype not in DTYPES:
            return Support.no(f"{dtype} not supported (supports {', '.join(DTYPES)})")
        reasons = missing_here(self.requires, self.devices, device)
        if not reasons and self.extra_check is not None:
            s = self.extra_check(str(device).split(":")[0])
            if not s:
                reasons.append(s.reason)
        return Support.no("; ".join(reasons)) if reasons else Support.yes()

    def load(self) -> BwdOps:
        if self._ops is None:
            self._ops = self.loader()
        return self._ops


# ---------------------------------------------------------------- autograd-based subjects

def autograd_ops(forward: Callable) -> BwdOps:
    """BwdOps for a differentiable ``forward(x, w, r, eps) -> out | (out, new_residual)``: the backward
    alone is ``torch.autograd.grad`` over the kept graph (retained, so it can run again)."""
    import torch

    def fwd(x, w, r, eps):
        xg, wg = x.detach().requires_grad_(), w.detach().requires_grad_()
        rg = None if r is None else r.detach().requires_grad_()
        got = forward(xg, wg, rg, eps)
        outs = got if isinstance(got, tuple) else (got,)
        return outs, (xg, wg) if rg is None else (xg, wg, rg)

    def grads(state, dy, d_res, retain):
        outs, ins = state
        gouts = (dy,) if len(outs) == 1 else (dy, d_res)
        g = torch.autograd.grad(outs, ins, gouts, retain_graph=retain)
        return g[0], g[1], (g[2] if len(g) > 2 else None)

    def bwd(state, dy, d_res):
        return grads(state, dy, d_res, True)

    def fwd_bwd(x, w, r, eps, dy, d_res):
        return grads(fwd(x, w, r, eps), dy, d_res, False)
    return BwdOps(fwd, bwd, fwd_bwd)


def _load_hf():
    return autograd_ops(hf_forward)


def _load_torch():
    from .impls.torch_impls import _load_torch as load_forward     # the registry entry's F.rms_norm function
    return autograd_ops(load_forward())


def _load_compile():
    """torch.compile of HF's forward (dynamic=False, one graph per shape); AOTAutograd compiles the backward."""
    import torch

    from .impls.torch_impls import lift_recompile_limits
    lift_recompile_limits()
    return autograd_ops(torch.compile(hf_forward, dynamic=False))


def _load_liger():
    from liger_kernel.ops.fused_add_rms_norm import LigerFusedAddRMSNormFunction
    from liger_kernel.ops.rms_norm import LigerRMSNormFunction

    def forward(x, w, r, eps):      # in_place=False: the backward must not write dx into dy
        if r is None:
            return LigerRMSNormFunction.apply(x, w, eps, 0.0, "llama", False)
        return tuple(LigerFusedAddRMSNormFunction.apply(x, r, w, eps, 0.0, "llama", False))
    return autograd_ops(forward)


# ---------------------------------------------------------------- kernel-level subjects

def _load_quack():
    """quack's own forward (rstd stored) and rmsnorm_bwd; fwd_bwd through its autograd function."""
    import torch
    from quack.rmsnorm import rmsnorm as q_rmsnorm
    from quack.rmsnorm import rmsnorm_bwd as q_bwd
    from quack.rmsnorm import rmsnorm_fwd as q_fwd

    def fwd(x, w, r, eps):
        n = x.shape[-1]
        x2 = x.reshape(-1, n)
        r2 = None if r is None else r.reshape(-1, n)
        out, res_out, rstd = q_fwd(x2, w, residual=r2, eps=eps, store_rstd=True)
        s = x2 if r is None else res_out
        return x.shape, s, w, rstd

    def bwd(state, dy, d_res):
        shape, s, w, rstd = state
        n = shape[-1]
        dro = None if d_res is None else d_res.reshape(-1, n)
        got = q_bwd(s, w, dy.reshape(-1, n), rstd, dresidual_out=dro, has_residual=d_res is not None)
        dx, dw = got[0], got[1]
        dr = None
        if d_res is not None:
            dr = got[3] if len(got) > 3 and got[3] is not None else dx
            dr = dr.view(shape)
        return dx.view(shape), dw, dr

    def fwd_bwd(x, w, r, eps, dy, d_res):
        xg, wg = x.detach().requires_grad_(), w.detach().requires_grad_()
        n = x.shape[-1]
        if r is None:
            out = q_rmsnorm(xg.reshape(-1, n), wg, eps=eps)
            dx, dw = torch.autograd.grad(out, (xg, wg), dy.reshape(-1, n))
            return dx, dw, None
        rg = r.detach().requires_grad_()
        out, res_out = q_rmsnorm(xg.reshape(-1, n), wg, residual=rg.reshape(-1, n), eps=eps, prenorm=True)
        dx, dw, dr = torch.autograd.grad((out, res_out), (xg, wg, rg), (dy.reshape(-1, n), d_res.reshape(-1, n)))
        return dx, dw, dr
    return BwdOps(fwd, bwd, fwd_bwd)


def _load_ours():
    from .kernels import training as t

    def fwd(x, w, r, eps):
        if r is None:
            _, rstd = t.rmsnorm_fwd(x, w, eps)
            return x, w, rstd
        _, s, rstd = t.fused_add_rmsnorm_fwd(x, r, w, eps)
        return s, w, rstd

    def bwd(state, dy, d_res):
        s, w, rstd = state
        ds, dw = t.rmsnorm_bwd(dy, s, w, rstd, d_res)
        return ds, dw, (ds if d_res is not None else None)

    def forward(x, w, r, eps):
        return t.rmsnorm(x, w, r, eps)
    return BwdOps(fwd, bwd, autograd_ops(forward).fwd_bwd)


def _ours_check(device: str) -> Support:
    from .device import interpreter_on
    if device == "cpu" and not interpreter_on():
        return Support.no("needs CUDA (or TRITON_INTERPRET=1 for CPU tensors)")
    return Support.yes()


def _sm90(device: str) -> Support:
    import torch
    if device == "cuda" and torch.cuda.get_device_capability()[0] < 9:
        return Support.no("needs sm90 or newer")
    return Support.yes()


SUBJECTS: dict[str, BwdSubject] = {s.name: s for s in [
    BwdSubject("huggingface", "HuggingFace (autograd)", "baseline", _load_hf, ("cpu", "cuda"), ("torch",)),
    BwdSubject("torch", "torch F.rms_norm (autograd)", "peer", _load_torch, ("cpu", "cuda"), ("torch",)),
    BwdSubject("torch_compile", "torch.compile(HF) fwd + bwd", "peer", _load_compile, ("cpu", "cuda"), ("torch",)),
    BwdSubject("liger", "Liger", "peer", _load_liger, ("cuda",), ("liger_kernel", "triton")),
    BwdSubject("quack", "quack", "peer", _load_quack, ("cuda",), ("quack", "cutlass"), extra_check=_sm90),
    BwdSubject("triton", "ours (Triton)", "ours", _load_ours, ("cpu", "cuda"), ("triton",),
               extra_check=_ours_check),
    BwdSubject("flashinfer", "FlashInfer", "peer", None, forward_only="FlashInfer has no RMSNorm backward"),
    BwdSubject("vllm", "vLLM", "peer", None, forward_only="vLLM's RMSNorm ops are inference-only (no backward)"),
]}


def subjects(names=None) -> list[BwdSubject]:
    if names is None or names == "all":
        return list(SUBJECTS.values())
    if isinstance(names, str):
        names = [n for n in names.replace(",", " ").split() if n]
    unknown = [n for n in names if n not in SUBJECTS]
    if unknown:
        raise ValueError(f"subjects: unknown backward subject(s) {', '.join(unknown)}; known: {', '.join(SUBJECTS)}")
    return [SUBJECTS[n] for n in names]


def support_matrix(device: str = "cuda", dtypes=DTYPES) -> list[dict]:
    """One row per (subject, dtype): can it compute gradients here, and why not."""
    rows = []
    for s in SUBJECTS.values():
        for d in dtypes:
            sup = s.supports(device, d)
            rows.append({"impl": s.name, "dtype": d, "ok": sup.ok, "reason": sup.reason})
    return rows


def warm_graph_capture():
    """Capture one autograd backward before any timing: in a fresh process the first capture of an autograd
    backward was seen to fail on an H200 ("operation failed due to a previous error during capture"), and
    the first subject timed in graph mode would carry that failure."""
    import torch
    x = torch.randn(8, 64, device="cuda", requires_grad=True)
    y = (x.float() * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6)).to(x.dtype)
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    try:
        with torch.cuda.stream(s):
            torch.autograd.grad(y, x, torch.ones_like(y), retain_graph=True)
        g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g):
            torch.autograd.grad(y, x, torch.ones_like(y), retain_graph=True)
    except Exception:  # noqa: BLE001 - only the first capture's side effect matters
        pass
    torch.cuda.current_stream().wait_stream(s)
    torch.cuda.synchronize()


# ---------------------------------------------------------------- inputs, reference, errors

def make_grad_inputs(tokens: int, hidden: int, dtype: str, residual: bool, device: str, seed: int = 0,
                     weight_dtype: str | None = None):
    """(x, w, r, dy, d_res) with random weights and random upstream gradients (r, d_res None without residual)."""
    import torch
    g = torch.Generator(device="cpu").manual_seed(seed)
    dt = getattr(torch, dtype)
    wdt = getattr(torch, weight_dtype or dtype)

    def rnd(*shape, scale=1.0, dtype=dt):
        return (torch.randn(*shape, generator=g) * scale).to(dtype=dtype, device=device)
    x = rnd(tokens, hidden)
    w = (torch.rand(hidden, generator=g) * 1.5 + 0.25).to(dtype=wdt, device=device)
    r = rnd(tokens, hidden) if residual else None
    dy = rnd(tokens, hidden)
    d_res = rnd(tokens, hidden, scale=0.5) if residual else None
    return x, w, r, dy, d_res


def reference_grads(x, w, r, eps, dy, d_res, chunk_rows: int = 4096):
    """(dx, dw, dr) by autograd on float64 copies, in row chunks; dw summed over chunks in float64, dx and dr
    kept in float32 (rounding them adds ~3e-8 relative error, far below every tolerance, and halves the memory
    that 65536 x 16384 needs)."""
    import torch
    n = x.shape[-1]
    x2, dy2 = x.reshape(-1, n), dy.reshape(-1, n)
    r2 = None if r is None else r.reshape(-1, n)
    dr2 = None if d_res is None else d_res.reshape(-1, n)
    w64 = w.detach().to(torch.float64)
    dxs, drs = [], []
    dw = torch.zeros(n, dtype=torch.float64, device=x.device)
    for i in range(0, x2.shape[0], chunk_rows):
        sl = slice(i, i + chunk_rows)
        xc = x2[sl].detach().to(torch.float64).requires_grad_()
        wc = w64.clone().requires_grad_()
        ins = [xc, wc]
        s = xc
        if r2 is not None:
            rc = r2[sl].detach().to(torch.float64).requires_grad_()
            ins.append(rc)
            s = xc + rc
        out = s * torch.rsqrt(s.pow(2).mean(-1, keepdim=True) + eps) * wc
        outs, gouts = [out], [dy2[sl].to(torch.float64)]
        if r2 is not None and dr2 is not None:
            outs.append(s)
            gouts.append(dr2[sl].to(torch.float64))
        g = torch.autograd.grad(outs, ins, gouts)
        dxs.append(g[0].float())
        dw += g[1]
        if r2 is not None:
            drs.append(g[2].float())
        del g, out, outs, s
    dx = torch.cat(dxs).view(x.shape)
    dr = torch.cat(drs).view(x.shape) if r2 is not None else None
    return dx, dw, dr


def rel_err(got, ref, chunk: int = 1 << 26) -> float:
    """||got - ref|| / ||ref|| in float64; NaN if got is missing or has a non-finite value. Summed over
    chunks of ``chunk`` elements, so that a 2^30-element gradient needs 1 GiB of float64 at a time, not 16."""
    import torch
    if got is None:
        return float("nan")
    g, r = got.detach().reshape(-1), ref.reshape(-1)
    if g.numel() != r.numel():
        raise ValueError(f"got: {tuple(got.shape)} does not match the reference's {tuple(ref.shape)}")
    num = den = 0.0
    for i in range(0, r.numel(), chunk):
        gc, rc = g[i:i + chunk].to(torch.float64), r[i:i + chunk].to(torch.float64)
        if not bool(torch.isfinite(gc).all()):
            return float("nan")
        num += float(torch.sum((gc - rc) ** 2))
        den += float(torch.sum(rc * rc))
        del gc, rc
    return (num / den) ** 0.5 if den else num ** 0.5


def check_grads(ops: BwdOps, x, w, r, eps, dy, d_res, dtype: str, ref=None, use: str = "bwd") -> dict:
    """Gradients of one subject against the float64 reference: err_dx, err_dw, err_dr, status, reason.

    use: "bwd" (the backward alone after fwd) or "fwd_bwd". Inputs must come back unchanged."""
    import torch
    ref = ref if ref is not None else reference_grads(x, w, r, eps, dy, d_res)
    keep = [t.clone() for t in (x, w, r, dy, d_res) if t is not None]
    if use == "bwd":
        got = ops.bwd(ops.fwd(x, w, r, eps), dy, d_res)
    else:
        got = ops.fwd_bwd(x, w, r, eps, dy, d_res)
    dx, dw, dr = got
    row = {"err_dx": rel_err(dx, ref[0]), "err_dw": rel_err(dw, ref[1]),
           "err_dr": rel_err(dr, ref[2]) if r is not None else float("nan")}
    tol = TOLERANCE[dtype]
    problems = [f"{k} {v:.3g} > {tol:g}" for k, v in row.items()
                if not (k == "err_dr" and r is None) and not v <= tol]
    if dx is not None and dx.dtype != x.dtype:
        problems.append(f"dx dtype {dx.dtype} != x dtype {x.dtype}")
    if dw is not None and dw.dtype != w.dtype:
        problems.append(f"dw dtype {dw.dtype} != weight dtype {w.dtype}")
    now = [t for t in (x, w, r, dy, d_res) if t is not None]
    if any(not torch.equal(a, b) for a, b in zip(keep, now)):
        problems.append("changed an input")
    row.update(status="wrong" if problems else "ok", reason="; ".join(problems))
    return row


# ---------------------------------------------------------------- bytes model

def bwd_bytes(tokens: int, hidden: int, itemsize: int, residual: bool, w_itemsize: int | None = None,
              partial_rows: int = 0) -> int:
    """Bytes the backward must move: read s (x, or x + r) and dy, the weight and rstd (fp32 per row); write dx
    and dw; with a residual also read the new residual's gradient (dx is the residual's gradient too).
    partial_rows: fp32 dw partial rows written and read back (e.g. the SM count); 0 counts dw alone."""
    wb = itemsize if w_itemsize is None else w_itemsize
    th = tokens * hidden * itemsize
    return (3 + int(residual)) * th + 2 * hidden * wb + 4 * tokens + 2 * 4 * partial_rows * hidden


def fwd_bytes(tokens: int, hidden: int, itemsize: int, residual: bool, w_itemsize: int | None = None) -> int:
    """The training forward: read x (and r) and the weight; write out (and the new residual) and rstd."""
    wb = itemsize if w_itemsize is None else w_itemsize
    return (4 if residual else 2) * tokens * hidden * itemsize + hidden * wb + 4 * tokens


def pass_bytes(pass_: str, tokens: int, hidden: int, itemsize: int, residual: bool, **kw) -> int:
    """Bytes of a pass: "bwd" (the backward alone) or "fwd+bwd"."""
    b = bwd_bytes(tokens, hidden, itemsize, residual, kw.get("w_itemsize"), kw.get("partial_rows", 0))
    if pass_ == "bwd":
        return b
    if pass_ == "fwd+bwd":
        return b + fwd_bytes(tokens, hidden, itemsize, residual, kw.get("w_itemsize"))
    raise ValueError(f"pass: expected 'bwd' or 'fwd+bwd', got {pass_!r}")
