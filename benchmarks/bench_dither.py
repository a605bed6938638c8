"""Dithering: torchpalette's Floyd–Steinberg and ordered (Knoll pattern) dithers against
Pillow, pngquant and libimagequant, for quality (blur metric) and speed.

Quality: the *blur metric*, the mean CIEDE2000 (``tp.delta_e``) between the original and the
dithered image after a Gaussian blur (sigma = 1 and 2 px) of both, applied in linear light (a
proxy for how a dithered image looks from a normal viewing distance), and the share of
*far-off* pixels (CIEDE2000 > 20 from their source pixel). Images: the photos of
``bench_palette.py`` (each <= 100,000 pixels), a smooth 2-D gradient between four colours, a
saturated hue sweep darkening towards black (``dark-hue``, where a palette cannot reach every
colour), and the two-colour hue gradient with its two ends as palette. k = 4, 16, 64. Rows:

* ``tp-fs`` / ``tp-ordered`` / ``tp-none``: ``tp.palette(img, k)`` and our dithers (or none);
* ``pil-fs``: Pillow ``Image.quantize(palette=..., dither=FLOYDSTEINBERG)``, same palette;
* ``pngquant-fs`` / ``liq-fs``: pngquant and libimagequant (``imagequant``) with their own
  k-colour palettes and full Floyd–Steinberg dithering (where installed).

Speed: batches of 8 images 256x256 and 512x512 at k = 16 (each with its own palette), one
thread: torchpalette in one call (the compiled CPU loop for Floyd–Steinberg where numba is
installed, else the wavefront) vs Pillow FS over the same images one after another; then
torchpalette with the default threads. ``--gpu``: B = 256 images 256x256, k = 16, on CUDA.
The CPU load (busy share and load average) is printed before the timings: on a shared
machine the ratios, not the absolute rates, are the figures to compare.

Usage: ``python benchmarks/bench_dither.py [--quick] [--gpu] [--skip-speed]``.
"""

from __future__ import annotations

import argparse
import colorsys
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import kornia
import numpy as np
import torch
import torch.nn.functional as F
from _common import (  # noqa: E402  (benchmarks/ is on sys.path)
    median_seconds,
    report_machine,
    warn_if_busy,
)
from bench_palette import load_photos  # noqa: E402

import torchpalette as tp
from torchpalette._dither import dither_labels


def blur_metric(orig: torch.Tensor, out: torch.Tensor, sigma: float) -> float:
    """Mean CIEDE2000 after a Gaussian blur in linear light; ``[3, H, W]`` uint8 images."""
    ks = 2 * int(np.ceil(3 * sigma)) + 1

    def blur(x):
        lin = kornia.color.rgb_to_linear_rgb(x[None].double() / 255)
        b = kornia.filters.gaussian_blur2d(lin, (ks, ks), (sigma, sigma), border_type="reflect")
        return kornia.color.linear_rgb_to_rgb(b.clamp(0, 1)).clamp(0, 1)[0].movedim(0, -1)

    return float(tp.delta_e(blur(orig), blur(out), fast=False).mean())


def gradient_2d(h: int = 256, w: int = 384) -> torch.Tensor:
    """Smooth bilinear gradient between four colours, ``[3, H, W]`` uint8."""
    c = torch.tensor([[217, 61, 54], [0, 138, 169], [240, 220, 60], [40, 40, 120]]) / 255
    yy, xx = torch.meshgrid(torch.linspace(0, 1, h), torch.linspace(0, 1, w), indexing="ij")
    top = c[0, :, None, None] * (1 - xx) + c[1, :, None, None] * xx
    bot = c[2, :, None, None] * (1 - xx) + c[3, :, None, None] * xx
    return ((top * (1 - yy) + bot * yy) * 255).round().to(torch.uint8)


def dark_hue(h: int = 96, w: int = 256) -> torch.Tensor:
    """Saturated hue sweep (x) darkening towards black (y), ``[3, H, W]`` uint8."""
    rgb = torch.tensor([colorsys.hsv_to_rgb(float(u), 1.0, 1.0) for u in torch.linspace(0, 1, w)])
    img = rgb.T[:, None, :] * torch.linspace(1, 0.05, h)[None, :, None]
    return (img * 255).round().to(torch.uint8)


def far_off(orig: torch.Tensor, out: torch.Tensor) -> float:
    """Share of pixels more than 20 CIEDE2000 from their source pixel; ``[3, H, W]`` uint8."""
    de = tp.delta_e(orig.movedim(0, -1).float() / 255, out.movedim(0, -1).float() / 255)
    return float((de > 20).float().mean())


def hue_gradient(h: int = 64, w: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """The issue's two-colour gradient ``[3, H, W]`` uint8 and its ends ``[2, 3]``."""
    ends = torch.tensor([[217.0, 61.0, 54.0], [0.0, 138.0, 169.0]])
    x = torch.linspace(0, 1, w)
    row = (ends[0][:, None] * (1 - x) + ends[1][:, None] * x).round().to(torch.uint8)
    return row[:, None, :].expand(3, h, w).contiguous(), ends / 255


def pil_palette_image(pal: torch.Tensor):
    from PIL import Image

    p8 = (pal * 255).round().clamp(0, 255).to(torch.uint8).reshape(-1).tolist()
    im = Image.new("P", (1, 1))
    im.putpalette(p8 + p8[:3] * (256 - len(p8) // 3))  # pad with the first colour
    return im


def pil_fs(img: torch.Tensor, pal_img) -> torch.Tensor:
    from PIL import Image

    im = Image.fromarray(img.permute(1, 2, 0).numpy())
    out = im.quantize(palette=pal_img, dither=Image.Dither.FLOYDSTEINBERG).convert("RGB")
    return torch.from_numpy(np.array(out)).permute(2, 0, 1)


def pngquant_fs(img: torch.Tensor, k: int, tmp: Path) -> torch.Tensor | None:
    from PIL import Image

    if shutil.which("pngquant") is None:
        return None
    src, dst = tmp / "in.png", tmp / "out.png"
    Image.fromarray(img.permute(1, 2, 0).numpy()).save(src)
    subprocess.run(["pngquant", "--force", "--floyd=1", "--output", str(dst), str(k), str(src)],
                   check=True)
    return torch.from_numpy(np.array(Image.open(dst).convert("RGB"))).permute(2, 0, 1)


def liq_fs(img: torch.Tensor, k: int) -> torch.Tensor | None:
    try:
        import imagequant
    except ImportError:
        return None
    from PIL import Image

    im = Image.fromarray(img.permute(1, 2, 0).numpy()).convert("RGBA")
    out = imagequant.quantize_pil_image(im, dithering_level=1.0, max_colors=k)
    return torch.from_numpy(np.array(out.convert("RGB"))).permute(2, 0, 1)


def ours(img: torch.Tensor, pal: torch.Tensor, method: str):
    return tp.apply_palette(img, pal, dither=method)


METHODS = ["tp-fs", "tp-ordered", "tp-none", "pil-fs", "pngquant-fs", "liq-fs"]


def quality(images: dict, ks: list[int]) -> None:
    rows: dict[tuple[str, int, str], tuple[float, float]] = {}
    with tempfile.TemporaryDirectory() as d:
        for name, (img, fixed) in images.items():
            for k in ([2] if fixed is not None else ks):
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    pal = fixed if fixed is not None else tp.palette(img, k).colors.float()
                outs = {
                    "tp-fs": ours(img, pal, "floyd-steinberg"),
                    "tp-ordered": ours(img, pal, "ordered"),
                    "tp-none": ours(img, pal, "none"),
                    "pil-fs": pil_fs(img, pil_palette_image(pal)),
                    "pngquant-fs": pngquant_fs(img, k, Path(d)) if fixed is None else None,
                    "liq-fs": liq_fs(img, k) if fixed is None else None,
                }
                for m, out in outs.items():
                    if out is not None:
                        rows[(name, k, m)] = (blur_metric(img, out, 1), blur_metric(img, out, 2),
                                              far_off(img, out))
            print(f"  {name} done", flush=True)
    print("\nblur metric (mean CIEDE2000 after a Gaussian blur in linear light), sigma=1 / sigma=2,"
          " and % of far-off pixels (CIEDE2000 > 20 from their source); photos = mean over the"
          " photos")
    special = ("gradient-2d", "dark-hue", "hue-gradient")
    groups = {"photos": [n for n in images if n not in special], **{g: [g] for g in special}}
    print(f"{'image':<13} {'k':>3} " + " ".join(f"{m:>19}" for m in METHODS))
    for g, names in groups.items():
        for k in ([2] if g == "hue-gradient" else ks):
            cells = []
            for m in METHODS:
                vals = [rows[(n, k, m)] for n in names if (n, k, m) in rows]
                cells.append(f"{statistics.mean(v[0] for v in vals):5.2f}/"
                             f"{statistics.mean(v[1] for v in vals):5.2f}/"
                             f"{100 * statistics.mean(v[2] for v in vals):5.2f}%"
                             if vals else "-")
            print(f"{g:<13} {k:>3} " + " ".join(f"{c:>19}" for c in cells))


def speed_batch(n: int, size: int) -> torch.Tensor:
    """``n`` photos ``[n, 3, size, size]`` uint8: the bench photos at full size, cropped square,
    resized, flipped and shifted so that no two are equal."""
    from skimage import data

    srcs = [tp.read_image(Path(tp.__file__).parent / "data" / "astronaut.jpg")[:3]]
    srcs += [torch.from_numpy(getattr(data, s)()).permute(2, 0, 1) for s in
             ("coffee", "chelsea", "rocket")]
    out = []
    for i in range(n):
        s = srcs[i % len(srcs)]
        m = min(s.shape[-2:])
        sq = s[:, :m, :m][None].float()
        im = F.interpolate(sq, size=(size, size), mode="area")[0]
        if (i // len(srcs)) % 2:
            im = im.flip(-1)
        out.append(im.roll(i // (2 * len(srcs)) * 37, -1))
    return torch.stack(out).round().clamp(0, 255).to(torch.uint8)


def timed(fn, repeats: int, sync=None, warmup=None) -> float:
    """Median seconds of ``fn`` over ``repeats`` runs after one call of ``warmup`` (default
    ``fn``; a small call warms the code paths without paying for a full batch)."""
    return median_seconds(fn, repeats, sync, warmup or fn)


def speed_cpu(repeats: int) -> None:
    from torchpalette._dither import fs_cpu

    path = "compiled loop (numba)" if fs_cpu.available() else "wavefront (numba missing)"
    print(f"\nCPU speed, k=16, each image with its own palette; tp floyd-steinberg: {path}")
    for size in (256, 512):
        _speed_size(8, size, 16, repeats)


def _speed_size(b: int, size: int, k: int, repeats: int) -> None:
    """Pillow FS (one image after another, 1 thread) and both dithers on ``b`` images."""
    imgs = speed_batch(b, size)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pal = tp.palette(imgs, k).colors.float()  # [B, K, 3], one palette per image
    pal_imgs = [pil_palette_image(p) for p in pal]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    t_pil = timed(lambda: [pil_fs(im, pi) for im, pi in zip(imgs, pal_imgs, strict=True)],
                  repeats)
    print(f"  {b} x {size}x{size}: pil-fs (one image after another, 1 thread) "
          f"{b / t_pil:8.1f} img/s")
    for nt in sorted({1, threads}):
        torch.set_num_threads(nt)
        for m in ("floyd-steinberg", "ordered"):
            t = timed(lambda m=m: dither_labels(imgs, pal, m, "lab"), repeats,
                      warmup=lambda m=m: dither_labels(imgs[:2, :, :64, :64], pal[:2], m, "lab"))
            print(f"    tp {m:<16} {nt} thread(s) {b / t:8.1f} img/s   ratio to pil-fs "
                  f"{t_pil / t:5.2f}")
    torch.set_num_threads(threads)


def speed_gpu(repeats: int) -> None:
    if not torch.cuda.is_available():
        print("\n--gpu: no CUDA device")
        return
    b, size, k = 256, 256, 16
    imgs = speed_batch(b, size).cuda()
    pal = tp.palette(imgs, k).colors.float()
    x = imgs.float() / 255
    print(f"\nGPU speed ({torch.cuda.get_device_name()}): {b} images {size}x{size}, k={k}")
    for m in ("floyd-steinberg", "ordered"):
        t = timed(lambda m=m: dither_labels(x, pal, m, "lab"), repeats, torch.cuda.synchronize)
        print(f"  tp {m:<16} {b / t:10.1f} img/s  ({t * 1e3:.1f} ms per batch)")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="two photos, k = 4 and 16, 1 repeat")
    ap.add_argument("--gpu", action="store_true", help="also B=256 256x256 k=16 on CUDA")
    ap.add_argument("--skip-speed", action="store_true", help="quality tables only")
    args = ap.parse_args()
    busy = report_machine()
    print("load average (1, 5, 15 min): " + ", ".join(f"{x:.2f}" for x in os.getloadavg()))
    t0 = time.perf_counter()
    ks = [4, 16] if args.quick else [4, 16, 64]
    images = {n: (im, None) for n, im in load_photos(args.quick).items()}
    images["gradient-2d"] = (gradient_2d(), None)
    images["dark-hue"] = (dark_hue(), None)
    hue, ends = hue_gradient()
    images["hue-gradient"] = (hue, ends)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # quality: one thread (on a shared machine, faster and steadier)
    quality(images, ks)
    torch.set_num_threads(threads)
    if not args.skip_speed:
        busy = report_machine()
        print("load average (1, 5, 15 min): " + ", ".join(f"{x:.2f}" for x in os.getloadavg()))
        speed_cpu(1 if args.quick else 3)
        warn_if_busy(busy)
    if args.gpu:
        speed_gpu(5)
    print(f"\ntotal {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
