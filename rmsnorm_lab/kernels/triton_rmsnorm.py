"""The lab's own Triton RMSNorm: launcher, launch table and a cached fast launch.

``triton_rmsnorm(x, weight, residual=None, eps=1e-6)`` returns ``out`` or
``(out, new_residual)``. Pass ``out=x, residual_out=residual`` for the in-place
fused add that vLLM and FlashInfer do. Works on CUDA tensors, and on CPU
tensors under ``TRITON_INTERPRET=1`` (how CI tests it).
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from ..validate import UnsupportedDtypeError, UnsupportedError, check_inputs, contiguous_rows
from .occupancy import grid_programs

TABLE_PATH = Path(__file__).with_name("launch_table.json")   # the default table (tuned on an H100)
TABLES_DIR = Path(__file__).with_name("tables")               # <device slug>.json: a device's own table
_kernel = None
_tables: dict = {}        # table path -> normalized configs
_override: dict | None = None   # set_table(): one table for every device
_fast: dict = {}          # launch key -> compiled kernel (CUDA only)
_fast_ok = True           # switched off for good if the fast launch ever fails


def _get_kernel():
    global _kernel
    if _kernel is None:
        from ._triton_rmsnorm_kernel import rmsnorm_fwd_kernel
        _kernel = rmsnorm_fwd_kernel
    return _kernel


def _next_pow2(n: int) -> int:
    return 1 << (n - 1).bit_length()


def table_path(gpu_name: str | None = None) -> Path:
    """Which launch table a GPU reads: RMSNORM_LAB_LAUNCH_TABLE if set, else the device's own
    (tables/<slug of its name>.json, e.g. 'NVIDIA H200' -> tables/nvidia-h200.json), else the
    default table tuned on an H100 (also for CPU tensors under the interpreter, gpu_name None)."""
    env = os.environ.get("RMSNORM_LAB_LAUNCH_TABLE")
    if env:
        return Path(env)
    if gpu_name:
        from ..device import slug
        own = TABLES_DIR / f"{slug(gpu_name)}.json"
        if own.is_file():
            return own
    return TABLE_PATH


def load_table(gpu_name: str | None = None) -> dict:
    """The launch table for a GPU (see table_path), {"<hidden>:<tokens bucket>:<residual>": config},
    configs normalized once here (see normalize_config); a missing file is an empty table."""
    if _override is not None:
        return _override
    path = table_path(gpu_name)
    key = str(path)
    if key not in _tables:
        try:
            raw = json.loads(path.read_text()).get("configs", {})
        except FileNotFoundError:
            raw = {}
        _tables[key] = {k: normalize_config(v) for k, v in raw.items()}
    return _tables[key]


def set_table(configs: dict | None) -> None:
    """Use one launch table for every device in this process (None: back to the files, re-read on next use)."""
    global _override
    _tables.clear()
    _override = None if configs is None else {k: normalize_config(v) for k, v in configs.items()}


def tokens_bucket(tokens: int) -> int:
    """Power-of-two bucket a token count falls in (the launch table's key)."""
    return _next_pow2(max(tokens, 1))


# config flags (the 4th field of a config): how the kernel treats L2 and the next kernel
EVICT_LOADS = 1      # x / r loads marked evict-first
PDL_EARLY = 2        # let the next kernel launch at our start (default: after our stores)
EVICT_STORES = 4     # output / new-residual stores marked evict-first
EVICT_LAST = 8       # x / r loads marked evict-last (excludes EVICT_LOADS)
REREAD = 16          # two passes over the whole row: sum squares, then re-read (from L2) and store
#                      (chunk 0 only; not with EVICT_LAST, whose pass-2 loads the compiler merges into pass 1's)
SUM_FIRST = 32       # two passes with a residual: pass 1 stores x + r, pass 2 reads that back (half the
#                      re-read bytes; normalizes the sum rounded to the residual's dtype, as vLLM does);
#                      with chunk > 0 or REREAD only
LATE_RO = 64         # one pass with a residual: store x + r after the sum of squares, with the output
#                      (chunk 0 without REREAD only)


def heuristic_config(hidden: int, tokens: int, itemsize: int, residual: bool) -> tuple:
    """(rows per block, num_warps, programs per SM (0 = one program per block), flags, chunk (0 = one pass))."""
    block_n = _next_pow2(hidden)
    rows = 1
    if block_n <= 1024:
        # several rows per block for small hidden sizes, keeping >= 2 blocks per SM
        rows = max(1, min(16, 2048 // block_n, _next_pow2(max(1, tokens // 264))))
    elems = block_n * rows
    # ~16 bytes of each tensor per thread and load (a 16-byte vector), up to 16 warps
    per_thread = max(1, 16 // itemsize) * 2
    warps = max(1, min(16, elems // (32 * per_thread)))
    warps = _next_pow2(warps) if warps & (warps - 1) else warps
    return rows, warps, 0, 0, 0


def normalize_config(cfg) -> tuple:
    """A table entry or caller's config as (rows, warps, per_sm, flags, chunk[, maxnreg]); missing fields are 0.

    chunk > 0 (a power of two >= 16) walks each row in chunk-wide slices, in two passes;
    flag REREAD (chunk 0) does the two passes over the whole row. maxnreg (v9, a multiple of 8
    in 24..248) caps the registers a thread may use, so more programs fit on an SM (see
    kernels/occupancy.py); 0 leaves it to the compiler and is dropped: the result has 5 fields then, 6 otherwise.
    """
    cfg = tuple(int(v) for v in cfg)
    if not 3 <= len(cfg) <= 6:
        raise ValueError(f"config: expected (rows, warps, programs_per_sm[, flags[, chunk[, maxnreg]]]), got {cfg}")
    cfg += (0,) * (6 - len(cfg))
    rows, warps, per_sm, flags, chunk, maxnreg = cfg
    two_pass = bool(chunk or flags & REREAD)
    if (rows < 1 or rows & (rows - 1) or warps < 1 or warps & (warps - 1) or per_sm < 0 or not 0 <= flags < 128
            or (flags & EVICT_LOADS and flags & EVICT_LAST) or (flags & REREAD and (chunk or flags & EVICT_LAST))
            or (flags & SUM_FIRST and not two_pass) or (flags & LATE_RO and two_pass)
            or chunk < 0 or (chunk and (chunk < 16 or chunk & (chunk - 1)))
            or (maxnreg and not (24 <= maxnreg <= 248 and maxnreg % 8 == 0))):
        raise ValueError(f"config: rows and warps must be powers of two, programs_per_sm >= 0, "
                         f"flags in 0..127 without both 1 and 8 or both 8 and 16, flag 32 only with two passes "
                         f"(chunk > 0 or flag 16), flag 64 only with one, chunk 0 or a power of two >= 16 "
                         f"(0 with flag 16), maxnreg 0 or a multiple of 8 in 24..248; got {cfg}")
    return cfg if maxnreg else cfg[:5]


def pick_config(hidden: int, tokens: int, itemsize: int, residual: bool, gpu_name: str | None = None) -> tuple:
    """The launch config: gpu_name's table entry (see table_path), else heuristic_config."""
    cfg = load_table(gpu_name).get(f"{hidden}:{tokens_bucket(tokens)}:{int(residual)}")
    return cfg if cfg is not None else heuristic_config(hidden, tokens, itemsize, residual)


_SM_COUNT: dict = {}
_GPU_NAME: dict = {}


def device_name_of(device) -> str | None:
    """torch's name of a CUDA device (cached per index); None for any other device."""
    if getattr(device, "type", str(device).split(":")[0]) != "cuda":
        return None
    import torch
    device = torch.device(device)
    idx = device.index if device.index is not None else torch.cuda.current_device()
    if idx not in _GPU_NAME:
        _GPU_NAME[idx] = torch.cuda.get_device_name(idx)
    return _GPU_NAME[idx]


def _sm_count(device) -> int:
    idx = device.index if device.index is not None else 0
    if idx not in _SM_COUNT:
        import torch
        _SM_COUNT[idx] = torch.cuda.get_device_properties(idx).multi_processor_count
    return _SM_COUNT[idx]


_PDL: dict = {}


def needs_int64(padded_rows: int, row_stride: int, block_n: int) -> bool:
    """Whether an element offset (row * stride + column, masked lanes included) can reach 2**31."""
    return padded_rows * row_stride + block_n >= 2**31


def _lean() -> bool:
    """The v8 launch (see launch); RMSNORM_LAB_LEAN=0 gives the v7 code. Read at each launch() (A/B runs in
    one process); fast_rmsnorm's per-shape plans keep the setting of the call that made them."""
    return os.environ.get("RMSNORM_LAB_LEAN", "") in ("", "1")


def _pdl_ok(device) -> bool:
    """Programmatic dependent launch: sm90+ and a Triton that has it (off: RMSNORM_LAB_NO_PDL=1)."""
    idx = device.index if device.index is not None else 0
    if idx not in _PDL:
        import torch
        from . import _triton_rmsnorm_kernel as k
        _PDL[idx] = (k.gdc_wait is not None and torch.cuda.get_device_capability(idx)[0] >= 9
                     and os.environ.get("RMSNORM_LAB_NO_PDL", "") in ("", "0"))
    return _PDL[idx]


def kernel_constexprs(n: int, n_rows: int, cfg, has_res: bool, row_stride: int, pdl: bool, lean: bool) -> tuple:
    """The kernel's compile-time arguments for a config, in its parameter order (N, BLOCK_N, ROWS, HAS_RES,
    W_IN_LOOP, USE_PDL, PDL_EARLY, EVICT_LOADS, EVICT_STORES, CHUNK, EVICT_LAST_LOADS, SUM_FIRST, LATE_RO,
    ONE_BLOCK, I64, RSQRT): what launch passes, and what scripts/sm90_registers.py compiles.
    lean: the v8 path (no grid-stride loop when each row block has its own program, int32 row offsets
    when no offset can reach 2**31, rsqrt); False gives the v7 code."""
    rows, _, per_sm, flags, chunk = cfg[:5]
    block_n = _next_pow2(n)
    chunk = chunk if chunk < block_n else 0          # a chunk as wide as the row is the one-pass kernel
    if flags & REREAD:
        chunk = block_n                              # ... unless asked to read the row twice
    i64 = not lean or needs_int64(-(-n_rows // rows) * rows, row_stride, block_n)
    sum_first = bool(flags & SUM_FIRST) and has_res and chunk > 0
    late_ro = bool(flags & LATE_RO) and has_res and chunk == 0
    return (n, block_n, rows, has_res, block_n >= 8192, pdl, bool(flags & PDL_EARLY), bool(flags & EVICT_LOADS),
            bool(flags & EVICT_STORES), chunk, bool(flags & EVICT_LAST), sum_first, late_ro, lean and not per_sm, i64,
            lean)


def launch(x2, w, y2, r2=None, ro2=None, eps: float = 1e-6, config=None):
    """Launch on 2-D row-major views (no checks); writes y2 (and ro2). On CUDA returns
    (compiled kernel, grid, constexpr arguments) for fast_rmsnorm's cache, else None.

    config: (rows per block, num_warps, programs per SM (0 = one program per block)[, flags[, chunk[, maxnreg]]]).
    """
    global _fast_ok
    n_rows, n = x2.shape
    if n_rows == 0:
        return
    has_res = r2 is not None
    on_cuda = x2.is_cuda
    cfg = (normalize_config(config) if config else
           pick_config(n, n_rows, x2.element_size(), has_res, device_name_of(x2.device) if on_cuda else None))
    rows, warps, per_sm, flags, chunk = cfg[:5]
    maxnreg = cfg[5] if len(cfg) > 5 else 0
    # on CPU (the interpreter) a nominal 2 SMs, so tests walk the grid-stride loop
    grid0 = grid_programs(n_rows, rows, per_sm, (_sm_count(x2.device) if on_cuda else 2) if per_sm else 0)
    if not has_res:
        r2, ro2 = x2, y2     # unused; the kernel never touches them without HAS_RES
    pdl = on_cuda and _pdl_ok(x2.device)
    lean = _lean()
    const = kernel_constexprs(n, n_rows, (rows, warps, per_sm, flags, chunk), has_res,
                              max(x2.stride(0), y2.stride(0), r2.stride(0), ro2.stride(0)), pdl, lean)
    chunk, one_block, i64 = const[9], const[13], const[14]
    args = (x2, w, y2, r2, ro2, x2.stride(0), y2.stride(0), r2.stride(0), ro2.stride(0), n_rows, eps) + const
    if not on_cuda:
        _get_kernel()[(grid0,)](*args, num_warps=warps)
        return
    key = (x2.dtype, y2.dtype, n, rows, warps, flags, chunk, maxnreg, has_res, pdl, one_block, i64, lean,
           x2.stride(0) % 16 == 0, y2.stride(0) % 16 == 0, r2.stride(0) % 16 == 0, ro2.stride(0) % 16 == 0,
           x2.data_ptr() % 16 == 0, y2.data_ptr() % 16 == 0, r2.data_ptr() % 16 == 0,
           ro2.data_ptr() % 16 == 0, w.data_ptr() % 16 == 0, x2.device.index)
    k = _fast.get(key) if _fast_ok else None
    if k is not None:
        try:
            import torch
            stream = torch._C._cuda_getCurrentRawStream(x2.device.index)
            k.run(grid0, 1, 1, stream, k.function, k.packed_metadata, None, None, None, *args)
            return k, grid0, args[11:]
        except Exception:   # an incompatible Triton: use the ordinary launch from now on
            _fast_ok = False
    opts = {"num_warps": warps}
    if maxnreg:
        opts["maxnreg"] = maxnreg
    if pdl:
        opts["launch_pdl"] = True
    compiled = _get_kernel()[(grid0,)](*args, **opts)
    if _fast_ok and hasattr(compiled, "run") and hasattr(compiled, "packed_metadata"):
        _fast[key] = compiled
        return compiled, grid0, args[11:]


_plans: dict = {}     # (tokens, hidden, dtype, device, residual) -> (compiled kernel, grid, constexpr tail)
_int_ptrs = True      # pass raw device addresses to the launcher (no data_ptr() / pointer query per tensor)


def fast_rmsnorm(x, w, r=None, eps: float = 1e-6):
    """The registry's per-call path: contiguous CUDA tensors only, no checks.

    Returns out (a new tensor) without a residual; with one, writes out into x
    and x + r into r (in place, like vLLM / FlashInfer) and returns (x, r)
    (when r is x, out is a new tensor and x becomes x + x).
    After the first call for a shape, a launch is one dict lookup and the
    compiled kernel's own launcher, given raw addresses: no argument binding,
    no config lookup, no per-tensor pointer query.
    """
    global _int_ptrs, _fast_ok
    import torch

    n = x.shape[-1]
    m = x.numel() // n if n else 0
    xp = x.data_ptr()
    rr = x if r is None else r
    rp = rr.data_ptr()
    # out goes into x, unless there is no residual or the residual *is* x (then x must hold x + x)
    y = torch.empty_like(x) if (r is None or rp == xp) else x
    if m == 0:
        return y if r is None else (y, r)
    dev = x.get_device()
    yp, wp = y.data_ptr(), w.data_ptr()
    aligned = ((xp | yp | rp | wp) & 15) == 0
    key = (m, n, x.dtype, dev, r is not None)
    plan = _plans.get(key) if (aligned and _fast_ok) else None
    if plan is not None:
        k, grid0, tail = plan
        stream = torch._C._cuda_getCurrentRawStream(dev)
        if _int_ptrs:
            try:
                k.run(grid0, 1, 1, stream, k.function, k.packed_metadata, None, None, None,
                      xp, wp, yp, rp, rp if r is not None else yp, n, n, n, n, m, eps, *tail)
                return y if r is None else (y, r)
            except Exception:   # a launcher that wants tensors: pass them from now on
                _int_ptrs = False
        try:
            k.run(grid0, 1, 1, stream, k.function, k.packed_metadata, None, None, None,
                  x, w, y, rr, rr if r is not None else y, n, n, n, n, m, eps, *tail)
            return y if r is None else (y, r)
        except Exception:       # an incompatible Triton: the ordinary launch from now on
            _fast_ok = False
            _plans.clear()
    x2, y2 = x.view(-1, n), y.view(-1, n)
    got = launch(x2, w, y2, None if r is None else r.view(-1, n), None if r is None else r.view(-1, n), eps)
    if got is not None and aligned and _fast_ok and len(_plans) < 4096:
        _plans[key] = got
    return y if r is None else (y, r)


def config_fn(config=None, inplace: bool = True):
    """A registry-style ``fn(x, w, r=None, eps)`` that launches with a fixed config (tuning, diagnostics).

    config: a config tuple, None (the table's pick), or a callable
    ``(hidden, tokens, itemsize, residual) -> config``. With a residual the call works in
    place (out into x, x + r into r) unless ``inplace=False`` (fresh output buffers).
    Contiguous inputs only, no checks.
    """
    def fn(x, w, r=None, eps: float = 1e-6):
        import torch
        n = x.shape[-1]
        x2 = x.view(-1, n)
        cfg = config(n, x2.shape[0], x.element_size(), r is not None) if callable(config) else config
        if r is None:
            y = torch.empty_like(x)
            launch(x2, w, y.view(-1, n), None, None, eps, cfg)
            return y
        y, ro = (x, r) if inplace else (torch.empty_like(x), torch.empty_like(r))
        launch(x2, w, y.view(-1, n), r.view(-1, n), ro.view(-1, n), eps, cfg)
        return y, ro
    return fn


def triton_rmsnorm(x, weight, residual=None, eps: float = 1e-6, *, out=None, residual_out=None, config=None):
    """RMSNorm (optionally fused with the residual add) with the lab's Triton kernel.

    Math in fp32, one rounding at the store; the fused add normalizes the fp32
    sum and stores the sum rounded to the residual's dtype. Inputs are checked
    (TypeError / ValueError naming the argument; float64 raises
    UnsupportedDtypeError, a CPU tensor without TRITON_INTERPRET=1 raises
    UnsupportedError "needs CUDA"). Zero tokens return empty tensors and launch
    nothing. Non-contiguous inputs are copied once (with a one-time warning).
    NaN / Inf propagate to their row as in the float64 reference: a NaN makes
    its row NaN; an Inf gives rstd 0, so that element is NaN and the rest 0.
    """
    eps = check_inputs(x, weight, residual, eps)
    if x.dtype not in _supported_dtypes():
        raise UnsupportedDtypeError(f"x: the triton kernel supports float32, float16, bfloat16; got {x.dtype}")
    if not x.is_cuda and os.environ.get("TRITON_INTERPRET") != "1":
        raise UnsupportedError("x: the triton kernel needs CUDA (or TRITON_INTERPRET=1 for CPU tensors), "
                               f"got a tensor on {x.device}")
    import torch

    shape = x.shape
    n = shape[-1]
    if out is None:
        out = torch.empty(shape, dtype=x.dtype, device=x.device)
    _check_out(out, shape, x, "out")
    if residual is not None:
        if residual_out is None:
            residual_out = torch.empty(shape, dtype=residual.dtype, device=x.device)
        _check_out(residual_out, shape, x, "residual_out")
    if x.numel() == 0:                      # zero tokens: nothing to launch
        return out if residual is None else (out, residual_out)
    xc = contiguous_rows(x, "x", "triton")
    w = contiguous_rows(weight, "weight", "triton")
    x2, y2 = xc.reshape(-1, n), out.view(-1, n)
    if x.is_cuda and x.device.index != torch.cuda.current_device():
        with torch.cuda.device(x.device):    # launch on x's GPU, not the current one
            return _launch_all(x2, w, y2, residual, residual_out, shape, n, eps, config, out)
    return _launch_all(x2, w, y2, residual, residual_out, shape, n, eps, config, out)


def _launch_all(x2, w, y2, residual, residual_out, shape, n, eps, config, out):
    if residual is not None:
        rc = contiguous_rows(residual, "residual", "triton")
        launch(x2, w, y2, rc.reshape(-1, n), residual_out.view(-1, n), eps, config)
        return out, residual_out
    launch(x2, w, y2, None, None, eps, config)
    return out


def _check_out(t, shape, x, name):
    if t.shape != shape or t.dtype != x.dtype or t.device != x.device or not t.is_contiguous():
        raise ValueError(f"{name}: expected a contiguous {x.dtype} tensor of shape {tuple(shape)} on {x.device}, "
                         f"got {t.dtype} {tuple(t.shape)} on {t.device} (contiguous={t.is_contiguous()})")


def _supported_dtypes():
    import torch
    return (torch.float32, torch.float16, torch.bfloat16)
