"""Run-time policy: how much work is done at once, and on how many threads.

Every chunk budget and size threshold of the package lives here, so that the trade-offs between
memory, cache and launch counts can be read (and tuned, and monkeypatched by the tests) in one
place. Modules read them as ``_policy.NAME`` at call time, never copy them at import time. The
figures behind each choice are in ``benchmarks/RESULTS.md``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import Tensor

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
    old = torch.get_num_threads()
    if x.device.type != "cpu" or old <= 1 or work >= limit:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(old)


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


def bin_group(x: Tensor) -> int:
    """Pixels handled per group of images on ``x``'s device."""
    return BIN_GROUP if x.device.type == "cpu" else BIN_GROUP_GPU


def nearest_chunk(x: Tensor) -> int:
    """Pixel-colour distances alive at once on ``x``'s device."""
    return NEAREST_CHUNK if x.device.type == "cpu" else NEAREST_CHUNK_GPU
