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

    Measured on an H200 (bf16, graph and cold mode; experiments/backward_search.py: every launch of
    rows 1-16 x warps 4-32 x 1, 2 or 4 programs per SM x 1-2 pipeline stages x one or two column
    blocks x one or two passes per row), the fastest launches were:

    - up to 2048 columns, and widths from 2049 to 3072 (2560: 2 rows), except non-power-of-two widths
      without a residual (below): tiles of 8192 slots (4 rows at 2048), 4 warps, 2 programs per SM, one
      pass. Two small programs keep more rows in flight per SM than one large one.
    - with a residual (a third tensor read), a 2-stage pipeline, and at 5120 and 6144 two column
      blocks (4096 + 1024 / 2048): no masked lanes holding registers. 4096 with a residual: 4 rows,
      8 warps, one program per SM; 8192 with a residual: 2 rows, 8 warps, one program per SM.
    - from 4096 columns without a residual, and at 6144 with one: two passes per row (``reload`` 1:
      the row's dot first, then s and dy read again from cache for ds and dw), 8 warps, 2 programs per
      SM capped at 128 registers a thread (two programs fill the SM's 65536). Two passes never hold s,
      dy, w and dw at once, so two such programs fit an SM where a one-pass program of that size did not;
      at 32768 tokens against the one-pass launches they replace: 4096 211 -> 206 µs, 5120 289 -> 284,
      6144 321 -> 308 (+ res 411 -> 391), 8192 443 -> 393 (cold). Now 1 row per tile; 6144 + residual
      splits its columns 4096 + 2048; 4096-6144 without a residual take the later rules below. Between 6144
      and 8192 columns with a residual the same launch (one 8192 block, 2 stages): at 7168 + residual
      the one-pass 4096 + 4096 split reached 65-69% of copy bandwidth (1.3x quack), and this launch was
      within 1% of the best at both neighbours (6144 and 8192 with a residual).
    - 16384 (searched at 4096-32768 tokens, every launch of 4-32 warps x 1-4 programs per SM x the
      two-pass options): two passes, 1 row, 32 warps, one program per SM; with a residual w is read
      again too (reload 2). Held in registers for one pass, a 16384-wide row of s, dy, w and dw spilled
      at 16 warps and reached 61-69% of copy bandwidth; two passes reach 90-96% (95-100% with a
      residual), 0.70-0.80x the time of quack's backward (bf16, graph mode). Splitting a row's columns
      over 2-4 programs, each computing the whole row's dot, was 1.1-1.2x slower than this.
    - widths off that grid (bf16, 16384 tokens, every launch of 1-4 rows x 4-8 warps x 1-2 programs per
      SM x 1-2 stages x one or two passes; fp16 at 3584 + residual, 16384 and 65536 tokens too): at 3584
      the two-pass launch above (2 rows, 8 warps, 2 stages) took 115.6 -> 101.1 µs and, with a residual,
      135.7 -> 124.5 (fp16 + residual at 65536 tokens 532 -> 452, quack 484). At 5376 the 4096 + 2048
      split (as 6144) took 151.3 -> 145.4 µs, and with a residual 8 warps on the 4096 + 2048 blocks 201.5
      -> 184.9. 4608 + residual kept its launch (1536 and 2560: the next rule). The rules cover ranges: 3073-4095
      columns take 3584's launch (a 4096 block at least three quarters used, as at 3584), 5121-6143
      the 4096 + 2048 split of 5376 and 6144 (a tail block at least a quarter used); widths inside those
      ranges other than 3584 and 5376 were not searched.
    - 1536 and 2560 without a residual (bf16, 16384 tokens; rows 2-8 x 4-8 warps x 3-4 programs per SM x
      1-2 stages x one or two passes, at the register cap that fits them): two passes (reload 1), 4 warps,
      3 programs per SM capped at 168 registers a thread, 8192-slot tiles, 2 stages. Cold, against the
      one-pass launch in the same process: 1536 52.1 -> 49.0 µs, 2560 82.2 -> 76.3 (graph 46.1 -> 42.6,
      75.8 -> 68.8); quack 67.5 and 97.1. The rule covers the non-power-of-two widths 1025-3072 without
      a residual; only 1536 and 2560 were searched. With a residual the kept launches were the fastest
      (1536 + res: a two-pass launch at 4 programs per SM was 1.5% faster, not taken).
    - 4608 (bf16 and fp16, 16384 and 65536 tokens; rows 1-4 x 4-16 warps x 1-4 programs per SM x 1-2
      stages x one or two column blocks x one or two passes): small programs, many per SM. Without a
      residual one 8192 block, 1 row, 4 warps, 4 programs per SM capped at 128 registers, two passes
      with w read again (reload 2): cold 139.9 -> 123.1 µs at 16384 tokens and 502.2 -> 446.9 at 65536
      (bf16; 94% and 100% of copy bandwidth). With a residual 4096 + 512 columns, 1 row, 4 warps, 3
      programs per SM at 168 registers, 2 stages, reload 1: 168.6 -> 156.6 and 619.5 -> 575.0 (96%,
      103%); fp16 the same within 1%. With the next bullet the rules cover 4096-5120 columns.
    - the grid's widths where ours stayed under 90% of copy bandwidth (bf16, 8192-32768 tokens; rows
      1-4 x 4-8 warps x 1-4 programs per SM x 1-2 stages x one or two column blocks x one or two passes,
      up to 144 launches a shape, `search-grid`): 4608's launches are the fastest or within 2% from 4096
      to 5120 columns; at 2048 without a residual two passes, 2 rows, 4 programs per SM with w read
      again; 5121-6144 without a residual one row, 4 warps, 3 programs per SM at 168 registers on 4096 +
      2048 blocks. Through the front door against the launches before (ours / quack, cold, bf16, each in
      its own process): 5120 x 16384 0.70 -> 0.65, + res 0.84 -> 0.81; 6144 x 16384 0.76 -> 0.73;
      2048 x 16384 0.88 -> 0.81; 4096 x 8192 0.86 -> 0.81; 5376 x 16384 (unsearched) 0.67 -> 0.67 at
      88 -> 92% of copy. The policy's launch is within 3% of the search's best at every searched shape;
      with a residual at 2048, 4096, 6144 and 8192, and at 8192 and 16384 without one, the launches
      above were kept.
    Wider rows use the 16384 launch.
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
    elif block_n <= 8192 and (not residual or 6144 <= hidden < 8192):  # two passes, two programs per SM
        rows, warps, per_sm, reload, maxnreg = 1, 8, 2, 1, 128
        if hidden == 6144:                                              # + res: 4096 + 2048 columns
            block_n, tail, stages = 4096, 2048, 2
    elif block_n == 8192 and not pow2:                                  # 5121-6143 + res (5376): 4096 + a tail
        block_n, tail, rows, per_sm = 4096, next_pow2(hidden - 4096), 1, 2
        warps = 8 if tail >= 2048 else 4
    elif block_n == 8192:
        rows, warps, per_sm = 2, 8, 1
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
