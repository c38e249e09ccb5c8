"""The seed's public API (vLLM benchmarks/kernels/benchmark_rmsnorm.py), kept and fixed.

Differences from the seed, each a fix: the functions do not mutate their
arguments (the seed's FlashInfer/vLLM paths overwrote x and residual);
``calculate_diff`` checks both outputs against a float64 reference with random
weights and returns a DataFrame; the benchmark times the kernel alone (no
``clone()`` or module construction in the timed region).
"""
from __future__ import annotations

from .validate import check_bool, check_eps, check_inputs, check_seed, check_support, contiguous_rows

# implementations written in PyTorch ops: any strides are fine, no copy needed
_STRIDE_SAFE = ("huggingface", "torch", "torch_compile")


def _call(name, x, weight, residual, eps):
    """Validate, then run implementation ``name`` on copies (the caller's tensors are never changed).

    Zero tokens return empty tensors without calling the implementation.
    Non-contiguous inputs are copied to contiguous ones (one warning per
    implementation) for the kernels that assume row-major rows.
    """
    from .impls import get_impl

    eps = check_inputs(x, weight, residual, eps)
    impl = get_impl(name)
    check_support(impl, x)
    if x.numel() == 0:                       # zero tokens: nothing to launch
        import torch
        out = torch.empty_like(x)
        return out if residual is None else (out, torch.empty_like(x))
    if name in _STRIDE_SAFE:
        xc, r = x.clone(), (residual.clone() if residual is not None else None)
    else:
        weight = contiguous_rows(weight, "weight", name)
        xc = _fresh(x, "x", name)
        r = _fresh(residual, "residual", name) if residual is not None else None
    fn = impl.load()
    out = fn(xc, weight, r, eps)
    if residual is None:
        return out.view(x.shape)
    return out[0].view(x.shape), out[1].view(x.shape)


def _fresh(t, what, impl):
    """A contiguous copy of ``t`` that the call may overwrite (warns once when ``t`` was strided)."""
    c = contiguous_rows(t, what, impl)
    return c.clone() if c is t else c


def rmsnorm_naive(x, weight, residual=None, eps: float = 1e-6):
    """HuggingFace semantics. x: (batch, seq, hidden); returns out or (out, new_residual).

    Inputs are checked (``validate.check_inputs``: TypeError / ValueError naming
    the argument); zero tokens return empty tensors; NaN / Inf propagate per row
    as in the float64 reference.
    """
    return _call("huggingface", x, weight, residual, eps)


def rmsnorm_flashinfer(x, weight, residual=None, eps: float = 1e-6):
    """FlashInfer (default path); inputs are not modified. CUDA only (UnsupportedError "needs CUDA" otherwise)."""
    return _call("flashinfer", x, weight, residual, eps)


def rmsnorm_vllm(x, weight, residual=None, eps: float = 1e-6):
    """vLLM's kernels (installed vllm or $RMSNORM_LAB_VLLM_OPS); inputs are not modified. CUDA only."""
    return _call("vllm", x, weight, residual, eps)


def calculate_diff(batch_size: int, seq_len: int, hidden_size: int, use_residual: bool = True,
                   dtype="bfloat16", device: str | None = None, impls="all", seed: int = 0,
                   eps: float = 1e-6, verbose: bool = True):
    """Compare every available implementation with the float64 reference; print and return a DataFrame."""
    from .cases import make_cases
    from .check import check_all
    from .device import resolve_device

    from .device import say_once, use_triton_interpreter_on_cpu

    use_residual = check_bool("use_residual", use_residual)
    seed = check_seed(seed)
    eps = check_eps(eps)
    dev = resolve_device(device)
    note = use_triton_interpreter_on_cpu(dev)
    if verbose:
        say_once(note)
    cases = make_cases([hidden_size], [batch_size], [seq_len], [dtype], [bool(use_residual)])
    df = check_all(cases, impls, dev, seed, eps)
    if verbose:
        cols = ["impl", "status", "err_out", "err_residual", "tolerance", "reason"]
        print(f"correctness on {dev}: x ({batch_size}, {seq_len}, {hidden_size}) {cases[0].dtype}, "
              f"residual={bool(use_residual)}; relative error vs float64 reference")
        print(df[cols].to_string(index=False, float_format=lambda v: f"{v:.2e}"))
        bad = df[df["status"].isin(["wrong", "error"])]
        ok = df[df["status"] == "ok"]
        print(f"{len(ok)} match, {len(bad)} differ or fail, {len(df) - len(ok) - len(bad)} cannot run here")
    return df


class Benchmark:
    """What ``get_benchmark`` returns: ``.run(print_data=True, save_path=DIR)`` like the seed's perf_report.

    Without a GPU, sizes not given come from ``device.CPU_GRID`` (minutes, not
    hours, with our kernel in the Triton interpreter); the run says so.
    """

    def __init__(self, use_residual: bool, **sweep_kwargs):
        self.use_residual = bool(use_residual)
        self.kwargs = sweep_kwargs
        self.plot_name = f"rmsnorm-perf-{'with' if self.use_residual else 'without'}-residual"

    def run(self, print_data: bool = False, save_path: str | None = None, show_plots: bool = False):
        from pathlib import Path

        from .plots import plot_metric
        from .sweep import SweepConfig, run_sweep, summarize

        from .device import CPU_GRID, resolve_device, say_once, use_triton_interpreter_on_cpu

        kw = {**self.kwargs, "residual": [self.use_residual]}
        if save_path:
            kw["save_path"] = save_path
        dev = resolve_device(kw.get("device", "auto"))
        say_once(use_triton_interpreter_on_cpu(dev))
        sizes = ("hidden", "batch", "seq") if kw.get("tokens") is None else ("hidden",)
        missing = [k for k in sizes if k not in kw]
        if not dev.startswith("cuda") and missing:
            kw.update({k: CPU_GRID[k] for k in missing})
            say_once("CPU grid: " + ", ".join(f"{k} {kw[k]}" for k in sizes)
                     + " (the seed's GPU grid takes hours on CPU; pass hidden=/batch=/seq= for others)")
        df = run_sweep(SweepConfig(**kw))
        for mode in sorted(set(df.loc[df["status"] == "ok", "mode"])):
            table = summarize(df[df["residual"] == self.use_residual], mode)
            if print_data:
                print(f"{self.plot_name} ({mode} timing, µs per call, median):")
                print(table.round(2).to_string())
            if save_path:
                Path(save_path).mkdir(parents=True, exist_ok=True)
                table.round(3).to_csv(Path(save_path) / f"{self.plot_name}-{mode}.csv")
                fig = plot_metric(df[df["residual"] == self.use_residual], mode, "us_median",
                                  Path(save_path) / f"{self.plot_name}-{mode}.png")
                if fig is not None and not show_plots:
                    import matplotlib.pyplot as plt
                    plt.close(fig)
        return df


def get_benchmark(use_residual: bool, **sweep_kwargs) -> Benchmark:
    """The seed's benchmark object; keyword arguments go to SweepConfig (hidden, batch, seq, impls, ...)."""
    return Benchmark(use_residual, **sweep_kwargs)
