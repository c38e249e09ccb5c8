"""Triton kernels for training: a forward that saves rstd, and the backward (imports triton: load lazily).

Forward (per row):   s = x (+ r);  rstd = 1 / sqrt(mean(s^2) + eps);  y = s * rstd * w
                     stores y, rstd (fp32) and, with a residual, s (the new residual).
Backward (per row):  xhat = s * rstd;  g = dy * w
                     ds = rstd * (g - xhat * mean(g * xhat)) (+ d_new_residual)
                     dw = sum over rows of dy * xhat
ds is the gradient of x and, with the fused add, of the residual too.

Every load is widened to fp32 at once and all arithmetic is fp32 (one rounding at
the store). dw is deterministic: each program sums its own rows (a fixed set for a
given launch) into one fp32 row of a (programs, hidden) buffer, and a second step
sums that buffer over programs in a fixed order; no atomics.
"""
import triton
import triton.language as tl


@triton.jit
def rmsnorm_fwd_train_kernel(
    X, R, W, Y, RO, RSTD,                # input, residual, weight, output, new residual, rstd (fp32 per row)
    stride_x, stride_r, stride_y, stride_ro,   # row strides in elements; the last dim is unit-stride
    n_rows, eps,
    N: tl.constexpr,                     # hidden size
    BLOCK_N: tl.constexpr,               # next power of two >= N
    ROWS: tl.constexpr,                  # rows per program (a ROWS x BLOCK_N tile)
    HAS_RES: tl.constexpr,               # fused add: s = x + r, RO = s
):
    """One ROWS x BLOCK_N tile per program: load (and add), fp32 mean square, scale, store y, rstd (and s)."""
    pid = tl.program_id(0)
    rows = (pid * ROWS + tl.arange(0, ROWS)).to(tl.int64)
    cols = tl.arange(0, BLOCK_N)
    row_ok = rows < n_rows
    mask = row_ok[:, None] & (cols < N)[None, :]
    s = tl.load(X + rows[:, None] * stride_x + cols[None, :], mask=mask, other=0.0).to(tl.float32)
    if HAS_RES:
        s += tl.load(R + rows[:, None] * stride_r + cols[None, :], mask=mask, other=0.0).to(tl.float32)
        tl.store(RO + rows[:, None] * stride_ro + cols[None, :], s.to(RO.dtype.element_ty), mask=mask)
    rstd = 1.0 / tl.sqrt(tl.sum(s * s, axis=1) / N + eps)
    w = tl.load(W + cols, mask=cols < N, other=0.0).to(tl.float32)
    y = s * rstd[:, None] * w[None, :]
    tl.store(Y + rows[:, None] * stride_y + cols[None, :], y.to(Y.dtype.element_ty), mask=mask)
    tl.store(RSTD + rows, rstd, mask=row_ok)


@triton.jit
def rmsnorm_bwd_kernel(
    DY, S, W, RSTD, DRO, DS, DW_PART,    # upstream grad, saved input (x or x + r), weight, rstd,
                                         # grad of the new residual, grad of s (out), dw partials (out)
    stride_dy, stride_s, stride_dro, stride_ds,
    n_rows,
    N: tl.constexpr,
    BLOCK_N: tl.constexpr,               # columns of the first block (a power of two)
    ROWS: tl.constexpr,                  # rows per step (a ROWS x (BLOCK_N + TAIL) tile)
    HAS_DRES: tl.constexpr,              # add the gradient flowing into the new residual
    STAGES: tl.constexpr = 1,            # software-pipeline depth of the row loop (loads of the next tile early)
    TAIL: tl.constexpr = 0,              # 0, or the power-of-two width of a second column block from BLOCK_N:
                                         # 5120 = 4096 + 1024 holds 5120 columns, not 8192 with 3072 masked
    RELOAD: tl.constexpr = 0,            # 0: one pass, s and dy held from the dot to ds; 1: two passes, s and
                                         # dy re-read for ds (w held); 2: w re-read too
):
    """A program walks row tiles pid, pid + programs, ... and writes its fp32 partial sum of dy * xhat
    to DW_PART[pid, :].

    RELOAD 0 (one pass): a tile's s and dy (and w and the program's dw row) stay in registers from the
    row's dot to ds.
    RELOAD 1 (two passes): pass 1 computes the row's dot from evict_last loads and keeps nothing else;
    pass 2 reads s and dy again (evict_first; L1/L2 hits) for ds and dw. A wide row then never has s,
    dy, w and dw live at once (16384 columns over 1024 threads: 16 fp32 each, which spilled in one pass).
    RELOAD 2: w is read again where it is used too, instead of held (fewer registers, more cache reads).
    The two passes' loads carry different eviction hints, which also keeps the compiler from merging
    the second read into the first.
    """
    if RELOAD == 0:
        _bwd_one_pass(DY, S, W, RSTD, DRO, DS, DW_PART, stride_dy, stride_s, stride_dro, stride_ds, n_rows,
                      N, BLOCK_N, ROWS, HAS_DRES, STAGES, TAIL)
    else:
        _bwd_two_pass(DY, S, W, RSTD, DRO, DS, DW_PART, stride_dy, stride_s, stride_dro, stride_ds, n_rows,
                      N, BLOCK_N, ROWS, HAS_DRES, STAGES, TAIL, RELOAD)


@triton.jit
def _load_block(s_at, dy_at, mask, EVICT: tl.constexpr):
    """s and dy of one column block of a row tile (their addresses), widened to fp32."""
    s = tl.load(s_at, mask=mask, other=0.0, eviction_policy=EVICT).to(tl.float32)
    dy = tl.load(dy_at, mask=mask, other=0.0, eviction_policy=EVICT).to(tl.float32)
    return s, dy


@triton.jit
def _store_grads(s, dy, w, rstd, c, DRO, DS, rows, mask, bcols, stride_dro, stride_ds, HAS_DRES: tl.constexpr,
                 EVICT: tl.constexpr):
    """ds of one column block (from its s, dy, w and the rows' c = mean(g * xhat)), stored; returns the
    block's dw contribution, sum over the tile's rows of dy * xhat."""
    xhat = s * rstd[:, None]
    ds = (dy * w[None, :] - xhat * c[:, None]) * rstd[:, None]
    if HAS_DRES:
        ds += tl.load(DRO + rows[:, None] * stride_dro + bcols[None, :], mask=mask, other=0.0,
                      eviction_policy=EVICT).to(tl.float32)
    tl.store(DS + rows[:, None] * stride_ds + bcols[None, :], ds.to(DS.dtype.element_ty), mask=mask)
    return tl.sum(dy * xhat, axis=0)


@triton.jit
def _bwd_one_pass(DY, S, W, RSTD, DRO, DS, DW_PART, stride_dy, stride_s, stride_dro, stride_ds, n_rows,
                  N: tl.constexpr, BLOCK_N: tl.constexpr, ROWS: tl.constexpr, HAS_DRES: tl.constexpr,
                  STAGES: tl.constexpr, TAIL: tl.constexpr):
    """One pass over s and dy per row tile, the tile held in registers (see rmsnorm_bwd_kernel)."""
    pid = tl.program_id(0)
    nprog = tl.num_programs(0)
    cols = tl.arange(0, BLOCK_N)
    col_ok = cols < N
    w = tl.load(W + cols, mask=col_ok, other=0.0).to(tl.float32)
    dw = tl.zeros([BLOCK_N], dtype=tl.float32)
    if TAIL > 0:
        tcols = BLOCK_N + tl.arange(0, TAIL)
        t_ok = tcols < N
        wt = tl.load(W + tcols, mask=t_ok, other=0.0).to(tl.float32)
        dwt = tl.zeros([TAIL], dtype=tl.float32)
    for blk in tl.range(pid, tl.cdiv(n_rows, ROWS), nprog, num_stages=STAGES):
        rows = (blk * ROWS + tl.arange(0, ROWS)).to(tl.int64)
        row_ok = rows < n_rows
        mask = row_ok[:, None] & col_ok[None, :]
        s = tl.load(S + rows[:, None] * stride_s + cols[None, :], mask=mask, other=0.0).to(tl.float32)
        dy = tl.load(DY + rows[:, None] * stride_dy + cols[None, :], mask=mask, other=0.0).to(tl.float32)
        rstd = tl.load(RSTD + rows, mask=row_ok, other=0.0)
        xhat = s * rstd[:, None]
        dot = tl.sum((dy * w[None, :]) * xhat, axis=1)
        if TAIL > 0:
            tmask = row_ok[:, None] & t_ok[None, :]
            st = tl.load(S + rows[:, None] * stride_s + tcols[None, :], mask=tmask, other=0.0).to(tl.float32)
            dyt = tl.load(DY + rows[:, None] * stride_dy + tcols[None, :], mask=tmask, other=0.0).to(tl.float32)
            xhatt = st * rstd[:, None]
            dot += tl.sum((dyt * wt[None, :]) * xhatt, axis=1)
        c = dot / N
        dw += _store_grads(s, dy, w, rstd, c, DRO, DS, rows, mask, cols, stride_dro, stride_ds, HAS_DRES, "")
        if TAIL > 0:
            dwt += _store_grads(st, dyt, wt, rstd, c, DRO, DS, rows, tmask, tcols, stride_dro, stride_ds,
                                HAS_DRES, "")
    tl.store(DW_PART + pid.to(tl.int64) * N + cols, dw, mask=col_ok)
    if TAIL > 0:
        tl.store(DW_PART + pid.to(tl.int64) * N + tcols, dwt, mask=t_ok)


@triton.jit
def _bwd_two_pass(DY, S, W, RSTD, DRO, DS, DW_PART, stride_dy, stride_s, stride_dro, stride_ds, n_rows,
                  N: tl.constexpr, BLOCK_N: tl.constexpr, ROWS: tl.constexpr, HAS_DRES: tl.constexpr,
                  STAGES: tl.constexpr, TAIL: tl.constexpr, RELOAD: tl.constexpr):
    """Pass 1: the row's dot; pass 2: s and dy read again for ds and dw (see rmsnorm_bwd_kernel)."""
    pid = tl.program_id(0)
    nprog = tl.num_programs(0)
    cols = tl.arange(0, BLOCK_N)
    col_ok = cols < N
    if RELOAD == 1:
        w = tl.load(W + cols, mask=col_ok, other=0.0).to(tl.float32)
    dw = tl.zeros([BLOCK_N], dtype=tl.float32)
    if TAIL > 0:
        tcols = BLOCK_N + tl.arange(0, TAIL)
        t_ok = tcols < N
        if RELOAD == 1:
            wt = tl.load(W + tcols, mask=t_ok, other=0.0).to(tl.float32)
        dwt = tl.zeros([TAIL], dtype=tl.float32)
    for blk in tl.range(pid, tl.cdiv(n_rows, ROWS), nprog, num_stages=STAGES):
        rows = (blk * ROWS + tl.arange(0, ROWS)).to(tl.int64)
        row_ok = rows < n_rows
        mask = row_ok[:, None] & col_ok[None, :]
        rstd = tl.load(RSTD + rows, mask=row_ok, other=0.0)
        s_at = S + rows[:, None] * stride_s + cols[None, :]
        dy_at = DY + rows[:, None] * stride_dy + cols[None, :]
        if RELOAD == 2:
            w = tl.load(W + cols, mask=col_ok, other=0.0).to(tl.float32)
        # pass 1: the row's dot
        s, dy = _load_block(s_at, dy_at, mask, "evict_last")
        dot = tl.sum((dy * w[None, :]) * (s * rstd[:, None]), axis=1)
        if TAIL > 0:
            tmask = row_ok[:, None] & t_ok[None, :]
            st_at = S + rows[:, None] * stride_s + tcols[None, :]
            dyt_at = DY + rows[:, None] * stride_dy + tcols[None, :]
            if RELOAD == 2:
                wt = tl.load(W + tcols, mask=t_ok, other=0.0).to(tl.float32)
            st, dyt = _load_block(st_at, dyt_at, tmask, "evict_last")
            dot += tl.sum((dyt * wt[None, :]) * (st * rstd[:, None]), axis=1)
        c = dot / N
        # pass 2: s and dy again, ds and dw
        s, dy = _load_block(s_at, dy_at, mask, "evict_first")
        if RELOAD == 2:
            w = tl.load(W + cols, mask=col_ok, other=0.0).to(tl.float32)
        dw += _store_grads(s, dy, w, rstd, c, DRO, DS, rows, mask, cols, stride_dro, stride_ds, HAS_DRES,
                           "evict_first")
        if TAIL > 0:
            st, dyt = _load_block(st_at, dyt_at, tmask, "evict_first")
            if RELOAD == 2:
                wt = tl.load(W + tcols, mask=t_ok, other=0.0).to(tl.float32)
            dwt += _store_grads(st, dyt, wt, rstd, c, DRO, DS, rows, tmask, tcols, stride_dro, stride_ds,
                                HAS_DRES, "evict_first")
    tl.store(DW_PART + pid.to(tl.int64) * N + cols, dw, mask=col_ok)
    if TAIL > 0:
        tl.store(DW_PART + pid.to(tl.int64) * N + tcols, dwt, mask=t_ok)


@triton.jit
def sum_partials_kernel(
    DW_PART, DW,                         # (programs, N) fp32 partials in, (N,) in the weight's dtype out
    n_parts,
    N: tl.constexpr,
    BLOCK_C: tl.constexpr,               # columns per program
    BLOCK_P: tl.constexpr = 1,           # partial rows per load (a BLOCK_P x BLOCK_C tile)
):
    """dw[c] = sum over p of DW_PART[p, c] in fp32: tiles of BLOCK_P partial rows added in order, then the
    tile's rows summed by one fixed reduction tree (deterministic for a given launch). Narrow column blocks
    spread the sum over many SMs; BLOCK_P as large as the partial rows (training.sum_launch) loads them all
    in one trip."""
    cols = tl.program_id(0) * BLOCK_C + tl.arange(0, BLOCK_C)
    ok = cols < N
    acc = tl.zeros([BLOCK_P, BLOCK_C], dtype=tl.float32)
    for p0 in range(0, n_parts, BLOCK_P):
        ps = p0 + tl.arange(0, BLOCK_P)
        acc += tl.load(DW_PART + ps[:, None].to(tl.int64) * N + cols[None, :],
                       mask=(ps < n_parts)[:, None] & ok[None, :], other=0.0)
    tl.store(DW + cols, tl.sum(acc, axis=0).to(DW.dtype.element_ty), mask=ok)
