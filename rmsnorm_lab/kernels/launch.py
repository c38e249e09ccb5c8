"""Launching our kernel: one Launcher holds every cache (compiled kernels, per-shape plans, device facts).

``launch`` runs the kernel on 2-D row-major views without checks; ``fast`` is the registry's per-call
path (a dict lookup, then the compiled kernel's own launcher) that checks, through its plan key, all
that a cached plan assumes; ``config_fn`` gives a fixed-config callable for tuning.
"""
from __future__ import annotations

import contextlib

from .config import LaunchConfig, as_config, next_pow2
from .occupancy import grid_programs
from .tables import pick

_INF = float("inf")
MAX_PLANS = 4096


def on_device(t):
    """A context that launches on the tensor's GPU, not the current one. Nothing to switch (a null
    context, no device switch on the per-call path) for a CPU tensor or one on the current GPU."""
    if not t.is_cuda:
        return contextlib.nullcontext()
    import torch
    if t.device.index == torch.cuda.current_device():
        return contextlib.nullcontext()
    return torch.cuda.device(t.device)


def needs_int64(padded_rows: int, row_stride: int, block_n: int) -> bool:
    """Whether an element offset (row * stride + column, masked lanes included) can reach 2**31."""
    return padded_rows * row_stride + block_n >= 2**31


def kernel_constexprs(n: int, n_rows: int, cfg: LaunchConfig, has_res: bool, row_stride: int, pdl: bool,
                      sum_first_ok: bool = True) -> tuple:
    """The kernel's arguments after eps, in its parameter order (N, BLOCK_N, ROWS, HAS_RES, W_IN_LOOP, USE_PDL,
    PDL_EARLY, EVICT_LOADS, EVICT_STORES, CHUNK, EVICT_LAST_LOADS, SUM_FIRST, LATE_RO, ONE_BLOCK, I64, RSQRT, HOLD, then
    the plain norm's SCALE None, W_OFFSET 0.0, QUANT False, SOFT_ROUND False; ``VARIANT_ARGS`` counts those four):
    what launch passes and what tune's sm_90 compile uses. pdl: the launch uses PDL (cfg.pdl and the GPU has it).
    sum_first_ok: the new residual's dtype is x's or float32, so normalizing the stored sum (sum_first) loses
    nothing beyond x's own rounding (False: a narrower residual; sum_first is dropped)."""
    block_n = next_pow2(n)
    chunk = cfg.chunk if cfg.chunk < block_n else 0      # a chunk as wide as the row is the one-pass kernel
    if cfg.reread:
        chunk = block_n                                  # ... unless asked to read the row twice
    lean = cfg.lean
    i64 = not lean or needs_int64(-(-n_rows // cfg.rows) * cfg.rows, row_stride, block_n)
    hold = cfg.hold if 0 < chunk < n else 0              # slices held: only where there is more than one
    sum_first = cfg.sum_first and has_res and chunk > 0 and sum_first_ok and hold < 2
    late_ro = cfg.late_ro and has_res and chunk == 0
    return (n, block_n, cfg.rows, has_res, block_n >= 8192, pdl, cfg.pdl_early, cfg.evict_loads, cfg.evict_stores,
            chunk, cfg.evict_last, sum_first, late_ro, lean and not cfg.per_sm, i64, lean, hold, None, 0.0, False,
            False)


VARIANT_ARGS = 4        # SCALE, W_OFFSET, QUANT, SOFT_ROUND: the last of kernel_constexprs' values


class Launcher:
    """Every cache of our kernel's launches in one object; ``reset()`` empties it (e.g. after use_table)."""

    def __init__(self):
        self.reset()

    def reset(self) -> None:
        self.kernel = None            # the @triton.jit function (imported on first launch)
        self.compiled: dict = {}      # launch key -> compiled kernel (CUDA)
        self.plans: dict = {}         # fast's plan key -> (compiled kernel, grid, constexpr tail)
        self.sm_counts: dict = {}     # device index -> SMs
        self.pdl_ok: dict = {}        # device index -> programmatic dependent launch available
        self.names: dict = {}         # device index -> torch's device name
        self.direct = True            # launch through the compiled kernel's run() (off if a Triton lacks it)
        self.int_ptrs = True          # fast passes raw addresses (off if a launcher wants tensors)
        self._empty_like = self._raw_stream = None

    # ---- device facts
    def device_name(self, device) -> str | None:
        """torch's name of a CUDA device (cached per index); None for any other device."""
        if getattr(device, "type", str(device).split(":")[0]) != "cuda":
            return None
        import torch
        device = torch.device(device)
        idx = device.index if device.index is not None else torch.cuda.current_device()
        if idx not in self.names:
            self.names[idx] = torch.cuda.get_device_name(idx)
        return self.names[idx]

    def sm_count(self, device) -> int:
        idx = device.index if device.index is not None else 0
        if idx not in self.sm_counts:
            import torch
            self.sm_counts[idx] = torch.cuda.get_device_properties(idx).multi_processor_count
        return self.sm_counts[idx]

    def has_pdl(self, device) -> bool:
        """Programmatic dependent launch: sm90+ and a Triton that has it."""
        idx = device.index if device.index is not None else 0
        if idx not in self.pdl_ok:
            import torch
            from . import _rmsnorm_fwd as k
            self.pdl_ok[idx] = k.gdc_wait is not None and torch.cuda.get_device_capability(idx)[0] >= 9
        return self.pdl_ok[idx]

    def _kernel(self):
        if self.kernel is None:
            from ._rmsnorm_fwd import rmsnorm_fwd_kernel
            self.kernel = rmsnorm_fwd_kernel
        return self.kernel

    # ---- the launch
    def launch(self, x2, w, y2, r2=None, ro2=None, eps: float = 1e-6, config=None, variant=None):
        """Launch on 2-D row-major views (unit last stride, no checks); writes y2 (and ro2 = x2 + r2 in ro2's
        dtype). On CUDA returns (compiled kernel, grid, constexpr arguments) for fast's plans, else None.
        config: a LaunchConfig (or dict / positional tuple); None: the table's pick for this GPU.
        variant: None (plain RMSNorm) or (scale, w_offset, quant, soft_round): Gemma's offset weight and / or
        the output divided by a static scale (a one-element fp32 tensor) into a float8_e4m3fn y2 (soft_round:
        CPU tensors, y2 a uint8 view; see the kernel)."""
        n_rows, n = x2.shape
        if n_rows == 0:
            return None
        has_res = r2 is not None
        on_cuda = x2.is_cuda
        cfg = (as_config(config) if config is not None else
               pick(n, n_rows, x2.element_size(), has_res, self.device_name(x2.device) if on_cuda else None,
                    variant="fp8-static" if variant is not None and variant[2] else None))
        # on CPU (the interpreter) a nominal 2 SMs, so tests walk the grid-stride loop
        grid0 = grid_programs(n_rows, cfg.rows, cfg.per_sm,
                              (self.sm_count(x2.device) if on_cuda else 2) if cfg.per_sm else 0)
        if not has_res:
            r2, ro2 = x2, y2     # unused: the kernel never touches them without HAS_RES
        pdl = on_cuda and cfg.pdl and self.has_pdl(x2.device)
        const = kernel_constexprs(n, n_rows, cfg, has_res,
                                  max(x2.stride(0), y2.stride(0), r2.stride(0), ro2.stride(0)), pdl,
                                  ro2.dtype == x2.dtype or ro2.element_size() == 4)
        kconst = const
        if variant is not None:
            scale, w_offset, quant, soft = variant
            const = const[:-VARIANT_ARGS] + (scale, float(w_offset), bool(quant), bool(soft))
            kconst = const[:-VARIANT_ARGS] + (scale is not None,) + const[-VARIANT_ARGS + 1:]
        args = (x2, w, y2, r2, ro2, x2.stride(0), y2.stride(0), r2.stride(0), ro2.stride(0), n_rows, eps) + const
        if not on_cuda:
            self._kernel()[(grid0,)](*args, num_warps=cfg.warps)
            return None
        key = (x2.dtype, w.dtype, y2.dtype, r2.dtype, ro2.dtype, cfg, kconst,
               x2.stride(0) % 16 == 0, y2.stride(0) % 16 == 0, r2.stride(0) % 16 == 0, ro2.stride(0) % 16 == 0,
               x2.data_ptr() % 16 == 0, y2.data_ptr() % 16 == 0, r2.data_ptr() % 16 == 0,
               ro2.data_ptr() % 16 == 0, w.data_ptr() % 16 == 0, x2.device.index)
        k = self.compiled.get(key) if self.direct else None
        if k is not None:
            try:
                import torch
                stream = torch._C._cuda_getCurrentRawStream(x2.device.index)
                k.run(grid0, 1, 1, stream, k.function, k.packed_metadata, None, None, None, *args)
                return k, grid0, args[11:]
            except Exception:   # an incompatible Triton: the ordinary launch from now on
                self.direct = False
        opts = {"num_warps": cfg.warps}
        if cfg.maxnreg:
            opts["maxnreg"] = cfg.maxnreg
        if pdl:
            opts["launch_pdl"] = True
        compiled = self._kernel()[(grid0,)](*args, **opts)
        if self.direct and hasattr(compiled, "run") and hasattr(compiled, "packed_metadata"):
            self.compiled[key] = compiled
            return compiled, grid0, args[11:]
        return None

    # ---- the registry's per-call path
    def fast(self, x, w, r=None, eps: float = 1e-6):
        """RMSNorm with the registry's contract: without a residual returns a new out; with one writes out
        into x and x + r into r (in place, like vLLM / FlashInfer) and returns (x, r) (when r is x, out is a
        new tensor and x becomes x + x). Any input: what the kernel cannot take raises (naming the argument)
        or goes to the checked path.

        The plan key holds what a cached plan assumes: tokens, hidden, weight length, the dtypes of x, weight
        and residual and their devices; contiguity and 16-byte alignment of every pointer and a positive finite
        float eps gate it. After the first call for a key, a launch is that lookup and the compiled kernel's
        launcher with raw addresses.
        """
        try:
            n = x.shape[-1]
            m = x.numel() // n if n else 0
            xp = x.data_ptr()
            wp = w.data_ptr()
            dev = x.get_device()
            if r is None:
                key = (m, n, x.dtype, dev, w.dtype, w.numel(), w.get_device())
                gate = ((xp | wp) & 15) == 0 and x.is_contiguous() and w.is_contiguous()
            else:
                rp = r.data_ptr()
                key = (m, n, x.dtype, dev, w.dtype, w.numel(), w.get_device(), r.dtype, r.numel(), r.get_device())
                gate = ((xp | wp | rp) & 15) == 0 and x.is_contiguous() and w.is_contiguous() and r.is_contiguous()
        except (AttributeError, IndexError, TypeError, RuntimeError):   # not tensors, 0-d, no storage: checked
            return self._fast_miss(x, w, r, eps, None, False)
        plan = self.plans.get(key) if gate and eps.__class__ is float and 0.0 < eps < _INF else None
        if plan is None:
            return self._fast_miss(x, w, r, eps, key, gate)
        k, grid0, tail = plan
        if r is None:
            y = self._empty_like(x)
            yp = rp = rop = y.data_ptr()
        elif rp == xp:
            y = self._empty_like(x)
            yp, rop = y.data_ptr(), rp
        else:
            y, yp, rop = x, xp, rp
        stream = self._raw_stream(dev)
        if self.int_ptrs:
            try:
                k.run(grid0, 1, 1, stream, k.function, k.packed_metadata, None, None, None,
                      xp, wp, yp, rp, rop, n, n, n, n, m, eps, *tail)
                return y if r is None else (y, r)
            except Exception:   # a launcher that wants tensors: pass them from now on
                self.int_ptrs = False
        rr = y if r is None else r
        try:
            k.run(grid0, 1, 1, stream, k.function, k.packed_metadata, None, None, None,
                  x, w, y, x if r is None else rr, rr, n, n, n, n, m, eps, *tail)
            return y if r is None else (y, r)
        except Exception:       # an incompatible Triton: the ordinary launch from now on
            self.direct = False
            self.plans.clear()
            return self._fast_miss(x, w, r, eps, key, False)

    def _fast_miss(self, x, w, r, eps, key, gate):
        """The first call for a plan key (or one that cannot have a plan): check every argument, launch, and
        keep the plan when the inputs are contiguous, aligned CUDA tensors."""
        from .rmsnorm import check_kernel_inputs, registry_call
        eps = check_kernel_inputs(x, w, r, eps)
        if not (x.is_cuda and gate and x.numel()):
            return registry_call(x, w, r, eps)
        import torch
        self._empty_like = torch.empty_like
        self._raw_stream = torch._C._cuda_getCurrentRawStream
        n = x.shape[-1]
        y = torch.empty_like(x) if (r is None or r.data_ptr() == x.data_ptr()) else x
        x2, y2 = x.view(-1, n), y.view(-1, n)
        r2 = None if r is None else r.view(-1, n)
        with on_device(x):
            got = self.launch(x2, w, y2, r2, r2, eps)
        if (got is not None and self.direct and y.data_ptr() % 16 == 0 and len(self.plans) < MAX_PLANS
                and x.device.index == torch.cuda.current_device()):
            self.plans[key] = got
        return y if r is None else (y, r)

    # ---- fixed configs (tuning, A/B runs)
    def config_fn(self, config=None, inplace: bool = True):
        """A registry-style ``fn(x, w, r=None, eps)`` that launches with a fixed config.

        config: a LaunchConfig (or dict / positional tuple), None (the table's pick), or a callable
        ``(hidden, tokens, itemsize, residual) -> config``. With a residual the call works in place (out into x,
        x + r into r) unless ``inplace=False`` (fresh output buffers). Contiguous inputs only, no checks.
        """
        fixed = None if config is None or callable(config) else as_config(config)

        def fn(x, w, r=None, eps: float = 1e-6):
            import torch
            n = x.shape[-1]
            x2 = x.view(-1, n)
            cfg = config(n, x2.shape[0], x.element_size(), r is not None) if callable(config) else fixed
            if r is None:
                y = torch.empty_like(x)
                self.launch(x2, w, y.view(-1, n), None, None, eps, cfg)
                return y
            y, ro = (x, r) if inplace else (torch.empty_like(x), torch.empty_like(r))
            self.launch(x2, w, y.view(-1, n), r.view(-1, n), ro.view(-1, n), eps, cfg)
            return y, ro
        fn.config = fixed
        return fn


LAUNCHER = Launcher()
launch = LAUNCHER.launch
fast = LAUNCHER.fast
config_fn = LAUNCHER.config_fn
device_name_of = LAUNCHER.device_name
