"""Launchers of the lab's RMSNorm variants (Gemma, QK-norm, FP8 static and per-token).

Each function checks its arguments (a ``TypeError`` / ``ValueError`` naming the
argument; ``UnsupportedError`` for CPU tensors without the interpreter), allocates what it
is not given and launches one kernel. Gemma's norm and the static-scale FP8 norm run the plain
kernel (``_rmsnorm_fwd``, with its launch table; ``W_OFFSET`` / ``QUANT``); the per-token FP8 norm,
QK-norm and the quantize-only baselines run the kernels of ``_rmsnorm_variants``:

- ``gemma_rmsnorm(x, weight, residual=None, eps)`` -> y | (y, new_residual)
- ``rmsnorm_fp8_static(x, weight, scale, residual=None, eps)`` -> y8 | (y8, new_residual)
- ``rmsnorm_fp8_per_token(x, weight, residual=None, eps, scale_ub=None)`` -> (y8, scales) | (y8, scales, new_residual)
- ``qk_rmsnorm(q, k, q_weight, k_weight, eps)`` -> (q_out, k_out), one launch for both
- ``quantize_fp8_static(y, scale)`` / ``quantize_fp8_per_token(y, scale_ub=None)``: FP8 quantization alone

Works on CUDA tensors, and on CPU tensors under ``TRITON_INTERPRET=1``.
FP8 outputs are ``torch.float8_e4m3fn`` saturated to +-448; per-token scales are
fp32, one per row, ``max(min(absmax, scale_ub) / 448, MIN_SCALE)``.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..device import interpreter_on
from ..validate import UnsupportedError, check_eps
from .config import _pow2, next_pow2
from .launch import on_device

MIN_SCALE = 1.0 / (448.0 * 512.0)   # floor of a per-token scale (an all-zero row), as vLLM
IO_DTYPES = ("float16", "bfloat16", "float32")



def _kernels():
    from . import _rmsnorm_variants
    return _rmsnorm_variants


def _cuda_device(device):
    """torch.device of a CUDA device with its index (the current one when not given), else None."""
    import torch
    device = torch.device(device)
    if device.type != "cuda":
        return None
    return device if device.index is not None else torch.device("cuda", torch.cuda.current_device())


def sm_count(device) -> int:
    """Streaming multiprocessors of a CUDA device (the Launcher's cache); 4 for CPU tensors under the
    interpreter."""
    from .launch import LAUNCHER
    cuda = _cuda_device(device)
    return 4 if cuda is None else LAUNCHER.sm_count(cuda)


def pdl_ok(device) -> bool:
    """Programmatic dependent launch: a CUDA device of sm90 or newer and a Triton that has it (the
    Launcher's cache)."""
    from .launch import LAUNCHER
    cuda = _cuda_device(device)
    return cuda is not None and LAUNCHER.has_pdl(cuda)


def _launch_opts(device, warps) -> dict:
    """Compile-time PDL flag and launch options: the kernel waits on its predecessor only when launched with PDL."""
    if pdl_ok(device):
        return {"USE_PDL": True, "launch_pdl": True, "num_warps": warps}
    return {"num_warps": warps}


@dataclass(frozen=True)
class Policy:
    """How a launch is shaped: rows per program, warps, programs in the grid; chunk (the per-token FP8 norm):
    0 = one pass, the row in registers, else two passes over chunk-wide slices; hold (with chunk): 1 = the
    second pass reads every slice before its first store, 2 = the slices kept in registers from the first."""
    rows: int
    warps: int
    programs: int
    chunk: int = 0
    hold: int = 0

    def __post_init__(self):
        if not _pow2(self.rows):
            raise ValueError(f"policy.rows: expected a power of two >= 1, got {self.rows}")
        if not _pow2(self.warps) or self.warps > 32:
            raise ValueError(f"policy.warps: expected a power of two in 1..32, got {self.warps}")
        if self.programs < 1:
            raise ValueError(f"policy.programs: expected >= 1, got {self.programs}")
        if self.chunk and (self.chunk < 16 or not _pow2(self.chunk)):
            raise ValueError(f"policy.chunk: expected 0 or a power of two >= 16, got {self.chunk}")
        if self.hold not in (0, 1, 2) or self.hold and not self.chunk:
            raise ValueError(f"policy.hold: expected 0, or 1 / 2 with chunk > 0, got {self.hold}")


def row_policy(width: int, n_rows: int, sms: int) -> Policy:
    """Rows per program from the row width (about 2048 elements a program), warps from the tile (one per
    512 elements, 16 bytes of bf16 a thread and load, 1-32), and as many programs per SM as 64 resident warps
    allow (a grid-stride loop covers the rest of the rows)."""
    block = next_pow2(width)
    rows = max(1, min(16, 2048 // block))
    warps = max(1, min(32, block * rows // 512))
    per_sm = max(1, 64 // warps)
    blocks = -(-max(n_rows, 1) // rows)
    return Policy(rows, warps, max(1, min(blocks, per_sm * sms)))


def per_token_policy(width: int, n_rows: int, sms: int, residual: bool) -> Policy:
    """The per-token FP8 norm's launch: ``row_policy``'s, except where the grid has rows enough that the
    bytes in flight decide:

    - rows wider than 4096 (a one-pass tile of 8192 or more), from 3 rows an SM: two passes over slices,
      one program a row; 2048-wide slices where they divide the row (8192, 16384), else 1024 (5120 =
      5 x 1024, 7168 = 7 x 1024); 8 elements a thread a slice (4 above 8192 columns with a residual).
      One pass pads the tile to a power of two (5120 -> 8192: 37% of the lanes idle) and holds the row in
      registers; slices waste nothing where they divide the row and leave room for more programs an SM,
      and the second pass reads the row back from L2;
    - up to 4096 columns, from 16 rows an SM: one pass, one row a program, 32 elements a thread without a
      residual (2 warps at 2048) in a grid as large as 64 resident warps allow, 16 with one (x and r both
      held) and one program a row.

    Measured on an H200 (bf16, candidates and peers interleaved in one process, cold and graph;
    ``experiments/per_token_launch_ab.py``): 5120 x 65536 293 vs 503 us (row_policy), 16384 x 65536 976
    vs 1330, 5120 x 65536 + residual 569 vs 721, 4096 x 65536 240 vs 262. At 512-1024 rows (3.9-7.8 an
    SM) slices took 0.75-0.93x row_policy's time cold (0.66-0.89x graph) at 5120-16384 columns without a
    residual; with 2048-wide slices 8192 + residual took 0.89-0.90x the 1024-wide ones' time at 512-65536
    rows (8192 without one: 0.93-0.96x up to 4096 rows, 1.01-1.04x from 16384). At 2048 rows (15.5 an
    SM) one pass with 32 / 16 elements a thread took 1.00-1.11x row_policy's time, at 4096 rows 0.97x."""
    block = next_pow2(width)
    if block >= 8192 and n_rows >= 3 * sms:
        chunk = 2048 if block > 8192 or width % 2048 == 0 else 1024
        warps = chunk // (128 if residual and block > 8192 else 256)
        return Policy(1, warps, n_rows, chunk)
    if block >= 8192 or n_rows < 16 * sms:
        return row_policy(width, n_rows, sms)
    ept = 16 if residual else 32
    warps = max(1, block // (32 * ept))
    return Policy(1, warps, n_rows if residual else min(n_rows, max(1, 64 // warps) * sms))


def head_policy(head_dim: int, n_rows: int, sms: int) -> Policy:
    """QK-norm: heads a program for about 2048 elements (16 of 128, 32 of 64), fewer while the grid
    would not fill two programs per SM; one program per block of rows. (At head_dim 64, 16 heads a
    program, 1024 elements over 2 warps, took 1.09-1.25x the time of 32 over 4 warps from 1024 tokens
    on an H200: ``variants/qk-norm-d64/``.)"""
    block = next_pow2(head_dim)
    rows = max(1, 2048 // block)
    while rows > 1 and -(-n_rows // rows) < 2 * sms:
        rows //= 2
    warps = max(1, min(8, block * rows // 512))
    return Policy(rows, warps, -(-max(n_rows, 1) // rows))


# ---------------------------------------------------------------------------------------------- checks

def _dtype_name(t) -> str:
    return str(t.dtype).removeprefix("torch.")


def _check_float(t, name):
    import torch
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(t).__name__}")
    if _dtype_name(t) not in IO_DTYPES:
        raise TypeError(f"{name}: dtype {t.dtype} not supported (expected one of {', '.join(IO_DTYPES)})")


def _rows2d(x, name):
    """x as (rows, hidden) without a copy: the last dim unit-stride, the leading dims mergeable."""
    if x.dim() < 1 or x.shape[-1] == 0:
        raise ValueError(f"{name}: expected at least 1 dimension with a non-empty last one, got shape {tuple(x.shape)}")
    if x.stride(-1) != 1 and x.shape[-1] > 1:
        raise ValueError(f"{name}: the last dimension must be contiguous (stride 1), got strides {x.stride()}")
    try:
        return x.view(-1, x.shape[-1])
    except RuntimeError:
        raise ValueError(f"{name}: its leading dimensions cannot be viewed as rows without a copy "
                         f"(shape {tuple(x.shape)}, strides {x.stride()})") from None


def _check_weight(w, n, x, name="weight"):
    _check_float(w, name)
    if w.dim() != 1 or w.shape[0] != n:
        raise ValueError(f"{name}: expected shape ({n},), got {tuple(w.shape)}")
    if w.device != x.device:
        raise ValueError(f"{name}: on {w.device}, the input is on {x.device}")
    if w.stride(0) != 1 and n > 1:
        raise ValueError(f"{name}: must be contiguous, got stride {w.stride(0)}")


def _check_like(t, x, name):
    _check_float(t, name)
    if t.shape != x.shape:
        raise ValueError(f"{name}: expected shape {tuple(x.shape)}, got {tuple(t.shape)}")
    if t.device != x.device:
        raise ValueError(f"{name}: on {t.device}, the input is on {x.device}")


def _check_cpu(x, name="x"):
    """CPU tensors need Triton's interpreter (TRITON_INTERPRET=1 before triton is imported): UnsupportedError
    otherwise, as the plain and the training kernels raise."""
    if x.device.type == "cuda":
        return
    if not interpreter_on():
        raise UnsupportedError(f"{name}: on {x.device}; the Triton kernels need CUDA tensors "
                               f"(or TRITON_INTERPRET=1 for CPU tensors)")


def fp8_dtype():
    """torch.float8_e4m3fn, or a clear error where this torch has none."""
    import torch
    dt = getattr(torch, "float8_e4m3fn", None)
    if dt is None:
        raise TypeError(f"torch {torch.__version__} has no float8_e4m3fn dtype")
    return dt


def _check_scale(scale, x, name="scale"):
    import torch
    if not isinstance(scale, torch.Tensor):
        raise TypeError(f"{name}: expected a float32 tensor of one element, got {type(scale).__name__}")
    if scale.dtype != torch.float32 or scale.numel() != 1:
        raise ValueError(f"{name}: expected a float32 tensor of one element, got {scale.dtype} with {scale.numel()}")
    if scale.device != x.device:
        raise ValueError(f"{name}: on {scale.device}, the input is on {x.device}")


def _bits(t):
    """A uint8 view of an e4m3 tensor: under the interpreter the kernels store e4m3 bit patterns they
    rounded themselves (its own fp32 -> e4m3 cast is off; see _rmsnorm_variants._fp8_clamp)."""
    import torch
    return t.view(torch.uint8)


def _out(out, x, dtype, name):
    import torch
    if out is None:
        return torch.empty(x.shape, dtype=dtype, device=x.device)
    if not isinstance(out, torch.Tensor) or out.dtype != dtype or out.shape != x.shape or out.device != x.device:
        raise ValueError(f"{name}: expected a {dtype} tensor of shape {tuple(x.shape)} on {x.device}")
    return out


# ---------------------------------------------------------------------------------------------- row norms

def _norm_rows(x, weight, residual, eps, *, w_offset=0.0, quant=0, scale=None, scale_ub=None,
               out=None, residual_out=None, scales=None, config=None, policy=None):
    import torch
    _check_float(x, "x")
    _check_cpu(x)
    eps = check_eps(eps)
    x2 = _rows2d(x, "x")
    n_rows, n = x2.shape
    _check_weight(weight, n, x)
    y_dtype = fp8_dtype() if quant else x.dtype
    y = _out(out, x, y_dtype, "out")
    y2 = _rows2d(y, "out")
    r2 = ro2 = None
    if residual is not None:
        _check_like(residual, x, "residual")
        r2 = _rows2d(residual, "residual")
        residual_out = _out(residual_out, x, residual.dtype, "residual_out")
        ro2 = _rows2d(residual_out, "residual_out")
    if quant == 1:
        _check_scale(scale, x)
    if scale_ub is not None:
        _check_scale(scale_ub, x, "scale_ub")
    if quant == 2:
        if scales is None:
            scales = torch.empty((*x.shape[:-1], 1), dtype=torch.float32, device=x.device)
        elif scales.dtype != torch.float32 or scales.numel() != n_rows or not scales.is_contiguous():
            raise ValueError(f"scales: expected a contiguous float32 tensor of {n_rows} elements")
    soft = bool(quant) and x.device.type != "cuda"
    if n_rows and quant != 2:      # the plain kernel with its launch table, Gemma's offset and a static scale
        from .launch import LAUNCHER
        with on_device(x):
            LAUNCHER.launch(x2, weight, _bits(y2) if soft else y2, r2, ro2, eps, config=config,
                            variant=(scale if quant else None, w_offset, quant == 1, soft))
    elif n_rows:                   # per-row scales: the whole row before the first store, its own kernel
        if policy is not None and not isinstance(policy, Policy):
            raise TypeError(f"policy: expected a Policy, got {type(policy).__name__}")
        p = policy or per_token_policy(n, n_rows, sm_count(x.device), r2 is not None)
        with on_device(x):
            _kernels().norm_per_token_kernel[(p.programs,)](
                x2, weight, _bits(y2) if soft else y2, r2 if r2 is not None else x2, ro2 if ro2 is not None else y2,
                scale_ub if scale_ub is not None else scales, scales,
                x2.stride(0), y2.stride(0), r2.stride(0) if r2 is not None else 0,
                ro2.stride(0) if ro2 is not None else 0,
                n_rows, eps,
                N=n, BLOCK_N=next_pow2(n), ROWS=p.rows, HAS_RES=r2 is not None, HAS_UB=scale_ub is not None,
                MIN_SCALE=MIN_SCALE, SOFT_ROUND=soft, CHUNK=p.chunk, HOLD=p.hold, **_launch_opts(x.device, p.warps))
    outs = (y,) if quant != 2 else (y, scales)
    if residual is not None:
        outs = outs + (residual_out,)
    return outs[0] if len(outs) == 1 else outs


def gemma_rmsnorm(x, weight, residual=None, eps: float = 1e-6, *, out=None, residual_out=None, config=None):
    """Gemma's RMSNorm, ``x / rms(x) * (1 + w)`` in fp32, one rounding; with ``residual``: normalizes
    ``x + residual`` and also returns that sum (``residual_out=residual, out=x`` for in place).
    ``config``: the plain kernel's launch (a ``LaunchConfig``; None: its table's pick)."""
    return _norm_rows(x, weight, residual, eps, w_offset=1.0, out=out, residual_out=residual_out, config=config)


def rmsnorm_fp8_static(x, weight, scale, residual=None, eps: float = 1e-6, *, out=None, residual_out=None,
                       config=None):
    """RMSNorm then ``y / scale`` saturated to +-448 and stored as float8_e4m3fn (``scale``: fp32, one element).
    ``config``: the plain kernel's launch (a ``LaunchConfig``; None: its table's pick)."""
    return _norm_rows(x, weight, residual, eps, quant=1, scale=scale, out=out, residual_out=residual_out,
                      config=config)


def rmsnorm_fp8_per_token(x, weight, residual=None, eps: float = 1e-6, *, scale_ub=None, out=None,
                          scales=None, residual_out=None, policy=None):
    """RMSNorm then per-row FP8: scale = max(min(absmax, scale_ub) / 448, MIN_SCALE) (fp32, shape
    (..., 1)), output ``y / scale`` in float8_e4m3fn. Returns (y8, scales[, new_residual]).
    ``policy``: the launch (a ``Policy``; None: ``per_token_policy``'s)."""
    return _norm_rows(x, weight, residual, eps, quant=2, scale_ub=scale_ub, out=out, scales=scales,
                      residual_out=residual_out, policy=policy)


# ---------------------------------------------------------------------------------------------- quantize alone

def _quant(y, quant, scale=None, scale_ub=None, out=None):
    import torch
    _check_float(y, "y")
    _check_cpu(y, "y")
    y2 = _rows2d(y, "y")
    n_rows, n = y2.shape
    o = _out(out, y, fp8_dtype(), "out")
    o2 = _rows2d(o, "out")
    scales = None
    if quant == 1:
        _check_scale(scale, y)
    if scale_ub is not None:
        _check_scale(scale_ub, y, "scale_ub")
    if quant == 2:
        scales = torch.empty((*y.shape[:-1], 1), dtype=torch.float32, device=y.device)
    soft = y.device.type != "cuda"
    if n_rows:
        p = row_policy(n, n_rows, sm_count(y.device))
        with on_device(y):
            _kernels().quant_rows_kernel[(p.programs,)](
                y2, _bits(o2) if soft else o2, scale if scale is not None else o2,
                scale_ub if scale_ub is not None else o2,
                scales if scales is not None else o2, y2.stride(0), o2.stride(0), n_rows,
                N=n, BLOCK_N=next_pow2(n), ROWS=p.rows, QUANT=quant, HAS_UB=scale_ub is not None,
                MIN_SCALE=MIN_SCALE, SOFT_ROUND=soft, **_launch_opts(y.device, p.warps))
    return o if quant == 1 else (o, scales)


def quantize_fp8_static(y, scale, *, out=None):
    """``y / scale`` saturated to +-448, as float8_e4m3fn (a separate kernel: the unfused baseline)."""
    return _quant(y, 1, scale=scale, out=out)


def quantize_fp8_per_token(y, *, scale_ub=None):
    """Per-row FP8 of ``y``: (y8, scales) with the scale rule of ``rmsnorm_fp8_per_token``."""
    return _quant(y, 2, scale_ub=scale_ub)


# ---------------------------------------------------------------------------------------------- qk-norm

def _check_heads(t, name, head_dim=None):
    _check_float(t, name)
    if t.dim() != 3:
        raise ValueError(f"{name}: expected shape (tokens, heads, head_dim), got {tuple(t.shape)}")
    if t.stride(-1) != 1 and t.shape[-1] > 1:
        raise ValueError(f"{name}: head_dim must be contiguous (stride 1), got strides {t.stride()}")
    if head_dim is not None and t.shape[-1] != head_dim:
        raise ValueError(f"{name}: head_dim {t.shape[-1]}, q has {head_dim}")


def qk_rmsnorm(q, k, q_weight, k_weight, eps: float = 1e-6, *, q_out=None, k_out=None):
    """Per-head RMSNorm of q (tokens, heads_q, head_dim) and k (tokens, heads_kv, head_dim) in one launch.

    q and k may be strided views (e.g. into a fused qkv buffer): rows are addressed through the token and
    head strides, no copy. Outputs are new contiguous tensors unless given (``q_out=q`` works in place).
    """
    _check_heads(q, "q")
    d = q.shape[-1]
    _check_heads(k, "k", d)
    if k.shape[0] != q.shape[0]:
        raise ValueError(f"k: {k.shape[0]} tokens, q has {q.shape[0]}")
    if k.dtype != q.dtype or k.device != q.device:
        raise ValueError(f"k: {k.dtype} on {k.device}, q is {q.dtype} on {q.device}")
    _check_cpu(q, "q")
    eps = check_eps(eps)
    _check_weight(q_weight, d, q, "q_weight")
    _check_weight(k_weight, d, q, "k_weight")
    q_out = _out(q_out, q, q.dtype, "q_out")
    k_out = _out(k_out, k, k.dtype, "k_out")
    for t, name in ((q_out, "q_out"), (k_out, "k_out")):
        if t.stride(-1) != 1 and d > 1:
            raise ValueError(f"{name}: head_dim must be contiguous (stride 1)")
    tokens, hq, hk = q.shape[0], q.shape[1], k.shape[1]
    nq, nk = tokens * hq, tokens * hk
    if nq + nk:
        p = head_policy(d, nq + nk, sm_count(q.device))
        grid = -(-nq // p.rows) + -(-nk // p.rows)
        with on_device(q):
            _kernels().qk_norm_kernel[(grid,)](
                q, k, q_out, k_out, q_weight, k_weight,
                q.stride(0), q.stride(1), k.stride(0), k.stride(1),
                q_out.stride(0), q_out.stride(1), k_out.stride(0), k_out.stride(1),
                nq, nk, hq, hk, eps, D=d, BLOCK_D=next_pow2(d), ROWS=p.rows, **_launch_opts(q.device, p.warps))
    return q_out, k_out
