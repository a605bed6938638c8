"""Run-time policy: how much work is done at once, on how many threads, and when to compile.

Every chunk budget and size threshold of the package lives here, so that the trade-offs between
memory, cache and launch counts can be read (and tuned, and monkeypatched by the tests) in one
place; so do the choices that depend on the device (:func:`device_choices`, one switch per
choice, which :func:`force` lets the tests take on CPU tensors), the float32 precision guard
(:func:`ieee_fp32`) and the policy of the compiled CIEDE2000 kernel (:data:`CIEDE2000`).
Modules read them as ``_policy.NAME`` at call time, never copy them at import time. The
figures behind each choice are in ``benchmarks/RESULTS.md``.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import logging
import math
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch import Tensor

from ._aot import AotKernel

# --------------------------------------------------------------------------- threads
#: Distances per k-means Lloyd step below which a CPU k-means runs on one thread.
KMEANS_SMALL_WORK = 1 << 21
#: Pixels (over a batch) below which CPU palettes and quantization run on one thread
#: (a batch of 16 images of 512x512).
SMALL_PIXELS = 1 << 22


@contextlib.contextmanager
def single_thread_if_small(x: Tensor, work: int, limit: int) -> Iterator[None]:
    """Run the block on one CPU thread when ``work < limit`` (and ``x`` is on the CPU).

    Clustering a histogram is hundreds of mid-size ops, each opening a parallel region; on a
    loaded machine (or beside DataLoader workers) every region waits for a descheduled thread,
    so small problems run several times faster on one thread. scikit-learn limits its BLAS
    threads inside KMeans for the same reason. The previous setting is restored on exit.
    """
    if torch.compiler.is_compiling():  # a compiled graph leaves threads to inductor
        yield
        return
    old = torch.get_num_threads()
    if x.device.type != "cpu" or old <= 1 or work >= limit:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(old)


# --------------------------------------------------------------------------- precision


@contextlib.contextmanager
def no_autocast(x: Tensor) -> Iterator[None]:
    """Run the block with autocast off on ``x``'s device: palettes, k-means and distances are
    computed in float32 (or float64) whatever the caller's autocast region says, since bf16/fp16
    distances flip nearest colours and the ``out=`` products refuse a lower-precision result.
    Callers convert their outputs back to the input's dtype."""
    kind = x.device.type if isinstance(x, Tensor) else "cpu"
    if kind not in ("cpu", "cuda") or not torch.is_autocast_enabled(kind):
        yield
        return
    with torch.autocast(kind, enabled=False):
        yield


@functools.lru_cache(maxsize=1)
def _fp32_leaves() -> tuple:
    """The per-operation float32 precision switches of torch >= 2.9 (``fp32_precision``) that
    reach our matrix products and kornia's colour matrices; () on older torch."""
    b = torch.backends
    leaves = [getattr(b.cuda, "matmul", None), getattr(b.cudnn, "conv", None),
              getattr(getattr(b, "mkldnn", None), "matmul", None),
              getattr(getattr(b, "mkldnn", None), "conv", None)]
    try:
        return tuple(leaf for leaf in leaves if leaf is not None and leaf.fp32_precision)
    except (AttributeError, RuntimeError):
        return ()


@contextlib.contextmanager
def ieee_fp32() -> Iterator[None]:
    """Run the block with IEEE float32 matrix products and convolutions, whatever the user's
    precision flags say, and restore them on exit.

    TF32 (``set_float32_matmul_precision("high")``, ``fp32_precision = "tf32"``) keeps 10
    mantissa bits: enough to flip nearest colours and move palettes. Only the per-operation
    switches are written (the new ``fp32_precision`` API where torch has it, else the legacy
    ``allow_tf32`` flags): reading the legacy cuDNN flag after the new API was used raises.
    Not thread-safe (the flags are global); a compiled graph keeps the flags it was traced with.
    """
    if torch.compiler.is_compiling():
        yield
        return
    leaves = _fp32_leaves()
    if leaves:
        old = [leaf.fp32_precision for leaf in leaves]
        for leaf, value in zip(leaves, old, strict=True):
            if value != "ieee":
                leaf.fp32_precision = "ieee"
        try:
            yield
        finally:
            for leaf, value in zip(leaves, old, strict=True):
                if value != "ieee":
                    leaf.fp32_precision = value
        return
    cuda_mm, cudnn = torch.backends.cuda.matmul, torch.backends.cudnn  # torch < 2.9
    legacy = (torch.get_float32_matmul_precision(), cuda_mm.allow_tf32, cudnn.allow_tf32)
    torch.set_float32_matmul_precision("highest")
    cuda_mm.allow_tf32 = cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(legacy[0])
        cuda_mm.allow_tf32, cudnn.allow_tf32 = legacy[1], legacy[2]


# --------------------------------------------------------------------------- k-means
#: Lloyd steps between host-side "all converged?" checks on a GPU (a check is a sync).
KMEANS_CHECK_EVERY = 4

# --------------------------------------------------------------------------- binning
#: Pixels (and dense bins) of a group of images binned at once: CPU, and other devices, where
#: fewer, larger groups cost fewer syncs.
BIN_GROUP = 1 << 23
BIN_GROUP_GPU = 1 << 24
#: CPU: pixels of one large image binned at once, so a chunk's codes stay in L2.
BIN_PIXEL_CHUNK = 1 << 18
#: Pixels (over a batch) whose channel histograms are counted at once (~40 bytes a pixel).
HISTOGRAM_CHUNK = 1 << 22
#: Pixels (over a group of images) up to which exact colours are found by one sort of their
#: codes; beyond, by counting inside the occupied coarse bins (no sort, linear passes).
SORT_PIXELS = 1 << 20
#: Pixels per chunk of images when dominant colours are counted on the torch path.
DOMINANT_IMAGE_CHUNK = 1 << 26
#: CPU: pixels per chunk of one large image when dominant colours are counted.
DOMINANT_PIXEL_CHUNK = 1 << 18
#: Largest (slot, offset triple) table of the one-pass dominant sums; larger: per channel.
DOMINANT_JOINT_MAX = 1 << 24
#: Largest (slot, offsets) table that the chunked CPU dominant path keeps per image.
DOMINANT_JOINT_CHUNKED = 1 << 18
#: Pixels per chunk when a dataset palette accumulates its statistics (~40 bytes per pixel).
FIT_CHUNK_PIXELS = 1 << 22

# --------------------------------------------------------------------------- nearest colour
#: Pixel-colour distances alive at once in the nearest-colour search (16 MiB of float32 on
#: the CPU; 128 MiB on other devices, for fewer launches).
NEAREST_CHUNK = 1 << 22
NEAREST_CHUNK_GPU = 1 << 25

# --------------------------------------------------------------------------- dithering
#: Pixels of one band of rows that a dither holds in float at once (the image is streamed by
#: bands, so a 100 MP image costs little more than its labels).
DITHER_BAND = 1 << 21




# --------------------------------------------------------------------------- device choices


@dataclass(frozen=True)
class DeviceChoices:
    """Every choice of the package that depends on the device, taken in one place.

    Attributes:
        kind: ``"cpu"`` or ``"gpu"`` (any other device: CUDA, MPS, ... where a host sync and an
            atomic-heavy op cost more than extra arithmetic).
        scatter_bins: per-bin sums by ``scatter_add_`` into a preallocated table (no host sync)
            rather than ``bincount`` (which syncs to size its output off the CPU).
        single_pass_argmin: nearest colour by one ``min(1)`` (value and index in one pass)
            rather than ``amin`` plus an equality mask (several times faster on the CPU).
        sync_free_kmeans: Lloyd steps without host syncs (one-hot ``bmm`` means, empty clusters
            re-seeded unconditionally, convergence checked every ``kmeans_check_every`` steps).
        chunk_pixels: bin and count one large image in cache-sized chunks of pixels.
        bin_group: pixels (and dense bins) of a group of images binned at once.
        nearest_chunk: pixel-colour distances alive at once in a nearest-colour search.
        kmeans_check_every: Lloyd steps between host-side "all converged?" checks.
        auto_labels: what ``assign="auto"`` labels through tables (:func:`auto_labels`).
    """

    kind: str
    scatter_bins: bool
    single_pass_argmin: bool
    sync_free_kmeans: bool
    chunk_pixels: bool
    bin_group: int
    nearest_chunk: int
    kmeans_check_every: int
    auto_labels: str


_FORCED: contextvars.ContextVar[str | None] = contextvars.ContextVar("torchpalette_device",
                                                                    default=None)


def device_choices(x: Tensor | torch.device) -> DeviceChoices:
    """The :class:`DeviceChoices` for ``x``'s device (or the one :func:`force` names). Built
    on each call from the module's budgets, so monkeypatched budgets take effect."""
    kind = _FORCED.get() or (x.device if isinstance(x, Tensor) else x).type
    if kind == "cpu":
        return DeviceChoices("cpu", False, False, False, True, BIN_GROUP, NEAREST_CHUNK, 1,
                             "table")
    return DeviceChoices("gpu", True, True, True, False, BIN_GROUP_GPU, NEAREST_CHUNK_GPU,
                         KMEANS_CHECK_EVERY, "bins")


@contextlib.contextmanager
def force(kind: str) -> Iterator[None]:
    """Tests only: take the choices of ``kind`` (``"cpu"``, or ``"cuda"`` for the GPU ones)
    for every tensor inside the block, so the CUDA code paths run on CPU tensors."""
    if kind not in ("cpu", "cuda"):
        raise ValueError(f"kind: expected 'cpu' or 'cuda', got {kind!r}")
    token = _FORCED.set(kind)
    try:
        yield
    finally:
        _FORCED.reset(token)


def bin_group(x: Tensor) -> int:
    """Pixels handled per group of images on ``x``'s device."""
    return device_choices(x).bin_group


def nearest_chunk(x: Tensor) -> int:
    """Pixel-colour distances alive at once on ``x``'s device."""
    return device_choices(x).nearest_chunk


# --------------------------------------------------------------------------- compiled ΔE
# Compiling costs tens of seconds: on the CPU once per machine (the package stays on disk), on
# GPUs once per process (less from inductor's cache). So it is never done for small inputs,
# and by default only after the process has already spent about that much time in large eager
# calls (a "ski-rental" rule: at most about twice the best cost in hindsight).


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


@functools.cache
def aot_kernel(fn: Callable) -> AotKernel:
    """The one :class:`AotKernel` of ``fn`` in this process (its loaded packages are shared)."""
    return AotKernel(fn)


class _Kernel:
    """A forward-only kernel ``fn(x1 [3, N], x2, kL, kC, kH)`` compiled for the device it is
    called on: on the CPU from an AOTInductor package kept on disk (a new process loads it in
    milliseconds; ``torch.compile`` re-traces for seconds per process), elsewhere by
    ``torch.compile``."""

    def __init__(self, fn: Callable) -> None:
        self.fn = fn
        self.jit: Callable | None = None

    def __call__(self, x1: Tensor, x2: Tensor, *scalars: float) -> Tensor:
        if device_choices(x1).kind == "cpu":
            aot = aot_kernel(self.fn)
            if not aot.is_built(x1.dtype):
                _quiet_cpp_extension_import()
            return aot(x1, x2, *scalars)
        if self.jit is None:
            self.jit = torch_compile(self.fn)
        return self.jit(x1, x2, *scalars)


def compile_kernel(fn: Callable) -> Callable:
    """The default compiler of :class:`CompilePolicy` (see :class:`_Kernel`)."""
    return _Kernel(fn)


class CompilePolicy:
    """Decides, call by call, whether a kernel runs compiled, and holds the compiled kernel.

    Args:
        min_pairs: calls with fewer pairs never compile or run compiled unless forced.
        auto_compile_pairs: pairs computed eagerly in large calls after which ``fast=None``
            compiles: about what eager computes in the time a cold compile takes.
        compiler: turns ``fn`` into the compiled kernel (tests replace it).
    """

    def __init__(self, min_pairs: int, auto_compile_pairs: int,
                 compiler: Callable[[Callable], Callable] = compile_kernel) -> None:
        self.min_pairs = min_pairs
        self.auto_compile_pairs = auto_compile_pairs
        self.compiler = compiler
        self.eager_pairs_seen = 0  # pairs of large no-grad calls computed eagerly
        self.failed = False  # compiling failed once (no C++ compiler, ...): eager from then on
        self.kernel: Callable | None = None

    def prebuilt(self, fn: Callable, device: torch.device, dtype: torch.dtype) -> bool:
        """Whether ``fn`` runs compiled on ``device`` without compiling first: a CPU package
        that an earlier process left on disk (default compiler only)."""
        return (device_choices(device).kind == "cpu" and self.compiler is compile_kernel
                and aot_kernel(fn).is_built(dtype))

    def use_compiled(self, fast: bool | None, device: torch.device, shape, needs_grad: bool,
                     prebuilt: Callable[[], bool] = lambda: False):
        """Whether this call runs compiled (``fast`` as in ``delta_e``; ``shape`` the broadcast
        ``[..., 3]`` shape; ``prebuilt()`` whether it would run without compiling). Raises
        ``ValueError`` where ``fast=True`` cannot be honoured."""
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
        if device_choices(device).kind == "cpu" and torch.get_num_threads() == 1:
            return False  # one thread: the in-place eager kernel is as fast (RESULTS.md)
        pairs = math.prod(shape[:-1])
        if pairs < self.min_pairs:
            return False
        if self.kernel is not None or prebuilt():  # compiled already: free to use
            return True
        self.eager_pairs_seen += pairs
        return self.eager_pairs_seen >= self.auto_compile_pairs

    def compiled(self, fn: Callable) -> Callable:
        """The compiled ``fn``, created on first use (it compiles on its first call)."""
        if self.kernel is None:
            self.kernel = self.compiler(fn)
        return self.kernel


# Eager in-place CIEDE2000 computes ~20M pairs/s on 2 cores; building the CPU package takes
# ~30-45 s of CPU (a quiet machine's GPU compile: ~7 s).
CIEDE2000 = CompilePolicy(min_pairs=1 << 20, auto_compile_pairs=800_000_000)
"""The policy of ``delta_e``'s compiled CIEDE2000 kernel (``fast=``)."""


# --------------------------------------------------------------------------- assignment


def auto_labels(device: torch.device) -> str:
    """What ``assign="auto"`` labels through tables on ``device`` (see ``quantize``): the exact
    colours' table only on the CPU, where the exact search is cheap next to the palette; the
    coarse bins' table too on other devices, where it saves most of the work."""
    return device_choices(device).auto_labels
