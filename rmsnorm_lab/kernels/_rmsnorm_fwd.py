"""Triton source of the lab's RMSNorm kernel (imports triton: load lazily)."""
import triton
import triton.language as tl

from ._rmsnorm_variants import _fp8_clamp

try:  # programmatic dependent launch (Hopper+); absent from older Triton
    from triton.language.extra.cuda import gdc_launch_dependents, gdc_wait
except ImportError:  # pragma: no cover - depends on the Triton version
    gdc_wait = gdc_launch_dependents = None


@triton.jit
def _load(ptrs, mask, EVICT_FIRST: tl.constexpr, EVICT_LAST: tl.constexpr = False):
    """Load and widen to fp32; EVICT_FIRST marks the lines first to go from L2, EVICT_LAST last to go."""
    if EVICT_FIRST:
        v = tl.load(ptrs, mask=mask, other=0.0, eviction_policy="evict_first")
    elif EVICT_LAST:
        v = tl.load(ptrs, mask=mask, other=0.0, eviction_policy="evict_last")
    else:
        v = tl.load(ptrs, mask=mask, other=0.0)
    return v.to(tl.float32)


@triton.jit
def _store(ptrs, v, mask, EVICT_FIRST: tl.constexpr):
    if EVICT_FIRST:
        tl.store(ptrs, v, mask=mask, eviction_policy="evict_first")
    else:
        tl.store(ptrs, v, mask=mask)


@triton.jit(do_not_specialize=["n_rows"])
def rmsnorm_fwd_kernel(
    X, W, Y, R, RO,                      # input, weight, output, residual, new residual
    stride_x, stride_y, stride_r, stride_ro,  # row strides (elements); last dim is unit-stride
    n_rows, eps,
    N: tl.constexpr,                     # hidden size
    BLOCK_N: tl.constexpr,               # next power of two >= N
    ROWS: tl.constexpr,                  # rows per block (a 2-D tile for small hidden sizes)
    HAS_RES: tl.constexpr,               # fused residual add: s = x + r; RO = s; Y = norm(s) * w
    W_IN_LOOP: tl.constexpr,             # reload the weight per block (large rows: fewer live registers)
    USE_PDL: tl.constexpr,               # wait on the previous kernel in the stream (launched with PDL)
    PDL_EARLY: tl.constexpr,             # let the next kernel launch at our start (else after our stores)
    EVICT_LOADS: tl.constexpr,           # x / r loads marked evict-first in L2
    EVICT_STORES: tl.constexpr,          # output / new-residual stores marked evict-first in L2
    CHUNK: tl.constexpr = 0,             # > 0: two passes over CHUNK-wide column slices (see below)
    EVICT_LAST_LOADS: tl.constexpr = False,  # x / r loads marked evict-last (as a two-pass kernel's first pass)
    SUM_FIRST: tl.constexpr = False,     # two passes + residual: pass 1 stores x + r, pass 2 reads it back
    LATE_RO: tl.constexpr = False,       # one pass + residual: store x + r with the output, not right after the add
    ONE_BLOCK: tl.constexpr = False,     # the grid has a program per row block: no grid-stride loop
    I64: tl.constexpr = True,            # int64 row offsets (the launcher passes False when int32 cannot overflow)
    RSQRT: tl.constexpr = False,         # rstd with one rsqrt instead of a division by a square root
    HOLD: tl.constexpr = 0,              # CHUNK < N: 1 pass 2 reads the row's slices before its stores, 2 one pass
    SCALE=None,                          # QUANT: the static FP8 scale (one fp32 element)
    W_OFFSET: tl.constexpr = 0.0,        # y = x * rstd * (W_OFFSET + w): Gemma's 1 + w
    QUANT: tl.constexpr = False,         # y / SCALE saturated to e4m3 and stored as float8_e4m3fn
    SOFT_ROUND: tl.constexpr = False,    # QUANT on CPU tensors: the e4m3 bits as uint8 (see _fp8_clamp)
):
    """RMSNorm of each row (optionally fused with the residual add); fp32 math, one rounding at the store.

    A program owns row-blocks pid, pid + nprog, ... (a grid-stride loop), so a
    launch with fewer programs than blocks loads the weight once per program.
    CHUNK = 0 holds a block of rows in registers (one pass); CHUNK > 0 walks the
    row in slices, twice (CHUNK = BLOCK_N: the whole row, read twice; the launcher's
    "reread" flag); HOLD keeps the row's slices in registers (see _two_pass_block). SUM_FIRST: pass 2 reads the stored new residual (one tensor, not x
    and r), so it normalizes the sum rounded to the residual's dtype, as vLLM does.
    ONE_BLOCK / I64 / RSQRT (the launcher's "lean" path) drop the grid-stride loop, the 64-bit
    row offsets and the division where they are not needed. W_OFFSET and QUANT make it the Gemma norm and
    the norm fused with static FP8 quantization, with every launch choice above.
    """
    if CHUNK > 0:
        _rmsnorm_two_pass(X, W, Y, R, RO, stride_x, stride_y, stride_r, stride_ro, n_rows, eps, N, CHUNK, ROWS,
                          HAS_RES, USE_PDL, PDL_EARLY, EVICT_LOADS, EVICT_STORES, EVICT_LAST_LOADS, SUM_FIRST,
                          ONE_BLOCK, I64, RSQRT, HOLD, SCALE, W_OFFSET, QUANT, SOFT_ROUND)
    else:
        _rmsnorm_one_pass(X, W, Y, R, RO, stride_x, stride_y, stride_r, stride_ro, n_rows, eps, N, BLOCK_N, ROWS,
                          HAS_RES, W_IN_LOOP, USE_PDL, PDL_EARLY, EVICT_LOADS, EVICT_STORES, EVICT_LAST_LOADS,
                          LATE_RO, ONE_BLOCK, I64, RSQRT, SCALE, W_OFFSET, QUANT, SOFT_ROUND)


@triton.jit
def _row_offsets(blk, ROWS: tl.constexpr, I64: tl.constexpr):
    """The block's row indices, and the same as int64 for the offsets unless the launcher ruled out overflow."""
    rows = blk * ROWS + tl.arange(0, ROWS)
    roff = rows
    if I64:
        roff = rows.to(tl.int64)
    return rows, roff


@triton.jit
def _inv_scale(SCALE, QUANT: tl.constexpr):
    """1 / the static FP8 scale (read after any PDL wait: an earlier kernel may write it); 1 without QUANT."""
    inv = 1.0
    if QUANT:
        inv = 1.0 / tl.load(SCALE).to(tl.float32)
    return inv


@triton.jit
def _weight(W, cols, col_ok, W_OFFSET: tl.constexpr):
    w = tl.load(W + cols, mask=col_ok, other=0.0, eviction_policy="evict_last").to(tl.float32)
    if W_OFFSET != 0.0:
        w = w + W_OFFSET
    return w


@triton.jit
def _epilogue(y, inv, QUANT: tl.constexpr, SOFT_ROUND: tl.constexpr):
    if QUANT:
        y = _fp8_clamp(y * inv, SOFT_ROUND)
    return y


@triton.jit
def _rstd(sum_sq, N: tl.constexpr, eps, RSQRT: tl.constexpr):
    if RSQRT:
        return tl.math.rsqrt(sum_sq / N + eps)
    return 1.0 / tl.sqrt(sum_sq / N + eps)


@triton.jit
def _rmsnorm_one_pass(X, W, Y, R, RO, stride_x, stride_y, stride_r, stride_ro, n_rows, eps,
                      N: tl.constexpr, BLOCK_N: tl.constexpr, ROWS: tl.constexpr, HAS_RES: tl.constexpr,
                      W_IN_LOOP: tl.constexpr, USE_PDL: tl.constexpr, PDL_EARLY: tl.constexpr,
                      EVICT_LOADS: tl.constexpr, EVICT_STORES: tl.constexpr, EVICT_LAST_LOADS: tl.constexpr,
                      LATE_RO: tl.constexpr, ONE_BLOCK: tl.constexpr, I64: tl.constexpr, RSQRT: tl.constexpr,
                      SCALE, W_OFFSET: tl.constexpr, QUANT: tl.constexpr, SOFT_ROUND: tl.constexpr):
    """One pass: load a ROWS x BLOCK_N tile (and add), fp32 sum of squares, scale, store."""
    pid = tl.program_id(0)
    cols = tl.arange(0, BLOCK_N)
    col_ok = cols < N
    if USE_PDL:
        gdc_wait()                       # inputs may come from the kernel before us
        if PDL_EARLY:
            gdc_launch_dependents()      # the next kernel may start its prologue now
    inv = _inv_scale(SCALE, QUANT)
    w = None
    if not W_IN_LOOP:
        w = _weight(W, cols, col_ok, W_OFFSET)
    if ONE_BLOCK:
        _one_pass_block(pid, X, W, Y, R, RO, stride_x, stride_y, stride_r, stride_ro, n_rows, eps, w, cols,
                        col_ok, N, ROWS, HAS_RES, W_IN_LOOP, EVICT_LOADS, EVICT_STORES, EVICT_LAST_LOADS, LATE_RO,
                        I64, RSQRT, ROWS == 1, inv, W_OFFSET, QUANT, SOFT_ROUND)
    else:
        for blk in range(pid, tl.cdiv(n_rows, ROWS), tl.num_programs(0)):
            _one_pass_block(blk, X, W, Y, R, RO, stride_x, stride_y, stride_r, stride_ro, n_rows, eps, w, cols,
                            col_ok, N, ROWS, HAS_RES, W_IN_LOOP, EVICT_LOADS, EVICT_STORES, EVICT_LAST_LOADS,
                            LATE_RO, I64, RSQRT, False, inv, W_OFFSET, QUANT, SOFT_ROUND)
    if USE_PDL:
        if not PDL_EARLY:
            gdc_launch_dependents()      # our stores are issued: the next kernel may launch


@triton.jit
def _one_pass_block(blk, X, W, Y, R, RO, stride_x, stride_y, stride_r, stride_ro, n_rows, eps, w, cols, col_ok,
                    N: tl.constexpr, ROWS: tl.constexpr, HAS_RES: tl.constexpr, W_IN_LOOP: tl.constexpr,
                    EVICT_LOADS: tl.constexpr, EVICT_STORES: tl.constexpr, EVICT_LAST_LOADS: tl.constexpr,
                    LATE_RO: tl.constexpr, I64: tl.constexpr, RSQRT: tl.constexpr, ONE_ROW: tl.constexpr,
                    inv, W_OFFSET: tl.constexpr, QUANT: tl.constexpr, SOFT_ROUND: tl.constexpr):
    rows, roff = _row_offsets(blk, ROWS, I64)
    if ONE_ROW:                      # a program per row: the row exists (no predicate on full rows)
        mask = col_ok[None, :]
    else:
        mask = (rows < n_rows)[:, None] & col_ok[None, :]
    x = _load(X + roff[:, None] * stride_x + cols[None, :], mask, EVICT_LOADS, EVICT_LAST_LOADS)
    if HAS_RES:
        x += _load(R + roff[:, None] * stride_r + cols[None, :], mask, EVICT_LOADS, EVICT_LAST_LOADS)
        if not LATE_RO:
            _store(RO + roff[:, None] * stride_ro + cols[None, :], x.to(RO.dtype.element_ty), mask, EVICT_STORES)
    rstd = _rstd(tl.sum(x * x, axis=1), N, eps, RSQRT)
    if W_IN_LOOP:
        w = _weight(W, cols, col_ok, W_OFFSET)
    y = _epilogue(x * rstd[:, None] * w[None, :], inv, QUANT, SOFT_ROUND)
    if HAS_RES:
        if LATE_RO:
            _store(RO + roff[:, None] * stride_ro + cols[None, :], x.to(RO.dtype.element_ty), mask, EVICT_STORES)
    _store(Y + roff[:, None] * stride_y + cols[None, :], y.to(Y.dtype.element_ty), mask, EVICT_STORES)


@triton.jit
def _rmsnorm_two_pass(X, W, Y, R, RO, stride_x, stride_y, stride_r, stride_ro, n_rows, eps,
                      N: tl.constexpr, CHUNK: tl.constexpr, ROWS: tl.constexpr, HAS_RES: tl.constexpr,
                      USE_PDL: tl.constexpr, PDL_EARLY: tl.constexpr, EVICT_LOADS: tl.constexpr,
                      EVICT_STORES: tl.constexpr, EVICT_LAST_LOADS: tl.constexpr, SUM_FIRST: tl.constexpr,
                      ONE_BLOCK: tl.constexpr, I64: tl.constexpr, RSQRT: tl.constexpr, HOLD: tl.constexpr,
                      SCALE, W_OFFSET: tl.constexpr, QUANT: tl.constexpr, SOFT_ROUND: tl.constexpr):
    """The row in CHUNK-wide slices: pass 1 sums squares (lines kept in L2), pass 2 re-reads, scales, stores.

    Fewer live registers than holding the row, so more rows in flight per SM. In place is
    safe: pass 1 only reads, and pass 2 reads each element before the same thread writes it.
    SUM_FIRST (with a residual): pass 1 also stores x + r, each element right after the same
    thread read it; a barrier, then pass 2 reads that one tensor back instead of x and r.
    """
    pid = tl.program_id(0)
    if USE_PDL:
        gdc_wait()
        if PDL_EARLY:
            gdc_launch_dependents()
    inv = _inv_scale(SCALE, QUANT)
    if ONE_BLOCK:
        _two_pass_block(pid, X, W, Y, R, RO, stride_x, stride_y, stride_r, stride_ro, n_rows, eps, N, CHUNK, ROWS,
                        HAS_RES, EVICT_LOADS, EVICT_STORES, EVICT_LAST_LOADS, SUM_FIRST, I64, RSQRT, ROWS == 1,
                        inv, W_OFFSET, QUANT, SOFT_ROUND, HOLD)
    else:
        for blk in range(pid, tl.cdiv(n_rows, ROWS), tl.num_programs(0)):
            _two_pass_block(blk, X, W, Y, R, RO, stride_x, stride_y, stride_r, stride_ro, n_rows, eps, N, CHUNK,
                            ROWS, HAS_RES, EVICT_LOADS, EVICT_STORES, EVICT_LAST_LOADS, SUM_FIRST, I64, RSQRT, False,
                            inv, W_OFFSET, QUANT, SOFT_ROUND, HOLD)
    if USE_PDL:
        if not PDL_EARLY:
            gdc_launch_dependents()


@triton.jit
def _slice_in(X, R, RO, roff, stride_x, stride_r, stride_ro, cols, mask, HAS_RES: tl.constexpr,
              FROM_RO: tl.constexpr, EVICT_LOADS: tl.constexpr, EVICT_LAST_LOADS: tl.constexpr):
    """A slice of x (+ r), or of the stored x + r (FROM_RO), in fp32."""
    if FROM_RO:
        return _load(RO + roff[:, None] * stride_ro + cols[None, :], mask, EVICT_LOADS, EVICT_LAST_LOADS)
    x = _load(X + roff[:, None] * stride_x + cols[None, :], mask, EVICT_LOADS, EVICT_LAST_LOADS)
    if HAS_RES:
        x += _load(R + roff[:, None] * stride_r + cols[None, :], mask, EVICT_LOADS, EVICT_LAST_LOADS)
    return x


@triton.jit
def _slice_out(x, w, rstd, Y, RO, roff, stride_y, stride_ro, cols, mask, STORE_RO: tl.constexpr,
               EVICT_STORES: tl.constexpr, inv, QUANT: tl.constexpr, SOFT_ROUND: tl.constexpr):
    """Store a slice's new residual (STORE_RO) and its output."""
    if STORE_RO:
        _store(RO + roff[:, None] * stride_ro + cols[None, :], x.to(RO.dtype.element_ty), mask, EVICT_STORES)
    y = _epilogue(x * rstd[:, None] * w[None, :], inv, QUANT, SOFT_ROUND)
    _store(Y + roff[:, None] * stride_y + cols[None, :], y.to(Y.dtype.element_ty), mask, EVICT_STORES)


@triton.jit
def _two_pass_block(blk, X, W, Y, R, RO, stride_x, stride_y, stride_r, stride_ro, n_rows, eps,
                    N: tl.constexpr, CHUNK: tl.constexpr, ROWS: tl.constexpr, HAS_RES: tl.constexpr,
                    EVICT_LOADS: tl.constexpr, EVICT_STORES: tl.constexpr, EVICT_LAST_LOADS: tl.constexpr,
                    SUM_FIRST: tl.constexpr, I64: tl.constexpr, RSQRT: tl.constexpr, ONE_ROW: tl.constexpr,
                    inv, W_OFFSET: tl.constexpr, QUANT: tl.constexpr, SOFT_ROUND: tl.constexpr,
                    HOLD: tl.constexpr = 0):
    """HOLD 0: pass 2 reads a slice, then stores it (each slice an L2 round trip after the last one's
    stores: a load after a store to memory that may alias it stays after it). HOLD 1: pass 2 reads every
    slice first, then stores them (one round trip; the row in registers). HOLD 2: one pass, the slices kept
    from the first read (a one-pass kernel without the power-of-two padding of BLOCK_N)."""
    rows, roff = _row_offsets(blk, ROWS, I64)
    if ONE_ROW:                      # a program per row: the row exists (no predicate on full rows)
        row_ok = tl.full([ROWS, 1], 1, tl.int1)
    else:
        row_ok = (rows < n_rows)[:, None]
    acc = tl.zeros([ROWS, CHUNK], dtype=tl.float32)
    if HOLD == 2:                    # every load (x, r, w) before the first store
        xs = ()
        ws = ()
        for c0 in tl.static_range(0, N, CHUNK):
            cols = c0 + tl.arange(0, CHUNK)
            xs = xs + (_slice_in(X, R, RO, roff, stride_x, stride_r, stride_ro, cols, row_ok & (cols < N)[None, :],
                                 HAS_RES, False, EVICT_LOADS, EVICT_LAST_LOADS),)
            ws = ws + (_weight(W, cols, cols < N, W_OFFSET),)
        for i in tl.static_range(len(xs)):
            acc += xs[i] * xs[i]
        rstd = _rstd(tl.sum(acc, axis=1), N, eps, RSQRT)
        for i in tl.static_range(len(xs)):
            cols = i * CHUNK + tl.arange(0, CHUNK)
            _slice_out(xs[i], ws[i], rstd, Y, RO, roff, stride_y, stride_ro, cols, row_ok & (cols < N)[None, :],
                       HAS_RES, EVICT_STORES, inv, QUANT, SOFT_ROUND)
    else:
        for c0 in tl.range(0, N, CHUNK):
            cols = c0 + tl.arange(0, CHUNK)
            mask = row_ok & (cols < N)[None, :]
            x = tl.load(X + roff[:, None] * stride_x + cols[None, :], mask=mask, other=0.0,
                        eviction_policy="evict_last").to(tl.float32)
            if HAS_RES:
                x += tl.load(R + roff[:, None] * stride_r + cols[None, :], mask=mask, other=0.0,
                             eviction_policy="evict_last").to(tl.float32)
                if SUM_FIRST:            # no evict-first hint here: pass 2 reads these lines back
                    tl.store(RO + roff[:, None] * stride_ro + cols[None, :], x.to(RO.dtype.element_ty), mask=mask)
            acc += x * x
        rstd = _rstd(tl.sum(acc, axis=1), N, eps, RSQRT)
        if HAS_RES:
            if SUM_FIRST:
                tl.debug_barrier()       # every thread's pass-1 stores before any pass-2 load
        store_ro: tl.constexpr = HAS_RES and not SUM_FIRST
        if HOLD == 1:                # every pass-2 load (x, r, w) before the first store
            xs = ()
            ws = ()
            for c0 in tl.static_range(0, N, CHUNK):
                cols = c0 + tl.arange(0, CHUNK)
                xs = xs + (_slice_in(X, R, RO, roff, stride_x, stride_r, stride_ro, cols,
                                     row_ok & (cols < N)[None, :], HAS_RES, HAS_RES and SUM_FIRST,
                                     EVICT_LOADS, EVICT_LAST_LOADS),)
                ws = ws + (_weight(W, cols, cols < N, W_OFFSET),)
            for i in tl.static_range(len(xs)):
                cols = i * CHUNK + tl.arange(0, CHUNK)
                _slice_out(xs[i], ws[i], rstd, Y, RO, roff, stride_y, stride_ro, cols, row_ok & (cols < N)[None, :],
                           store_ro, EVICT_STORES, inv, QUANT, SOFT_ROUND)
        else:
            for c0 in tl.range(0, N, CHUNK):
                cols = c0 + tl.arange(0, CHUNK)
                col_ok = cols < N
                mask = row_ok & col_ok[None, :]
                # every load of the slice before its first store (see above)
                x = _slice_in(X, R, RO, roff, stride_x, stride_r, stride_ro, cols, mask, HAS_RES,
                              HAS_RES and SUM_FIRST, EVICT_LOADS, EVICT_LAST_LOADS)
                w = _weight(W, cols, col_ok, W_OFFSET)
                _slice_out(x, w, rstd, Y, RO, roff, stride_y, stride_ro, cols, mask, store_ro, EVICT_STORES, inv,
                           QUANT, SOFT_ROUND)
