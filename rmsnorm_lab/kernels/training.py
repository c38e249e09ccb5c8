"""Our Triton training kernels as torch.library custom ops (autograd and fake implementations registered).

Ops (namespace ``rmsnorm_lab``):

- ``rmsnorm_fwd(x, weight, eps) -> (out, rstd)``
- ``fused_add_rmsnorm_fwd(x, residual, weight, eps) -> (out, new_residual, rstd)``
- ``rmsnorm_bwd(dy, s, weight, rstd, d_new_residual) -> (ds, dw)``
  (``s`` is ``x``, or the new residual ``x + residual`` of the fused add; ``ds`` is the
  gradient of ``x`` and of the residual; ``d_new_residual`` may be None)

``out`` has ``x``'s dtype; ``rstd`` is float32 with shape ``x.shape[:-1]``; ``dw`` has the
weight's dtype, which may differ from ``x``'s (e.g. a float32 weight with bfloat16
activations). The two forward ops are differentiable, so ``torch.compile(fullgraph=True)``
traces through them as single nodes and CUDA-graph capture replays their launches.
They run on CUDA tensors, and on CPU tensors under ``TRITON_INTERPRET=1``.

``rmsnorm(x, weight, residual=None, eps)`` is the checked entry: out, or (out, new_residual).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from ..device import interpreter_on
from ..validate import UnsupportedError, check_eps
from .config import next_pow2
from .launch import on_device
from .variants import sm_count

_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


# ---------------------------------------------------------------- launch policy

@dataclass(frozen=True)
class TrainLaunch:
    """How a training kernel is launched: ``rows`` per tile, ``warps`` per program, ``programs``."""
    block_n: int
    rows: int
    warps: int
    programs: int
    stages: int = 1
    tail: int = 0        # backward: a second column block of this width after block_n (0: none)
    reload: int = 0      # backward: 0 one pass; 1 two passes, s and dy re-read for ds; 2 w re-read too
    maxnreg: int = 0     # backward: registers a thread may use (0: the compiler's choice), so that
                         # several two-pass programs fit an SM's 65536 registers
    sum_cols: int = 0    # backward, dw's second step: columns a program and partial rows a load
    sum_rows: int = 0    # (0: ``sum_launch``'s choice)


TILE = 4096          # forward: elements of one tensor a program holds (rows x block_n)
SUM_TILE = 8192      # dw's second step: partials a program loads at once (64 fp32 a thread over 4 warps)
SUM_MAX_ROWS = 512   # ... and at most this many partial rows a load


def sum_launch(hidden: int, parts: int) -> tuple[int, int]:
    """dw's second step, (columns a program, partial rows a load): every partial row of a column block
    in one load (up to SUM_MAX_ROWS), the columns narrowed to keep SUM_TILE elements a program.

    The partials (one fp32 row per backward program: 264 rows with two programs per SM on 132 SMs)
    are still in L2 when this step runs, so its time is latency: one round of loads in flight per program,
    and enough programs (hidden / 16 at 264 rows) to spread them over the SMs. A loop over 32 rows a load
    with 64 columns a program paid one L2 round trip per 32 rows on 32 programs at hidden 2048; this
    launch took 1.1-4.3 µs off the backward cold, 0.5-3.7 µs in graph mode (H200, bf16, 2048-8192 x
    16384-32768 tokens, 15 of 16 shapes; experiments/backward_search.py --sum 64x32,0x0).
    """
    rows = min(SUM_MAX_ROWS, next_pow2(max(1, parts)))
    cols = max(16, min(64, SUM_TILE // rows))
    return min(cols, next_pow2(hidden)), rows


def fwd_launch(hidden: int, n_rows: int) -> TrainLaunch:
    """Forward: a program per tile of ~TILE elements (up to 16 rows), ~8 elements per thread, 4-32 warps."""
    block_n = next_pow2(hidden)
    rows = max(1, min(16, TILE // block_n))
    warps = max(4, min(32, block_n * rows // 512))
    return TrainLaunch(block_n, rows, warps, max(1, -(-n_rows // rows)))


def bwd_launch(hidden: int, n_rows: int, sm_count: int, residual: bool = False) -> TrainLaunch:
    """Backward: programs walk row tiles in a grid-stride loop, each writing one fp32 dw partial row.

    ``programs`` is ``per_sm`` x the SMs (never more than the tiles), so dw's partials are a few hundred
    rows whatever the token count. The rules, each the fastest launch (or within 3% of it) of a search
    on an H200 over rows x warps x programs per SM x stages x column blocks x one or two passes (the
    searches and their figures: ``reports/nvidia-h200/README.md``, ``backward/`` -> ``search/``):

    | columns | launch | why |
    | --- | --- | --- |
    | up to 1024; 1025-3072 + res | 8192-slot tiles, 4 warps, 2 per SM, one pass | two small programs keep more rows in flight than one large one |
    | 2048, no res | 2 rows, 4 warps, 4 per SM, two passes, w re-read, 128 regs | 4 programs fit at 128 registers; more loads in flight |
    | 1025-3072 not a power of two, no res | 8192-slot tiles, 4 warps, 3 per SM, two passes, 168 regs, 2 stages | as above, at 3 programs |
    | 3073-4095 | 2 rows, 8 warps, 2 per SM, two passes, 128 regs, 2 stages | a 4096 block at least 3/4 used (3584) |
    | 4096-5120, no res | 1 row, 4 warps, 4 per SM, two passes, w re-read, 128 regs | small programs, many per SM (4608, 4096, 5120) |
    | 4096 + res | 4 rows, 8 warps, 1 per SM, one pass, 2 stages | the residual's third tensor through a 2-stage pipeline |
    | 4097-5120 + res | 4096 + a tail block, 1 row, 4 warps, 3 per SM, two passes, 168 regs, 2 stages | no masked lanes holding registers (a 5120 row in one 8192 block leaves 3/8 idle) |
    | 5121-6144, no res | 4096 + 2048 blocks, 1 row, 4 warps, 3 per SM, two passes, 168 regs, 2 stages | as above |
    | 5121-6143 + res | 4096 + 2048 blocks, 1 row, 8 warps, 2 per SM, one pass, 2 stages | 5376 + res |
    | 6145-8192 no res; 6144-8192 + res | 1 row, 8 warps, 2 per SM, two passes, 128 regs (6144 + res: 4096 + 2048, 2 stages) | 7168 + res: one pass over 4096 + 4096 reached 65-69% of copy; 8192 + res: one pass (2 rows, 1 per SM) spilled, fp16 5-9% slower |
    | wider | 1 row, 32 warps, 1 per SM, two passes (w re-read with a residual) | one pass over a 16384 row spills (61-69% of copy); two reach 85-101% |

    Two passes (``reload`` 1): the row's dot first, then s and dy read again (L1/L2 hits) for ds and
    dw, so s, dy, w and dw are never live at once; with the registers capped (``maxnreg``) so that
    ``per_sm`` programs fit an SM's 65536, more programs run per SM than a one-pass program allows.
    ``reload`` 2 reads w again too. Widths inside a range other than the searched ones (1536, 2048,
    2560, 3584, 4096, 4608, 5120, 5376, 6144, 7168, 8192, 16384) were not searched.
    """
    block_n = next_pow2(hidden)
    pow2 = block_n == hidden
    tail, stages, reload, maxnreg = 0, 2 if residual else 1, 0, 0
    if 3072 < hidden < 4096:                                            # as 3584: two passes, two programs per SM
        rows, warps, per_sm, reload, maxnreg, stages = 2, 8, 2, 1, 128, 2
    elif 1024 < hidden <= 3072 and not pow2 and not residual:          # as 1536 and 2560: two passes, 3 per SM
        rows, warps, per_sm, reload, maxnreg, stages = 8192 // block_n, 4, 3, 1, 168, 2
    elif hidden == 2048 and not residual:                               # two passes, 4 per SM
        rows, warps, per_sm, reload, maxnreg = 2, 4, 4, 2, 128
    elif block_n <= 2048 or (block_n == 4096 and not pow2):            # one pass, 8192-slot tiles
        rows, warps, per_sm = 8192 // block_n, 4, 2
    elif 4096 <= hidden <= 5120 and not residual:                       # as 4608: one row, 4 warps, 4 per SM
        rows, warps, per_sm, reload, maxnreg = 1, 4, 4, 2, 128
    elif block_n == 4096 and residual:
        rows, warps, per_sm = 4, 8, 1
    elif 4096 < hidden <= 5120:                                         # + res: 4096 + a tail block, 3 per SM
        block_n, tail, rows, warps, per_sm, reload, maxnreg, stages = 4096, next_pow2(hidden - 4096), 1, 4, 3, 1, 168, 2
    elif 5120 < hidden <= 6144 and not residual:                        # 4096 + 2048, one row, 3 per SM
        block_n, tail, rows, warps, per_sm, reload, maxnreg, stages = 4096, 2048, 1, 4, 3, 1, 168, 2
    elif block_n <= 8192 and (not residual or 6144 <= hidden):         # two passes, two programs per SM
        rows, warps, per_sm, reload, maxnreg = 1, 8, 2, 1, 128
        if hidden == 6144:                                              # + res: 4096 + 2048 columns
            block_n, tail, stages = 4096, 2048, 2
    elif block_n == 8192:                                               # 5121-6143 + res (5376): 4096 + 2048
        block_n, tail, rows, warps, per_sm = 4096, 2048, 1, 8, 2
    else:
        rows, warps, per_sm, stages = 1, 32, 1, 1
        reload = 2 if residual else 1
    tiles = max(1, -(-n_rows // rows))
    return TrainLaunch(block_n, rows, warps, max(1, min(tiles, per_sm * sm_count)), stages, tail, reload=reload,
                       maxnreg=maxnreg)


def check_bwd_launch(cfg: TrainLaunch, hidden: int) -> None:
    """A backward launch for rows of ``hidden`` columns; ValueError naming ``cfg`` if it cannot run."""
    if cfg.block_n + cfg.tail < hidden or cfg.block_n & (cfg.block_n - 1) or cfg.tail & (cfg.tail - 1):
        raise ValueError(f"cfg: column blocks {cfg.block_n} + {cfg.tail} must be powers of two covering {hidden}")
    if cfg.reload not in (0, 1, 2):
        raise ValueError(f"cfg: reload must be 0, 1 or 2, got {cfg.reload}")
    if cfg.maxnreg and not 16 <= cfg.maxnreg <= 255:
        raise ValueError(f"cfg: maxnreg must be 0 (the compiler's choice) or 16-255, got {cfg.maxnreg}")
    for name in ("sum_cols", "sum_rows"):
        v = getattr(cfg, name)
        if v < 0 or v & (v - 1):
            raise ValueError(f"cfg: {name} must be 0 (sum_launch's choice) or a power of two, got {v}")
    if cfg.rows < 1 or cfg.programs < 1:
        raise ValueError(f"cfg: rows and programs must be >= 1, got {cfg.rows} and {cfg.programs}")


def _kernels():
    from . import _rmsnorm_bwd
    return _rmsnorm_bwd


def _check_device(t: torch.Tensor, name: str) -> None:
    if not t.is_cuda and not interpreter_on():
        raise UnsupportedError(f"{name}: our Triton training kernels need CUDA (or TRITON_INTERPRET=1 for CPU "
                               f"tensors), got a tensor on {t.device}")


# ---------------------------------------------------------------- the launches (real tensors)

def _forward(x, residual, weight, eps):
    _check_device(x, "x")
    n = x.shape[-1]
    x2 = x.reshape(-1, n).contiguous()
    m = x2.shape[0]
    out = torch.empty((m, n), dtype=x.dtype, device=x.device)
    rstd = torch.empty((m,), dtype=torch.float32, device=x.device)
    if residual is not None:
        r2 = residual.reshape(-1, n).contiguous()
        new_res = torch.empty((m, n), dtype=residual.dtype, device=x.device)
    else:
        r2, new_res = x2, out            # unused without HAS_RES
    if m:
        cfg = fwd_launch(n, m)
        w = weight.contiguous()
        with on_device(x):
            _kernels().rmsnorm_fwd_train_kernel[(cfg.programs,)](
                x2, r2, w, out, new_res, rstd, x2.stride(0), r2.stride(0), out.stride(0), new_res.stride(0),
                m, eps, N=n, BLOCK_N=cfg.block_n, ROWS=cfg.rows, HAS_RES=residual is not None,
                num_warps=cfg.warps)
    shape = x.shape
    out, rstd = out.view(shape), rstd.view(shape[:-1])
    return (out, rstd) if residual is None else (out, new_res.view(shape), rstd)


def _backward(dy, s, weight, rstd, d_res, cfg: TrainLaunch | None = None):
    _check_device(s, "s")
    n = s.shape[-1]
    s2 = s.reshape(-1, n).contiguous()
    dy2 = dy.reshape(-1, n).contiguous()
    m = s2.shape[0]
    rstd1 = rstd.reshape(-1).contiguous()
    dro2 = d_res.reshape(-1, n).contiguous() if d_res is not None else dy2
    ds = torch.empty((m, n), dtype=s.dtype, device=s.device)
    dw = torch.empty((n,), dtype=weight.dtype, device=s.device)
    if m == 0:
        dw.zero_()
        return ds.view(s.shape), dw
    cfg = cfg or bwd_launch(n, m, sm_count(s.device), d_res is not None)
    check_bwd_launch(cfg, n)
    part = torch.empty((cfg.programs, n), dtype=torch.float32, device=s.device)
    k = _kernels()
    with on_device(s):
        k.rmsnorm_bwd_kernel[(cfg.programs,)](
            dy2, s2, weight.contiguous(), rstd1, dro2, ds, part,
            dy2.stride(0), s2.stride(0), dro2.stride(0), ds.stride(0), m,
            N=n, BLOCK_N=cfg.block_n, ROWS=cfg.rows, HAS_DRES=d_res is not None, STAGES=cfg.stages,
            TAIL=cfg.tail, RELOAD=cfg.reload, num_warps=cfg.warps,
            **({"maxnreg": cfg.maxnreg} if cfg.maxnreg else {}))
        block_c, block_p = sum_launch(n, cfg.programs)
        block_c, block_p = cfg.sum_cols or block_c, cfg.sum_rows or block_p
        k.sum_partials_kernel[(-(-n // block_c),)](part, dw, cfg.programs, N=n, BLOCK_C=block_c,
                                                   BLOCK_P=block_p, num_warps=4)
    return ds.view(s.shape), dw


# ---------------------------------------------------------------- the custom ops

@torch.library.custom_op("rmsnorm_lab::rmsnorm_fwd", mutates_args=())
def rmsnorm_fwd(x: torch.Tensor, weight: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """RMSNorm forward; also returns rstd (float32, one per row) for the backward."""
    return _forward(x, None, weight, eps)


@torch.library.custom_op("rmsnorm_lab::fused_add_rmsnorm_fwd", mutates_args=())
def fused_add_rmsnorm_fwd(x: torch.Tensor, residual: torch.Tensor, weight: torch.Tensor,
                          eps: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """s = x + residual (fp32, stored in the residual's dtype as the new residual); out = norm(s) * weight."""
    return _forward(x, residual, weight, eps)


@torch.library.custom_op("rmsnorm_lab::rmsnorm_bwd", mutates_args=())
def rmsnorm_bwd(dy: torch.Tensor, s: torch.Tensor, weight: torch.Tensor, rstd: torch.Tensor,
                d_new_residual: Optional[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """(ds, dw) from the upstream gradient, the saved input s, the weight and rstd."""
    return _backward(dy, s, weight, rstd, d_new_residual)


def _empty(t, dtype=None, shape=None):
    return torch.empty(t.shape if shape is None else shape, dtype=dtype or t.dtype, device=t.device)


@rmsnorm_fwd.register_fake
def _(x, weight, eps):
    return _empty(x), _empty(x, torch.float32, x.shape[:-1])


@fused_add_rmsnorm_fwd.register_fake
def _(x, residual, weight, eps):
    return _empty(x), _empty(residual), _empty(x, torch.float32, x.shape[:-1])


@rmsnorm_bwd.register_fake
def _(dy, s, weight, rstd, d_new_residual):
    return _empty(s), _empty(weight)


def _setup_plain(ctx, inputs, output):
    x, weight, _ = inputs
    ctx.save_for_backward(x, weight, output[1])


def _backward_plain(ctx, d_out, d_rstd):
    x, weight, rstd = ctx.saved_tensors
    dx, dw = rmsnorm_bwd(d_out, x, weight, rstd, None)
    return dx, dw, None


def _setup_fused(ctx, inputs, output):
    _, _, weight, _ = inputs
    ctx.save_for_backward(output[1], weight, output[2])


def _backward_fused(ctx, d_out, d_new_residual, d_rstd):
    s, weight, rstd = ctx.saved_tensors
    ds, dw = rmsnorm_bwd(d_out, s, weight, rstd, d_new_residual)
    return ds, ds, dw, None


rmsnorm_fwd.register_autograd(_backward_plain, setup_context=_setup_plain)
fused_add_rmsnorm_fwd.register_autograd(_backward_fused, setup_context=_setup_fused)


# ---------------------------------------------------------------- the checked entry

def check_training_inputs(x, weight, residual=None, eps=1e-6) -> float:
    """Inputs of the training ops: TypeError / ValueError / UnsupportedError naming the argument; returns eps.

    x: float32, float16 or bfloat16 (..., hidden); weight: (hidden,), any of those dtypes, on x's
    device; residual: None or x's shape, dtype and device.
    """
    eps = check_eps(eps)
    for name, t in (("x", x), ("weight", weight), ("residual", residual)):
        if t is None and name == "residual":
            continue
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name}: expected a torch.Tensor, got {type(t).__name__}")
        if t.dtype not in _DTYPES:
            raise TypeError(f"{name}: expected float32, float16 or bfloat16, got {t.dtype}")
    if x.dim() < 1 or x.shape[-1] == 0:
        raise ValueError(f"x: expected shape (..., hidden) with hidden >= 1, got {tuple(x.shape)}")
    if weight.dim() != 1 or weight.shape[0] != x.shape[-1]:
        raise ValueError(f"weight: expected shape ({x.shape[-1]},) to match x's hidden size, got {tuple(weight.shape)}")
    if weight.device != x.device:
        raise ValueError(f"weight: expected device {x.device} (same as x), got {weight.device}")
    if residual is not None:
        if residual.shape != x.shape:
            raise ValueError(f"residual: expected shape {tuple(x.shape)} (same as x), got {tuple(residual.shape)}")
        if residual.dtype != x.dtype:
            raise TypeError(f"residual: expected dtype {x.dtype} (same as x), got {residual.dtype}")
        if residual.device != x.device:
            raise ValueError(f"residual: expected device {x.device} (same as x), got {residual.device}")
    _check_device(x, "x")
    return eps


def rmsnorm(x, weight, residual=None, eps: float = 1e-6):
    """Differentiable RMSNorm with our Triton kernels: out, or (out, new_residual) with a residual."""
    eps = check_training_inputs(x, weight, residual, eps)
    if residual is None:
        return rmsnorm_fwd(x, weight, eps)[0]
    out, new_res, _ = fused_add_rmsnorm_fwd(x, residual, weight, eps)
    return out, new_res
