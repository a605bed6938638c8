"""dominant_colors(top_n=32, bins=16) side by side with NumPy and Pillow (issue 5).

CPU: one >= 12-megapixel photo (the bundled sample upscaled to 3584 x 3584; `--quick`:
1024 x 1024). Peers, timed in the same run:
  - numpy-mean: the NumPy bincount implementation (bin index, counts, float64 weighted
    bincounts for the sums, stable argsort) -- the same result as torchpalette, exactly;
  - numpy-counts: the same without the sums (counts only, bin colours = bin lower edges);
  - pillow: ``ImageOps.posterize(img, 4).getcolors()`` (16 levels per channel), then the
    32 largest; colours are the bins' lower edges.
Quality: max difference (8-bit levels) of the 32 colours from torchpalette's, same order.

GPU (when CUDA is available): a batch of 256 1-megapixel images (`--quick`: 16). Checks first
that the GPU result equals the CPU one (and Triton == plain torch), then images/s and peak
extra memory for counts only and for dominant_colors (counts and mean-of-bin colours), each
with the plain-torch path and the Triton kernels (when Triton is installed). About 10 timed
repeats each; well under 90 s.

Usage: python benchmarks/bench_dominant.py [--quick]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps

import torchpalette as tp
from _common import report_machine  # noqa: E402  (benchmarks/ is on sys.path)

SAMPLE = Path(tp.__file__).parent / "data" / "astronaut.jpg"
TOP_N, BINS = 32, 16


def timeit(fn, repeat: int) -> float:
    fn()  # warm-up
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def numpy_dominant(u8: np.ndarray, with_means: bool = True):
    """NumPy bincount reference: ``[3, H, W]`` uint8 -> (colours [k, 3] in 0..255, counts)."""
    px = u8.reshape(3, -1)
    b = px.astype(np.int64) * BINS // 256
    idx = (b[0] * BINS + b[1]) * BINS + b[2]
    counts = np.bincount(idx, minlength=BINS**3)
    order = np.argsort(-counts, kind="stable")[:TOP_N]
    order = order[counts[order] > 0]
    if with_means:
        sums = np.stack([np.bincount(idx, weights=px[c], minlength=BINS**3) for c in range(3)], -1)
        colors = sums[order] / counts[order][:, None]
    else:
        colors = np.stack([order // BINS**2, order // BINS % BINS, order % BINS], -1) * (256 // BINS)
    return colors, counts[order]


def pillow_dominant(pil: Image.Image):
    got = ImageOps.posterize(pil, 4).getcolors(maxcolors=BINS**3)
    got.sort(key=lambda c: (-c[0], c[1]))
    return np.array([c[1] for c in got[:TOP_N]], dtype=np.float64), [c[0] for c in got[:TOP_N]]


def cpu_part(quick: bool) -> None:
    side = 1024 if quick else 3584
    base = tp.read_image(SAMPLE)[:3].float()[None]
    img = F.interpolate(base, size=(side, side), mode="bilinear", align_corners=False)
    u8 = img.round().clamp(0, 255).to(torch.uint8)[0].contiguous()
    arr = u8.numpy()
    pil = Image.fromarray(arr.transpose(1, 2, 0).copy())
    repeat = 2 if quick else 5
    print(f"CPU: {side}x{side} = {side * side / 1e6:.1f} MP, top_n={TOP_N}, bins={BINS}, "
          f"torch threads {torch.get_num_threads()}")

    ours = tp.dominant_colors(u8, TOP_N, bins=BINS)
    ours_255 = ours.colors.double().numpy() * 255
    rows = [("torchpalette.dominant_colors", timeit(lambda: tp.dominant_colors(u8, TOP_N, bins=BINS),
                                                     repeat), 0.0)]
    for name, fn in [
        ("numpy bincount (mean-of-bin)", lambda: numpy_dominant(arr, True)),
        ("numpy bincount (counts only)", lambda: numpy_dominant(arr, False)),
        ("pillow posterize+getcolors", lambda: pillow_dominant(pil)),
    ]:
        colors, _ = fn()
        n = min(len(colors), len(ours_255))
        err = float(np.abs(colors[:n] - ours_255[:n]).max())
        rows.append((name, timeit(fn, repeat), err))
    ref = rows[0][1]
    print(f"{'method':32s} {'ms':>9s} {'x vs ours':>10s} {'max |colour diff| (levels)':>28s}")
    for name, sec, err in rows:
        print(f"{name:32s} {sec * 1e3:9.1f} {sec / ref:10.2f} {err:28.2f}")
    print("  (x vs ours > 1: the peer is slower; bin-edge colours differ by up to a bin width)")


def gpu_part(quick: bool) -> None:
    dev = torch.device("cuda")
    batch = 16 if quick else 256
    side = 1024
    base = tp.read_image(SAMPLE)[:3].float()[None].to(dev)
    one = F.interpolate(base, size=(side, side), mode="bilinear", align_corners=False)
    g = torch.Generator(device=dev).manual_seed(0)
    # distinct images: the photo, brightness-shifted per batch element and rolled
    shift = torch.randint(-40, 40, (batch, 1, 1, 1), generator=g, device=dev).float()
    images = (one.expand(batch, -1, -1, -1) + shift).round().clamp(0, 255).to(torch.uint8)
    images = torch.roll(images, shifts=(123, 77), dims=(-2, -1)).contiguous()
    del one, base
    from torchpalette import _bins_top, _bins_triton
    from torchpalette.histogram import _dominant

    tri_ok = _bins_triton.supported(dev, BINS, TOP_N)
    print(f"GPU: {torch.cuda.get_device_name(dev)}, torch {torch.__version__}, batch {batch} x "
          f"{side}x{side} uint8, Triton kernels {'available' if tri_ok else 'NOT available'}")

    def counts_plain():
        q = images.view(batch, 3, -1)
        return _bins_top._bin_counts(_bins_top._flat_index(q, None, BINS), batch, BINS)

    def counts_triton():
        return _bins_triton.bin_counts(images.view(batch, 3, -1), None, BINS)

    def mean_plain():
        return _dominant(images, TOP_N, BINS, use_triton=False)

    def mean_triton():
        return _dominant(images, TOP_N, BINS, use_triton=True)

    # correctness first: GPU (both paths) == CPU for a few images
    ref = mean_plain()
    for i in (0, batch // 2, batch - 1):
        cpu = tp.dominant_colors(images[i].cpu(), TOP_N, bins=BINS)
        k = cpu.colors.shape[0]
        ok = torch.equal(ref.colors[i, :k].cpu(), cpu.colors) and torch.equal(
            ref.weights[i, :k].cpu(), cpu.weights)
        print(f"  plain-torch GPU == CPU for image {i}: {ok}")
    methods = [("plain torch: counts only", counts_plain),
               ("plain torch: dominant_colors (mean)", mean_plain)]
    if tri_ok:
        tri = mean_triton()
        same = torch.equal(tri.colors, ref.colors) and torch.equal(tri.weights, ref.weights)
        same = same and torch.equal(counts_triton(), counts_plain())
        print(f"  Triton == plain torch (counts and colours, whole batch): {same}")
        methods += [("triton: counts only", counts_triton),
                    ("triton: dominant_colors (mean)", mean_triton)]
    repeat = 3 if quick else 10
    print(f"{'method':38s} {'ms/batch':>9s} {'img/s':>10s} {'peak MiB':>9s}")
    for name, fn in methods:
        fn()
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats(dev)
        before = torch.cuda.memory_allocated(dev)
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        best = float("inf")
        for _ in range(repeat):
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize()
            best = min(best, start.elapsed_time(end))
        peak = (torch.cuda.max_memory_allocated(dev) - before) / 2**20
        print(f"{name:38s} {best:9.2f} {batch / best * 1e3:10.0f} {peak:9.0f}")
    print("  target: >= 10,000 img/s with mean-of-bin colours; peak = extra memory over the "
          "input batch")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small sizes, to check the script runs")
    ap.add_argument("--no-gpu", action="store_true", help="skip the GPU part")
    ap.add_argument("--gpu-only", action="store_true", help="skip the CPU part")
    args = ap.parse_args()
    report_machine()
    if not args.gpu_only:
        cpu_part(args.quick)
    if torch.cuda.is_available() and not args.no_gpu:
        gpu_part(args.quick)
    else:
        print("GPU part skipped (no CUDA)")


if __name__ == "__main__":
    main()
