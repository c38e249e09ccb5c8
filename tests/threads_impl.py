"""A test-only implementation, ``threads``: it refuses every input, naming the number of Inductor
compile threads its process would use and its CPU priority (``ValueError: compile_threads=N nice=M``). Registered by passing
this file in ``imports`` (``rmsnorm_lab.isolate.import_extra``)."""
import os

from rmsnorm_lab.impls.base import Impl

NAME = "threads"
PATH = os.path.abspath(__file__)


def _load():
    import torch._inductor.config as inductor_config       # imported after the child's setting

    def threads_rmsnorm(x, weight, residual=None, eps: float = 1e-6):
        raise ValueError(f"compile_threads={inductor_config.compile_threads} nice={os.nice(0)}")
    return threads_rmsnorm


IMPLS = [Impl(NAME, "test: reports its compile threads", "test", _load, devices=("cpu", "cuda"),
              dtypes=("float32",), requires=("torch",), numerics="none: it always refuses")]
