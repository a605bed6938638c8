"""When ``delta_e`` takes the compiled CIEDE2000 kernel: the one place for that run-time policy.

Compiling costs seconds to tens of seconds per process (less with a warm inductor cache), so it
is never done for small inputs, and by default only after the process has already spent about
that much time in large eager calls (a "ski-rental" rule: the total cost is at most about twice
the best choice in hindsight). The state that rule needs (pairs seen, a compile failure, the
compiled kernel) lives in one :class:`CompilePolicy` object, :data:`CIEDE2000`, not in module
globals of ``difference``.

torch's inductor caches compiled graphs on disk (FX graph cache and AOT autograd cache, both on
by default in torch 2.14, under ``TORCHINDUCTOR_CACHE_DIR``), so a later process recompiles
from the cache, much faster than the first time; see ``benchmarks/RESULTS.md``.
"""

from __future__ import annotations

import logging
import math
import sys
from collections.abc import Callable

import torch

from ._ciede2000 import ciede2000_rows

__all__ = ["CompilePolicy", "CIEDE2000"]


class _DropCudaProbe(logging.Filter):
    """Drops cpp_extension's "No CUDA runtime is found" warning: it fires on import when a CUDA
    toolkit is installed but no GPU is present, and a CPU compile never uses CUDA."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("No CUDA runtime is found")


def _quiet_cpp_extension_import() -> None:
    """Import ``torch.utils.cpp_extension`` (which inductor imports while compiling) with its
    CUDA probe warning filtered, on machines without CUDA only; once per process."""
    name = "torch.utils.cpp_extension"
    if name in sys.modules or torch.cuda.is_available():
        return
    logger = logging.getLogger(name)
    drop = _DropCudaProbe()
    logger.addFilter(drop)
    try:
        __import__(name)
    finally:
        logger.removeFilter(drop)


def torch_compile(fn: Callable) -> Callable:
    """``torch.compile`` for a forward-only elementwise kernel: any size, one graph."""
    _quiet_cpp_extension_import()
    return torch.compile(fn, dynamic=True, fullgraph=True)


class CompilePolicy:
    """Decides, call by call, whether a kernel runs compiled, and holds the compiled kernel.

    Args:
        fn: the eager kernel to compile.
        min_pairs: calls with fewer pairs never compile or run compiled unless forced.
        auto_compile_pairs: pairs computed eagerly in large calls after which ``fast=None``
            compiles: about what eager computes in the time a cold compile takes.
        compiler: turns ``fn`` into the compiled kernel (tests replace it).
    """

    def __init__(self, fn: Callable, min_pairs: int, auto_compile_pairs: int,
                 compiler: Callable[[Callable], Callable] = torch_compile) -> None:
        self.fn = fn
        self.min_pairs = min_pairs
        self.auto_compile_pairs = auto_compile_pairs
        self.compiler = compiler
        self.eager_pairs_seen = 0  # pairs of large no-grad calls computed eagerly
        self.failed = False  # compiling failed once (no C++ compiler, ...): eager from then on
        self.kernel: Callable | None = None

    def use_compiled(self, fast: bool | None, device: torch.device, shape, needs_grad: bool):
        """Whether this call runs compiled (``fast`` as in ``delta_e``; ``shape`` the broadcast
        ``[..., 3]`` shape). Raises ``ValueError`` where ``fast=True`` cannot be honoured."""
        if fast is False or self.failed or torch.compiler.is_compiling():
            return False
        if device.type not in ("cpu", "cuda"):
            if fast:
                raise ValueError(f"fast: expected a cpu or cuda device, got {device.type}")
            return False
        if needs_grad:
            if fast:
                raise ValueError("fast: fast=True is forward-only, got inputs that require grad")
            return False
        if fast:
            return True
        pairs = math.prod(shape[:-1])
        if pairs < self.min_pairs:
            return False
        if self.kernel is not None:  # already compiled in this process: free to use
            return True
        self.eager_pairs_seen += pairs
        return self.eager_pairs_seen >= self.auto_compile_pairs

    def compiled(self) -> Callable:
        """The compiled kernel, created on first use (it compiles on its first call)."""
        if self.kernel is None:
            self.kernel = self.compiler(self.fn)
        return self.kernel


# Eager in-place CIEDE2000 computes ~20M pairs/s on 2 cores and a cold compile takes ~20 s.
CIEDE2000 = CompilePolicy(ciede2000_rows, min_pairs=1 << 20, auto_compile_pairs=400_000_000)
"""The policy of ``delta_e``'s compiled CIEDE2000 kernel (``fast=``)."""
