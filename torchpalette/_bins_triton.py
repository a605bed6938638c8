"""Triton kernels for :func:`torchpalette.dominant_colors` on CUDA (optional).

Plain ``bincount``/``index_add_`` on a GPU serialise on atomics: neighbouring pixels mostly fall
into the same few colour bins, so thousands of threads add to the same addresses. Here each
program takes a run of pixels of ONE image and counts them with ``tl.histogram``, which builds a
private histogram in on-chip shared memory per block of pixels; the program keeps the running
total in registers and flushes it with one atomic add per non-empty bin at the end.

Two kernels, the same two passes as the torch path in ``histogram.py``:

- ``_count_kernel``: pixel counts of all ``bins**3`` colour bins (``bins**3 <= 4096``);
- ``_sum_kernel``: for the ``top_n`` winners, a table maps each bin to a slot, and three
  histograms over ``slot * width + offset`` (one per channel, offset = level minus the bin's
  lower edge) give exact integer offset sums.

Only power-of-two ``bins`` up to 16 and ``(top_n + 1) * width <= 4096`` are handled here
(:func:`supported`); everything else uses the torch path, which is also what CI tests. The
kernels run on CPU tensors under ``TRITON_INTERPRET=1`` for testing.
"""

from __future__ import annotations

import os

import torch
from torch import Tensor

try:  # optional: only used on CUDA
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - depends on the installation
    triton = None

__all__ = ["supported", "bin_counts", "slot_sums"]

_BLOCK = 4096  # pixels per histogram call
_MAX_TABLE = 4096  # histogram bins held in registers per program


def _interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def supported(device: torch.device, bins: int, k: int) -> bool:
    """Whether the kernels handle this case (CUDA, or the interpreter, and small tables)."""
    if triton is None or not (device.type == "cuda" or _interpreting()):
        return False
    if bins & (bins - 1) or bins**3 > _MAX_TABLE:
        return False
    return _pow2(k + 1) * (256 // bins) <= _MAX_TABLE


def _pow2(n: int) -> int:
    return 1 << max(0, (n - 1).bit_length())


def _grid(n_pix: int, n_img: int) -> tuple[tuple[int], int, int]:
    """(grid, programs per image, pixels per program): enough programs to fill a GPU, each a
    few blocks long. Images are folded into the grid's x dimension (up to 2**31 - 1): y and z
    stop at 65,535, fewer images than one batch of small crops may hold."""
    blocks = -(-n_pix // _BLOCK)
    per = max(1, min(64, -(-blocks // 16)))  # blocks per program
    progs = -(-blocks // per)
    if progs * n_img >= 1 << 31:
        raise ValueError(f"q: expected fewer than 2**31 programs, got {progs} x {n_img} images")
    return (progs * n_img,), progs, per * _BLOCK


if triton is not None:

    @triton.jit
    def _load_keys(q_ptr, a_ptr, img, offs, n_pix, HAS_ALPHA: tl.constexpr,
                   SHIFT: tl.constexpr, BITS: tl.constexpr):
        """Levels of one block of pixels -> (r, g, b int32, bin key, valid mask)."""
        valid = offs < n_pix
        base = q_ptr + img * 3 * n_pix
        r = tl.load(base + offs, mask=valid, other=0).to(tl.int32)
        g = tl.load(base + n_pix + offs, mask=valid, other=0).to(tl.int32)
        b = tl.load(base + 2 * n_pix + offs, mask=valid, other=0).to(tl.int32)
        if HAS_ALPHA:
            a = tl.load(a_ptr + img * n_pix + offs, mask=valid, other=0)
            valid = valid & (a != 0)
        key = ((r >> SHIFT) << (2 * BITS)) | ((g >> SHIFT) << BITS) | (b >> SHIFT)
        return r, g, b, key, valid

    @triton.jit
    def _count_kernel(q_ptr, a_ptr, out_ptr, n_pix, per_prog, progs, HAS_ALPHA: tl.constexpr,
                      SHIFT: tl.constexpr, BITS: tl.constexpr, NB: tl.constexpr,
                      BLOCK: tl.constexpr):
        pid = tl.program_id(0).to(tl.int64)
        img = pid // progs
        start = (pid % progs) * per_prog
        acc = tl.zeros([NB], dtype=tl.int32)
        for s in range(0, per_prog, BLOCK):
            offs = start + s + tl.arange(0, BLOCK)
            r, g, b, key, valid = _load_keys(q_ptr, a_ptr, img, offs, n_pix, HAS_ALPHA,
                                             SHIFT, BITS)
            acc += tl.histogram(key, NB, mask=valid)
        bins = tl.arange(0, NB)
        tl.atomic_add(out_ptr + img * NB + bins, acc, mask=acc > 0)

    @triton.jit
    def _sum_kernel(q_ptr, a_ptr, lut_ptr, out_ptr, n_pix, per_prog, progs,
                    HAS_ALPHA: tl.constexpr, SHIFT: tl.constexpr, BITS: tl.constexpr,
                    NB: tl.constexpr, NT: tl.constexpr, BLOCK: tl.constexpr):
        pid = tl.program_id(0).to(tl.int64)
        img = pid // progs
        start = (pid % progs) * per_prog
        low = (1 << SHIFT) - 1
        acc_r = tl.zeros([NT], dtype=tl.int32)
        acc_g = tl.zeros([NT], dtype=tl.int32)
        acc_b = tl.zeros([NT], dtype=tl.int32)
        for s in range(0, per_prog, BLOCK):
            offs = start + s + tl.arange(0, BLOCK)
            r, g, b, key, valid = _load_keys(q_ptr, a_ptr, img, offs, n_pix, HAS_ALPHA,
                                             SHIFT, BITS)
            slot = tl.load(lut_ptr + img * NB + key, mask=valid, other=0) << SHIFT
            acc_r += tl.histogram(slot | (r & low), NT, mask=valid)
            acc_g += tl.histogram(slot | (g & low), NT, mask=valid)
            acc_b += tl.histogram(slot | (b & low), NT, mask=valid)
        t = tl.arange(0, NT)
        out = out_ptr + img * 3 * NT + t
        tl.atomic_add(out, acc_r, mask=acc_r > 0)
        tl.atomic_add(out + NT, acc_g, mask=acc_g > 0)
        tl.atomic_add(out + 2 * NT, acc_b, mask=acc_b > 0)


def _alpha_arg(q: Tensor, opaque: Tensor | None) -> tuple[Tensor, bool]:
    if opaque is None:
        return q, False  # unused pointer
    return opaque.contiguous().view(torch.uint8), True


def bin_counts(q: Tensor, opaque: Tensor | None, bins: int) -> Tensor:
    """Levels ``[B, 3, N]`` uint8 (contiguous) -> counts ``[B, bins**3]`` int64 (alpha-0 pixels,
    ``opaque`` False, not counted)."""
    n_img, _, n_pix = q.shape
    bits = bins.bit_length() - 1
    nb = bins**3
    out = torch.zeros(n_img, nb, dtype=torch.int32, device=q.device)
    a, has_alpha = _alpha_arg(q, opaque)
    grid, progs, per = _grid(n_pix, n_img)
    _count_kernel[grid](q, a, out, n_pix, per, progs, HAS_ALPHA=has_alpha, SHIFT=8 - bits,
                        BITS=bits, NB=nb, BLOCK=_BLOCK, num_warps=8)
    return out.to(torch.int64)


def slot_sums(q: Tensor, opaque: Tensor | None, slot: Tensor, bins: int, k: int) -> Tensor:
    """Offset sums for the ``k`` chosen bins.

    Args:
        q: levels ``[B, 3, N]`` uint8, contiguous.
        opaque: ``[B, N]`` bool or None.
        slot: ``[B, bins**3]`` int32, each bin's slot ``0..k`` (``k``: not chosen).
        bins: levels per channel (see :func:`supported`).
        k: number of chosen bins.

    Returns:
        ``[B, k, 3]`` int64: per chosen bin, the sums of the pixels' offsets from its lower edge.
    """
    n_img, _, n_pix = q.shape
    bits = bins.bit_length() - 1
    width = 256 // bins
    nt = _pow2(k + 1) * width
    out = torch.zeros(n_img, 3, nt, dtype=torch.int32, device=q.device)
    a, has_alpha = _alpha_arg(q, opaque)
    grid, progs, per = _grid(n_pix, n_img)
    _sum_kernel[grid](q, a, slot.contiguous(), out, n_pix, per, progs, HAS_ALPHA=has_alpha,
                      SHIFT=8 - bits, BITS=bits, NB=bins**3, NT=nt, BLOCK=_BLOCK, num_warps=8)
    hist = out.view(n_img, 3, nt // width, width).to(torch.int64)
    w = torch.arange(width, dtype=torch.int64, device=q.device)
    return (hist * w).sum(-1).transpose(1, 2)[:, :k]
