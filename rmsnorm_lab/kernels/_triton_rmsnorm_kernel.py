"""Triton source of the lab's RMSNorm kernel (imports triton: load lazily)."""
import triton
import triton.language as tl

try:  # programmatic dependent launch (Hopper+); absent from older Triton
    from triton.language.extra.cuda import gdc_launch_dependents, gdc_wait
except ImportError:  # pragma: no cover - depends on the Triton version
    gdc_wait = gdc_launch_dependents = None


@triton.jit
def _load(ptrs, mask, EVICT_FIRST: tl.constexpr):
    """Load and widen to fp32; EVICT_FIRST marks the lines first to go from L2."""
    if EVICT_FIRST:
        v = tl.load(ptrs, mask=mask, other=0.0, eviction_policy="evict_first")
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
):
    """One pass over each row: load (and add), fp32 sum of squares, scale, store.

    A program owns row-blocks pid, pid + nprog, ... (a grid-stride loop), so a
    launch with fewer programs than blocks loads the weight once per program.
    All arithmetic is fp32; only the stores round to the output dtype.
    """
    pid = tl.program_id(0)
    nprog = tl.num_programs(0)
    cols = tl.arange(0, BLOCK_N)
    col_ok = cols < N
    if USE_PDL:
        gdc_wait()                       # inputs may come from the kernel before us
        if PDL_EARLY:
            gdc_launch_dependents()      # the next kernel may start its prologue now
    if not W_IN_LOOP:
        w = tl.load(W + cols, mask=col_ok, other=0.0, eviction_policy="evict_last").to(tl.float32)
    n_blocks = tl.cdiv(n_rows, ROWS)
    for blk in range(pid, n_blocks, nprog):
        rows = blk * ROWS + tl.arange(0, ROWS)
        rows64 = rows.to(tl.int64)
        mask = (rows < n_rows)[:, None] & col_ok[None, :]
        x = _load(X + rows64[:, None] * stride_x + cols[None, :], mask, EVICT_LOADS)
        if HAS_RES:
            x += _load(R + rows64[:, None] * stride_r + cols[None, :], mask, EVICT_LOADS)
            _store(RO + rows64[:, None] * stride_ro + cols[None, :], x.to(RO.dtype.element_ty), mask,
                   EVICT_STORES)
        ms = tl.sum(x * x, axis=1) / N
        rstd = 1.0 / tl.sqrt(ms + eps)
        if W_IN_LOOP:
            w = tl.load(W + cols, mask=col_ok, other=0.0, eviction_policy="evict_last").to(tl.float32)
        y = x * rstd[:, None] * w[None, :]
        _store(Y + rows64[:, None] * stride_y + cols[None, :], y.to(Y.dtype.element_ty), mask, EVICT_STORES)
    if USE_PDL:
        if not PDL_EARLY:
            gdc_launch_dependents()      # our stores are issued: the next kernel may launch
