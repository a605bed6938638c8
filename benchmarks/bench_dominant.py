"""dominant_colors(top_n=32, bins=16) side by side with NumPy and Pillow (issue 5).

CPU: one >= 12-megapixel photo (the bundled sample upscaled to 3584 x 3584; `--quick`:
1024 x 1024). Peers, timed in the same run:
  - numpy-mean: the NumPy bincount implementation (bin index, counts, float64 weighted
    bincounts for the sums, stable argsort) -- the same result as torchpalette, exactly;
  - numpy-counts: the same without the sums (counts only, bin colours = bin lower edges);
  - pillow: ``ImageOps.posterize(img, 4).getcolors()`` (16 levels per channel), then the
    32 largest; colours are the bins' lower edges.
Quality: max difference (8-bit levels) of the 32 colours from torchpalette's, same order.

GPU (when CUDA is available): a batch of 256 1-megapixel images (`--quick`: 16), images/s
for counts only (``torch.bincount`` on a batch-offset index) and for dominant_colors (counts
and mean-of-bin colours). Keep it short: about 10 timed repeats each.

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

SAMPLE = Path(tp.__file__).parent / "data" / "astronaut.jpg"
TOP_N, BINS = 32, 16


def cpu_busy(seconds: float = 0.5) -> float:
    """Fraction of CPU time not idle over ``seconds``, from /proc/stat (0 if unavailable)."""
    def snap():
        with open("/proc/stat") as f:
            vals = [int(x) for x in f.readline().split()[1:]]
        return sum(vals), vals[3] + vals[4]  # total, idle + iowait
    try:
        t0, i0 = snap()
        time.sleep(seconds)
        t1, i1 = snap()
    except OSError:
        return 0.0
    return 1.0 - (i1 - i0) / max(t1 - t0, 1)


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
    # distinct images: the photo, flipped/rolled and brightness-shifted per batch element
    shift = torch.randint(-40, 40, (batch, 1, 1, 1), generator=g, device=dev).float()
    images = (one.expand(batch, -1, -1, -1) + shift).round().clamp(0, 255).to(torch.uint8)
    images = torch.roll(images, shifts=(123, 77), dims=(-2, -1)).contiguous()
    print(f"GPU: {torch.cuda.get_device_name(dev)}, batch {batch} x {side}x{side} uint8")

    def counts_only():
        b = (images.to(torch.int32) * BINS) >> 8
        idx = (b[:, 0] * BINS + b[:, 1]) * BINS + b[:, 2]
        idx = idx.view(batch, -1) + torch.arange(batch, device=dev, dtype=torch.int32)[:, None] * BINS**3
        return torch.bincount(idx.flatten(), minlength=batch * BINS**3)

    def ours():
        return tp.dominant_colors(images, TOP_N, bins=BINS)

    # correctness spot check: the batched GPU result equals the CPU result of one image
    gpu = ours()
    cpu = tp.dominant_colors(images[1].cpu(), TOP_N, bins=BINS)
    k = cpu.colors.shape[0]
    ok = torch.allclose(gpu.colors[1, :k].cpu(), cpu.colors, atol=1e-6)
    print(f"  GPU result == CPU result for image 1: {ok}")
    repeat = 3 if quick else 10
    print(f"{'method':36s} {'ms/batch':>9s} {'img/s':>10s}")
    for name, fn in [("torch.bincount (counts only)", counts_only),
                     ("torchpalette.dominant_colors (mean)", ours)]:
        fn()
        torch.cuda.synchronize()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        best = float("inf")
        for _ in range(repeat):
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize()
            best = min(best, start.elapsed_time(end))
        print(f"{name:36s} {best:9.2f} {batch / best * 1e3:10.0f}")
    print("  target: >= 10,000 img/s with mean-of-bin colours")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small sizes, to check the script runs")
    ap.add_argument("--no-gpu", action="store_true", help="skip the GPU part")
    args = ap.parse_args()
    busy = cpu_busy()
    print(f"CPU busy before timing: {busy:.0%}")
    if busy > 0.15:
        print("WARNING: the machine is busy; CPU timings are not reliable")
    cpu_part(args.quick)
    if torch.cuda.is_available() and not args.no_gpu:
        gpu_part(args.quick)
    else:
        print("GPU part skipped (no CUDA)")


if __name__ == "__main__":
    main()
