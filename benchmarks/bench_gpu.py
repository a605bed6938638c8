"""Batched reduce_colors on a GPU (issue 6): images/s, peak memory and quality at dataset scale.

uint8 photo crops ``[B, 3, 256, 256]`` (random 256x256 crops and flips of the bundled astronaut
and scikit-image's coffee, chelsea and rocket) reduced to 16 colours, for B in 64, 256, 1024:

* ``tp bins``   ``tp.reduce_colors(x, 16)``: on CUDA the default ``assign="auto"`` = look-up
  table bin -> colour (5-bit histogram bins clustered as weighted points, one batched k-means);
* ``tp exact``  ``tp.reduce_colors(x, 16, assign="exact")``: the same palettes, exact nearest
  colour in Lab for every pixel;
* ``tp loop``   a per-image loop of ``tp.reduce_colors`` (timed on a few images);
* ``naive``     a plain per-image torch k-means in Lab: ``cdist`` + ``argmin``, 20 iterations;
* ``fpk multi`` fast-pytorch-kmeans ``MultiKMeans`` (batched, Lab pixels, 20 iterations) when
  importable; the wheel in ``benchmarks/wheels/`` is put on ``sys.path`` if it is not installed.

Images/s from CUDA events after a warm-up; the lower bound from bytes moved (read the uint8
input, write the uint8 output) at the copy bandwidth measured here; peak memory
(the input plus the peak ``torch.cuda.max_memory_allocated`` growth during the call, output
included) as a multiple of the uint8 input.
Quality: mean CIEDE2000 between each image and its reduced image on the first 32 images,
averaged over 3 seeds, next to a full-pixel Lab k-means (``tp.palette(method="exact")``,
k-means++ and Lloyd to tol 1e-4 on every pixel, exact assignment). Targets: >= 50,000 img/s at
B=1024, mean dE00 within +0.1 of the full-pixel k-means, >= 100x the per-image loop, peak
memory <= 8x the input.

CPU figures for B=8 follow (and are all that runs without CUDA). ``--quick``: small batches,
one seed, to check the script runs. The GPU part takes well under 90 s on an H100/H200.

Usage: python benchmarks/bench_gpu.py [--quick] [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

import torchpalette as tp
from _common import report_machine  # noqa: E402  (benchmarks/ is on sys.path)

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "torchpalette" / "data" / "astronaut.jpg"
K = 16
SIZE = 256


def photo_crops(n: int, seed: int = 0) -> torch.Tensor:
    """``[n, 3, 256, 256]`` uint8 random crops (and flips) of four photos."""
    from skimage import data

    photos = [tp.read_image(SAMPLE)[:3]]
    photos += [torch.from_numpy(getattr(data, name)()).permute(2, 0, 1).contiguous()
               for name in ("coffee", "chelsea", "rocket")]
    g = torch.Generator().manual_seed(seed)
    out = torch.empty(n, 3, SIZE, SIZE, dtype=torch.uint8)
    for i in range(n):
        p = photos[i % len(photos)]
        y = int(torch.randint(0, p.shape[1] - SIZE + 1, (1,), generator=g))
        x = int(torch.randint(0, p.shape[2] - SIZE + 1, (1,), generator=g))
        crop = p[:, y : y + SIZE, x : x + SIZE]
        out[i] = crop.flip(-1) if (i // len(photos)) % 2 else crop
    return out


class Clock:
    """Seconds per call: CUDA events on a GPU (after a warm-up), perf_counter on CPU."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"

    def __call__(self, fn, repeats: int) -> float:
        fn()  # warm-up
        times = []
        for _ in range(repeats):
            if self.cuda:
                a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                a.record()
                fn()
                b.record()
                torch.cuda.synchronize()
                times.append(a.elapsed_time(b) / 1e3)
            else:
                t = time.perf_counter()
                fn()
                times.append(time.perf_counter() - t)
        return statistics.median(times)


def peak_memory(fn, device: torch.device, in_bytes: int) -> float:
    """Input bytes plus the peak of what ``fn()`` allocates on top of what was allocated
    before (output included) (CUDA), else NaN."""
    if device.type != "cuda":
        return float("nan")
    torch.cuda.synchronize()
    before = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    out = fn()
    torch.cuda.synchronize()
    del out
    return float(torch.cuda.max_memory_allocated() - before + in_bytes)


def copy_bandwidth(device: torch.device) -> float:
    """Bytes/s of a large device copy (read + write counted)."""
    n = 1 << 30 if device.type == "cuda" else 1 << 26
    x = torch.empty(n, dtype=torch.uint8, device=device)
    y = torch.empty_like(x)
    t = Clock(device)(lambda: y.copy_(x), 5)
    return 2 * n / t


def naive_kmeans_reduce(img: torch.Tensor, k: int = K, iters: int = 20, seed: int = 0):
    """The textbook per-image torch k-means in Lab: cdist + argmin, random init, 20 steps."""
    px = tp.srgb_to_lab(img.flatten(1).T.float() / 255)  # [N, 3]
    g = torch.Generator(device=img.device).manual_seed(seed)
    c = px[torch.randperm(px.shape[0], generator=g, device=img.device)[:k]]
    for _ in range(iters):
        lab = torch.cdist(px, c).argmin(1)
        s = torch.zeros_like(c).index_add_(0, lab, px)
        n = torch.bincount(lab, minlength=k).clamp_min(1).unsqueeze(1)
        c = s / n
    lab = torch.cdist(px, c).argmin(1)
    rgb = (tp.lab_to_srgb(c) * 255).round().to(torch.uint8)
    return rgb[lab].T.reshape(img.shape)


def load_fpk():
    """fast_pytorch_kmeans if installed (the ``bench`` extra; carried as a wheel to a GPU
    machine without network), else None."""
    try:
        import fast_pytorch_kmeans as fpk
    except Exception as err:  # noqa: BLE001
        print(f"note: fast-pytorch-kmeans not importable ({err}); that peer is skipped")
        return None
    return fpk


def fpk_reduce(fpk, x: torch.Tensor, k: int = K, iters: int = 20) -> torch.Tensor:
    """fast-pytorch-kmeans MultiKMeans on the Lab pixels of a batch ``[B, 3, H, W]``."""
    b = x.shape[0]
    px = tp.srgb_to_lab(x.flatten(2).transpose(1, 2).float() / 255)  # [B, N, 3]
    km = fpk.MultiKMeans(n_clusters=k, max_iter=iters, tol=-1.0, verbose=0, mode="euclidean")
    labels = km.fit_predict(px)  # [B, N]
    rgb = (tp.lab_to_srgb(km.centroids) * 255).round().to(torch.uint8)  # [B, k, 3]
    out = rgb.gather(1, labels.unsqueeze(-1).expand(-1, -1, 3))
    return out.transpose(1, 2).reshape(b, 3, *x.shape[-2:])


def mean_de(x: torch.Tensor, y: torch.Tensor) -> float:
    """Mean CIEDE2000 between uint8 batches ``[B, 3, H, W]`` (on their device)."""
    a = x.flatten(2).transpose(1, 2).float() / 255
    b = y.flatten(2).transpose(1, 2).float() / 255
    return float(tp.delta_e(a, b, method="ciede2000").mean())


def quality(x: torch.Tensor, seeds: list[int]) -> dict[str, float]:
    """Mean dE00 of each method on ``x`` averaged over ``seeds``."""
    rows = {"full-pixel k-means": [], "tp bins": [], "tp exact": []}
    for s in seeds:
        ref = tp.apply_palette(x, tp.palette(x, K, method="exact", seed=s, tol=1e-4).colors)
        rows["full-pixel k-means"].append(mean_de(x, ref))
        rows["tp bins"].append(mean_de(x, tp.reduce_colors(x, K, seed=s, assign="bins")))
        rows["tp exact"].append(mean_de(x, tp.reduce_colors(x, K, seed=s, assign="exact")))
    return {k: statistics.mean(v) for k, v in rows.items()}


def run(device: torch.device, batches: list[int], seeds: list[int], quick: bool) -> None:
    clock = Clock(device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    bw = copy_bandwidth(device)
    print(f"\n== {name}: reduce_colors of uint8 [B, 3, {SIZE}, {SIZE}] to {K} colours; "
          f"copy bandwidth {bw / 1e9:.0f} GB/s")
    data = photo_crops(max(batches)).to(device)
    fpk = load_fpk() if device.type == "cuda" else None
    if device.type == "cuda" and fpk is None:
        print("note: fast-pytorch-kmeans unavailable; its row is skipped")
    n_loop = 4 if quick else (16 if device.type == "cuda" else 4)
    t_loop = clock(lambda: [tp.reduce_colors(data[i], K) for i in range(n_loop)], 1) / n_loop
    n_naive = 2 if quick else 8
    t_naive = clock(lambda: [naive_kmeans_reduce(data[i]) for i in range(n_naive)], 1) / n_naive
    print(f"per-image loop of tp.reduce_colors: {1 / t_loop:10.1f} img/s   "
          f"naive torch k-means (cdist+argmin, 20 it) per image: {1 / t_naive:8.1f} img/s")
    print(f"{'B':>5} {'method':<10} {'img/s':>10} {'x loop':>8} {'bound img/s':>12} "
          f"{'peak/input':>10}")
    for b in batches:
        x = data[:b]
        in_bytes = x.numel()
        bound = bw / (2 * in_bytes / b)  # read input + write output per image
        rows = [("tp bins", lambda: tp.reduce_colors(x, K)),
                ("tp exact", lambda: tp.reduce_colors(x, K, assign="exact"))]
        if fpk is not None:
            rows.append(("fpk multi", lambda: fpk_reduce(fpk, x)))
        for label, fn in rows:
            repeats = 3 if quick else (10 if b <= 256 else 5)
            t = clock(fn, repeats)
            peak = peak_memory(fn, device, in_bytes)
            print(f"{b:>5} {label:<10} {b / t:10.1f} {(b / t) * t_loop:8.1f} {bound:12.0f} "
                  f"{peak / in_bytes:10.1f}", flush=True)
    nq = 8 if quick or device.type == "cpu" else 32
    q = quality(data[:nq], seeds)
    ref = q["full-pixel k-means"]
    print(f"quality on {nq} images, {len(seeds)} seed(s): mean dE00 (vs full-pixel Lab k-means)")
    for label, de in q.items():
        print(f"  {label:<20} {de:7.3f} ({de - ref:+.3f})")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small batches, one seed: a smoke run")
    ap.add_argument("--device", choices=["cpu", "cuda"], default=None,
                    help="only this device (default: CUDA when available, then CPU)")
    args = ap.parse_args()
    report_machine()
    seeds = [0] if args.quick else [0, 1, 2]
    want_cuda = args.device in (None, "cuda")
    if want_cuda and torch.cuda.is_available():
        run(torch.device("cuda"), [8, 64] if args.quick else [64, 256, 1024], seeds, args.quick)
    elif args.device == "cuda":
        print("CUDA not available")
        return 1
    elif args.device is None:
        print("no CUDA here: the GPU part is skipped (it runs as is where CUDA is available)")
    if args.device in (None, "cpu"):
        run(torch.device("cpu"), [8], seeds, args.quick)
    return 0


if __name__ == "__main__":
    sys.exit(main())
