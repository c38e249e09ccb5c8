"""Triton source of the lab's RMSNorm variants (imports triton: load lazily).

- ``norm_per_token_kernel``: one pass over each row, fp32 math, optional fused
  residual add, an FP8 (e4m3) output with a dynamic per-row scale (row absmax /
  448, stored as fp32). Gemma's norm and the static-scale FP8 norm run the plain
  kernel (``_rmsnorm_fwd``: ``W_OFFSET``, ``QUANT``).
- ``qk_norm_kernel``: per-head RMSNorm of q and k in one launch; rows are
  (token, head) pairs addressed through token and head strides, so q and k may
  be views into a fused qkv buffer.
- ``quant_rows_kernel``: FP8 quantization alone (the unfused baseline's second kernel).

USE_PDL (launched with programmatic dependent launch): wait for the kernel before in the
stream before the first load, let the next one launch once our stores are issued.
"""
import triton
import triton.language as tl

try:  # programmatic dependent launch (Hopper+); absent from older Triton
    from triton.language.extra.cuda import gdc_launch_dependents, gdc_wait
except ImportError:  # pragma: no cover - depends on the Triton version
    gdc_wait = gdc_launch_dependents = None


@triton.jit
def _fp8_clamp(v, SOFT_ROUND: tl.constexpr):
    """Saturate to the e4m3 range (+-448); NaN stays NaN. The store's cast rounds to e4m3 (nearest even).

    SOFT_ROUND (CPU tensors under the interpreter, whose fp32 -> e4m3 cast drops the carry when rounding
    up crosses a power of two, 124.6 -> 64, and flushes subnormals): return the e4m3 bit pattern as uint8
    instead, rounded here (nearest even; 3 mantissa bits, subnormal step 2**-9); the launcher then stores
    into a uint8 view of the output."""
    v = tl.where(v > 448.0, 448.0, tl.where(v < -448.0, -448.0, v))
    if SOFT_ROUND:
        bits = v.to(tl.int32, bitcast=True)
        rb = (bits + 0x7FFFF + ((bits >> 20) & 1)) & -1048576          # normal range: keep 3 mantissa bits
        a = tl.where(v != v, 0.0, tl.abs(v))
        m_sub = ((a * 512.0 + 12582912.0) - 12582912.0).to(tl.int32)   # subnormal: multiples of 2**-9
        mag = tl.where(a < 0.015625, m_sub, ((((rb >> 23) & 0xFF) - 120) << 3) | ((rb >> 20) & 7))
        mag = tl.where(v != v, 0x7F, mag)
        return (mag | (((bits >> 31) & 1) << 7)).to(tl.uint8)
    return v


@triton.jit
def _row_scale(y, rows, n_rows, SCALE_UB, SCALES_OUT, HAS_UB: tl.constexpr, MIN_SCALE: tl.constexpr):
    """Per-row dynamic scale of y's rows (see _scale_of_amax); returns its reciprocal."""
    return _scale_of_amax(tl.max(tl.abs(y), axis=1), rows, n_rows, SCALE_UB, SCALES_OUT, HAS_UB, MIN_SCALE)


@triton.jit
def _scale_of_amax(amax, rows, n_rows, SCALE_UB, SCALES_OUT, HAS_UB: tl.constexpr, MIN_SCALE: tl.constexpr):
    """Per-row dynamic scale from each row's absmax: max(min(absmax, ub) / 448, MIN_SCALE), stored as fp32;
    returns its reciprocal."""
    if HAS_UB:
        amax = tl.minimum(amax, tl.load(SCALE_UB).to(tl.float32))
    s = tl.maximum(amax / 448.0, MIN_SCALE)
    tl.store(SCALES_OUT + rows, s, mask=rows < n_rows)
    return 1.0 / s


@triton.jit
def _quantize(y, inv, rows, n_rows, SCALE_UB, SCALES_OUT, QUANT: tl.constexpr, HAS_UB: tl.constexpr,
              MIN_SCALE: tl.constexpr, SOFT_ROUND: tl.constexpr):
    """QUANT 0: y as is; 1: y * inv (1 / the static scale) clamped to e4m3's range; 2: each row scaled by its
    own scale (stored to SCALES_OUT), clamped."""
    if QUANT == 1:
        y = _fp8_clamp(y * inv, SOFT_ROUND)
    if QUANT == 2:
        rinv = _row_scale(y, rows, n_rows, SCALE_UB, SCALES_OUT, HAS_UB, MIN_SCALE)
        y = _fp8_clamp(y * rinv[:, None], SOFT_ROUND)
    return y


@triton.jit
def _per_token_slice(X, W, R, RO, roff, stride_x, stride_r, stride_ro, row_ok, c0, N: tl.constexpr,
                     CHUNK: tl.constexpr, HAS_RES: tl.constexpr):
    """Pass 1's slice: s = x (+ r, rounded to and stored in RO) in fp32, and w's slice."""
    cols = c0 + tl.arange(0, CHUNK)
    mask = row_ok & (cols < N)[None, :]
    v = tl.load(X + roff[:, None] * stride_x + cols[None, :], mask=mask, other=0.0).to(tl.float32)
    if HAS_RES:
        v += tl.load(R + roff[:, None] * stride_r + cols[None, :], mask=mask, other=0.0).to(tl.float32)
        v = v.to(RO.dtype.element_ty)
        tl.store(RO + roff[:, None] * stride_ro + cols[None, :], v, mask=mask)
        v = v.to(tl.float32)
    w = tl.load(W + cols, mask=cols < N, other=0.0).to(tl.float32)
    return v, w


@triton.jit
def _per_token_two_pass(blk, X, W, Y, R, RO, SCALE_UB, SCALES_OUT, stride_x, stride_y, stride_r, stride_ro,
                        n_rows, eps, N: tl.constexpr, CHUNK: tl.constexpr, ROWS: tl.constexpr,
                        HAS_RES: tl.constexpr, HAS_UB: tl.constexpr, MIN_SCALE: tl.constexpr,
                        SOFT_ROUND: tl.constexpr, HOLD: tl.constexpr = 0):
    """ROWS rows in two passes over CHUNK-wide slices. Pass 1: s = x (+ r, stored to RO), the sum of s^2 and
    the row's max |s * w|; absmax(y) = rstd * max |s * w| (rstd > 0 is one number a row), so the scale is
    known before any y. Pass 2: s again (RO, or X, from L2: the row was just read), y = s * rstd * w, stored
    scaled to e4m3. No lane is masked off when CHUNK divides N (5120 = 5 x 1024; one pass holds 8192).
    HOLD 1: pass 2 reads every slice before its first store (one L2 round trip, not one a slice: a load
    after a store that may alias it stays after it); HOLD 2: the slices (and w) kept in registers from
    pass 1, no second read."""
    rows = blk * ROWS + tl.arange(0, ROWS)
    roff = rows.to(tl.int64)
    row_ok = (rows < n_rows)[:, None]
    acc = tl.zeros([ROWS, CHUNK], dtype=tl.float32)
    big = tl.zeros([ROWS, CHUNK], dtype=tl.float32)
    vs = ()
    ws = ()
    if HOLD == 2:
        for c0 in tl.static_range(0, N, CHUNK):
            v, w = _per_token_slice(X, W, R, RO, roff, stride_x, stride_r, stride_ro, row_ok, c0, N, CHUNK, HAS_RES)
            acc += v * v
            big = tl.maximum(big, tl.abs(v * w[None, :]))
            vs = vs + (v,)
            ws = ws + (w,)
    else:
        for c0 in range(0, N, CHUNK):
            v, w = _per_token_slice(X, W, R, RO, roff, stride_x, stride_r, stride_ro, row_ok, c0, N, CHUNK, HAS_RES)
            acc += v * v
            big = tl.maximum(big, tl.abs(v * w[None, :]))
    rstd = 1.0 / tl.sqrt(tl.sum(acc, axis=1) / N + eps)
    rinv = _scale_of_amax(tl.max(big, axis=1) * rstd, rows, n_rows, SCALE_UB, SCALES_OUT, HAS_UB, MIN_SCALE)
    if HOLD == 1:
        for c0 in tl.static_range(0, N, CHUNK):
            cols = c0 + tl.arange(0, CHUNK)
            mask = row_ok & (cols < N)[None, :]
            if HAS_RES:
                v = tl.load(RO + roff[:, None] * stride_ro + cols[None, :], mask=mask, other=0.0).to(tl.float32)
            else:
                v = tl.load(X + roff[:, None] * stride_x + cols[None, :], mask=mask, other=0.0).to(tl.float32)
            vs = vs + (v,)
            ws = ws + (tl.load(W + cols, mask=cols < N, other=0.0).to(tl.float32),)
    if HOLD > 0:
        for i in tl.static_range(len(vs)):
            cols = i * CHUNK + tl.arange(0, CHUNK)
            y = _fp8_clamp(vs[i] * rstd[:, None] * ws[i][None, :] * rinv[:, None], SOFT_ROUND)
            tl.store(Y + roff[:, None] * stride_y + cols[None, :], y.to(Y.dtype.element_ty),
                     mask=row_ok & (cols < N)[None, :])
    else:
        for c0 in range(0, N, CHUNK):
            cols = c0 + tl.arange(0, CHUNK)
            mask = row_ok & (cols < N)[None, :]
            if HAS_RES:
                v = tl.load(RO + roff[:, None] * stride_ro + cols[None, :], mask=mask, other=0.0).to(tl.float32)
            else:
                v = tl.load(X + roff[:, None] * stride_x + cols[None, :], mask=mask, other=0.0).to(tl.float32)
            w = tl.load(W + cols, mask=cols < N, other=0.0).to(tl.float32)
            y = _fp8_clamp(v * rstd[:, None] * w[None, :] * rinv[:, None], SOFT_ROUND)
            tl.store(Y + roff[:, None] * stride_y + cols[None, :], y.to(Y.dtype.element_ty), mask=mask)


@triton.jit(do_not_specialize=["n_rows"])
def norm_per_token_kernel(
    X, W, Y, R, RO, SCALE_UB, SCALES_OUT,
    stride_x, stride_y, stride_r, stride_ro,     # row strides (elements); the last dim is unit-stride
    n_rows, eps,
    N: tl.constexpr, BLOCK_N: tl.constexpr, ROWS: tl.constexpr,
    HAS_RES: tl.constexpr,                       # s = x + r; RO = s; Y = norm(s)
    HAS_UB: tl.constexpr, MIN_SCALE: tl.constexpr, SOFT_ROUND: tl.constexpr = False, USE_PDL: tl.constexpr = False,
    CHUNK: tl.constexpr = 0, HOLD: tl.constexpr = 0,
):
    """RMSNorm fused with per-row FP8 scales, y / its row's scale saturated to e4m3, the scales (fp32) to
    SCALES_OUT. CHUNK 0: one pass, the whole row in registers (its absmax is needed before the first store).
    CHUNK > 0: two passes over CHUNK-wide slices (_per_token_two_pass; HOLD: the slices kept in registers)."""
    pid = tl.program_id(0)
    if USE_PDL:
        gdc_wait()
    if CHUNK:
        for blk in range(pid, tl.cdiv(n_rows, ROWS), tl.num_programs(0)):
            _per_token_two_pass(blk, X, W, Y, R, RO, SCALE_UB, SCALES_OUT, stride_x, stride_y, stride_r, stride_ro,
                                n_rows, eps, N, CHUNK, ROWS, HAS_RES, HAS_UB, MIN_SCALE, SOFT_ROUND, HOLD)
        if USE_PDL:
            gdc_launch_dependents()
        return
    cols = tl.arange(0, BLOCK_N)
    col_ok = cols < N
    w = tl.load(W + cols, mask=col_ok, other=0.0).to(tl.float32)
    for blk in range(pid, tl.cdiv(n_rows, ROWS), tl.num_programs(0)):
        rows = blk * ROWS + tl.arange(0, ROWS)
        roff = rows.to(tl.int64)
        mask = (rows < n_rows)[:, None] & col_ok[None, :]
        x = tl.load(X + roff[:, None] * stride_x + cols[None, :], mask=mask, other=0.0).to(tl.float32)
        if HAS_RES:
            x += tl.load(R + roff[:, None] * stride_r + cols[None, :], mask=mask, other=0.0).to(tl.float32)
            tl.store(RO + roff[:, None] * stride_ro + cols[None, :], x.to(RO.dtype.element_ty), mask=mask)
        rstd = 1.0 / tl.sqrt(tl.sum(x * x, axis=1) / N + eps)
        y = x * rstd[:, None] * w[None, :]
        rinv = _row_scale(y, rows, n_rows, SCALE_UB, SCALES_OUT, HAS_UB, MIN_SCALE)
        y = _fp8_clamp(y * rinv[:, None], SOFT_ROUND)
        tl.store(Y + roff[:, None] * stride_y + cols[None, :], y.to(Y.dtype.element_ty), mask=mask)
    if USE_PDL:
        gdc_launch_dependents()


@triton.jit
def _head_rows(X, Y, W, s_t, s_h, so_t, so_h, blk, n_rows, H, eps,
               D: tl.constexpr, BLOCK_D: tl.constexpr, ROWS: tl.constexpr):
    """Normalize ROWS (token, head) rows of one tensor; row r is token r // H, head r % H."""
    cols = tl.arange(0, BLOCK_D)
    col_ok = cols < D
    rows = blk * ROWS + tl.arange(0, ROWS)
    t = (rows // H).to(tl.int64)
    h = (rows % H).to(tl.int64)
    mask = (rows < n_rows)[:, None] & col_ok[None, :]
    x = tl.load(X + (t * s_t + h * s_h)[:, None] + cols[None, :], mask=mask, other=0.0).to(tl.float32)
    w = tl.load(W + cols, mask=col_ok, other=0.0).to(tl.float32)
    rstd = 1.0 / tl.sqrt(tl.sum(x * x, axis=1) / D + eps)
    y = x * rstd[:, None] * w[None, :]
    tl.store(Y + (t * so_t + h * so_h)[:, None] + cols[None, :], y.to(Y.dtype.element_ty), mask=mask)


@triton.jit(do_not_specialize=["n_q_rows", "n_k_rows"])
def qk_norm_kernel(
    Q, K, QO, KO, WQ, WK,
    sq_t, sq_h, sk_t, sk_h, sqo_t, sqo_h, sko_t, sko_h,   # token and head strides (elements)
    n_q_rows, n_k_rows, HQ, HK, eps,
    D: tl.constexpr, BLOCK_D: tl.constexpr, ROWS: tl.constexpr, USE_PDL: tl.constexpr = False,
):
    """Programs [0, cdiv(n_q_rows, ROWS)) normalize q's heads, the rest k's."""
    pid = tl.program_id(0)
    q_blocks = tl.cdiv(n_q_rows, ROWS)
    if USE_PDL:
        gdc_wait()
    if pid < q_blocks:
        _head_rows(Q, QO, WQ, sq_t, sq_h, sqo_t, sqo_h, pid, n_q_rows, HQ, eps, D, BLOCK_D, ROWS)
    else:
        _head_rows(K, KO, WK, sk_t, sk_h, sko_t, sko_h, pid - q_blocks, n_k_rows, HK, eps, D, BLOCK_D, ROWS)
    if USE_PDL:
        gdc_launch_dependents()


@triton.jit(do_not_specialize=["n_rows"])
def quant_rows_kernel(
    Y, OUT, SCALE, SCALE_UB, SCALES_OUT, stride_y, stride_o, n_rows,
    N: tl.constexpr, BLOCK_N: tl.constexpr, ROWS: tl.constexpr,
    QUANT: tl.constexpr, HAS_UB: tl.constexpr, MIN_SCALE: tl.constexpr, SOFT_ROUND: tl.constexpr = False,
    USE_PDL: tl.constexpr = False,
):
    """FP8 quantization of rows already normalized (QUANT 1: static scale, 2: per-row scale)."""
    pid = tl.program_id(0)
    cols = tl.arange(0, BLOCK_N)
    col_ok = cols < N
    if USE_PDL:
        gdc_wait()
    inv = 1.0
    if QUANT == 1:
        inv = 1.0 / tl.load(SCALE).to(tl.float32)
    for blk in range(pid, tl.cdiv(n_rows, ROWS), tl.num_programs(0)):
        rows = blk * ROWS + tl.arange(0, ROWS)
        roff = rows.to(tl.int64)
        mask = (rows < n_rows)[:, None] & col_ok[None, :]
        y = tl.load(Y + roff[:, None] * stride_y + cols[None, :], mask=mask, other=0.0).to(tl.float32)
        y = _quantize(y, inv, rows, n_rows, SCALE_UB, SCALES_OUT, QUANT, HAS_UB, MIN_SCALE, SOFT_ROUND)
        tl.store(OUT + roff[:, None] * stride_o + cols[None, :], y.to(OUT.dtype.element_ty), mask=mask)
    if USE_PDL:
        gdc_launch_dependents()
