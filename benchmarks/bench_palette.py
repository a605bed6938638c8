"""k-means palettes and colour reduction: torchpalette against scikit-learn, faiss and Pillow.

For each photo (the bundled astronaut plus scikit-image's coffee, chelsea and rocket, each
downscaled to <= 100,000 pixels as the notebook does) and each k in 2..64, every method builds
a k-colour palette and reduces the photo to it:

* ``torchpalette``: ``tp.palette`` (histogram path) + ``tp.apply_palette`` (exact, in Lab);
* ``torchpalette-bins``: ``tp.reduce_colors(assign="bins")``: the same palette, pixels mapped
  through a bin -> colour look-up table (the CUDA default) instead of exact distances;
* ``torchpalette-refined``: ``tp.reduce_colors(assign="refined")``: the same palette, pixels
  mapped through a bin -> nearest colour table, the exact search only near colour boundaries;
* ``sklearn-lab``: ``KMeans(n_clusters=k, n_init=1)`` fit + predict on the Lab pixels;
* ``faiss``: ``faiss.Kmeans`` (faiss-cpu defaults: 25 iterations, training on at most 256
  points per centroid) on the Lab pixels + nearest-centroid search;
* ``pil-mediancut`` / ``pil-fastoctree`` / ``pil-libimagequant``: ``Image.quantize``.

Timings are medians of repeats, per image, excluding the shared decode/downscale and, for
sklearn and faiss, the Lab conversion of the pixels (done once, untimed, in their favour).
Quality is the mean CIEDE2000 (scikit-image) between the photo and its reduced image, averaged
over seeds (3 by default; Pillow is deterministic). One table: time, speed ratio of each peer
to torchpalette (> 1 = torchpalette faster), mean dE00 and its difference to sklearn-lab.

At k=2 one photo (the astronaut) has two k-means basins (mean Lab inertia 783 vs 1012, dE00
16.7 vs 22.3): one seeding ends in the worse one for ~12% of seeds with torchpalette's n_init=1
and ~20% with scikit-learn's (8 of 40), so a 3-seed mean can swing by +-0.5 on one side
without any difference in the algorithms; ``tp.palette`` now runs 3 seedings for k <= 4.

Then a full-size photo (the astronaut upscaled to >= 12 MP) shows that the palette's cost is
flat in image size (histogram path), with the exact apply_palette timed separately. With CUDA
the torchpalette rows are repeated on the GPU.

Usage: ``python benchmarks/bench_palette.py [--quick] [--threads N]``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

import torchpalette as tp
from _common import report_machine  # noqa: E402  (benchmarks/ is on sys.path)

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "torchpalette" / "data" / "astronaut.jpg"


def downscale(img: torch.Tensor, max_pixels: int = 100_000) -> torch.Tensor:
    h, w = img.shape[-2:]
    if h * w <= max_pixels:
        return img
    s = (max_pixels / (h * w)) ** 0.5
    size = (int(h * s), int(w * s))
    return F.interpolate(img[None].float(), size=size, mode="area")[0].round().clamp(0, 255).to(
        torch.uint8
    )


def load_photos(quick: bool) -> dict[str, torch.Tensor]:
    from skimage import data

    photos = {"astronaut": tp.read_image(SAMPLE)[:3]}
    names = ["coffee", "chelsea"] if quick else ["coffee", "chelsea", "rocket"]
    for name in names:
        photos[name] = torch.from_numpy(getattr(data, name)()).permute(2, 0, 1).contiguous()
    return {k: downscale(v) for k, v in photos.items()}


def timed(fn, repeats: int, sync=None):
    out = fn()  # warm-up (and the result)
    times = []
    for _ in range(repeats):
        if sync:
            sync()
        t = time.perf_counter()
        out = fn()
        if sync:
            sync()
        times.append(time.perf_counter() - t)
    return out, statistics.median(times)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="few photos, k and seeds: a smoke run")
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    import faiss
    from PIL import Image, features
    from skimage.color import deltaE_ciede2000, lab2rgb, rgb2lab
    from sklearn.cluster import KMeans

    report_machine()

    quick = args.quick
    ks = [4, 16] if quick else [2, 4, 8, 16, 32, 64]
    seeds = [0] if quick else [0, 1, 2]
    repeats = 1 if quick else 5
    photos = load_photos(quick)

    pil_methods = {"pil-mediancut": Image.Quantize.MEDIANCUT,
                   "pil-fastoctree": Image.Quantize.FASTOCTREE}
    if features.check("libimagequant"):
        pil_methods["pil-libimagequant"] = Image.Quantize.LIBIMAGEQUANT
    else:
        print("note: Pillow built without libimagequant; pil-libimagequant skipped")

    rows: dict[tuple[int, str], dict[str, list[float]]] = {}

    def record(k, method, t, de):
        r = rows.setdefault((k, method), {"t": [], "de": []})
        r["t"].append(t)
        r["de"].append(de)

    for name, img in photos.items():
        hwc = img.permute(1, 2, 0).numpy()
        lab = rgb2lab(hwc)
        lab_px = lab.reshape(-1, 3).astype(np.float32)
        print(f"{name}: {img.shape[-1]}x{img.shape[-2]} = {img.shape[-1] * img.shape[-2]} px",
              flush=True)

        def quality(out_hwc_u8):
            return float(deltaE_ciede2000(lab, rgb2lab(out_hwc_u8)).mean())

        def from_lab_centres(centres, labels):
            rgb = lab2rgb(centres[None].astype(np.float64))[0]
            rgb8 = np.round(rgb * 255).astype(np.uint8)
            return rgb8[labels].reshape(hwc.shape)

        for k in ks:
            for s in seeds:
                def ours():
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        pal = tp.palette(img, k, seed=s)
                    return tp.apply_palette(img, pal.colors)

                out, t = timed(ours, repeats)
                record(k, "torchpalette", t, quality(out.permute(1, 2, 0).numpy()))

                for assign in ("bins", "refined"):
                    def ours_assign(assign=assign):
                        with warnings.catch_warnings():
                            warnings.simplefilter("ignore")
                            return tp.reduce_colors(img, k, seed=s, assign=assign)

                    out, t = timed(ours_assign, repeats)
                    record(k, f"torchpalette-{assign}", t, quality(out.permute(1, 2, 0).numpy()))

                def sk():
                    km = KMeans(n_clusters=k, n_init=1, random_state=s).fit(lab_px)
                    return km.cluster_centers_, km.predict(lab_px)

                (c, lab_idx), t = timed(sk, max(1, repeats // 2))
                record(k, "sklearn-lab", t, quality(from_lab_centres(c, lab_idx)))

                def fa():
                    km = faiss.Kmeans(3, k, seed=s + 1234, verbose=False)
                    km.train(lab_px)
                    _, idx = km.index.search(lab_px, 1)
                    return km.centroids, idx[:, 0]

                (c, lab_idx), t = timed(fa, repeats)
                record(k, "faiss", t, quality(from_lab_centres(c, lab_idx)))
            for mname, m in pil_methods.items():
                pil = Image.fromarray(hwc)

                def pq():
                    return np.asarray(pil.quantize(k, method=m).convert("RGB"))

                out, t = timed(pq, repeats)
                record(k, mname, t, quality(out))

    methods = ["torchpalette", "torchpalette-bins", "torchpalette-refined", "sklearn-lab",
               "faiss", *pil_methods]
    print(f"\nmean over {len(photos)} photos and {len(seeds)} seed(s); time per image; "
          "ratio = method time / torchpalette time (> 1: torchpalette faster)")
    print(f"{'k':>3} {'method':<20} {'time ms':>9} {'ratio':>7} {'dE00':>7} {'vs sklearn':>10}")
    for k in ks:
        t_tp = statistics.mean(rows[(k, "torchpalette")]["t"])
        de_sk = statistics.mean(rows[(k, "sklearn-lab")]["de"])
        for m in methods:
            r = rows[(k, m)]
            t = statistics.mean(r["t"])
            de = statistics.mean(r["de"])
            print(f"{k:>3} {m:<20} {t * 1e3:9.1f} {t / t_tp:7.2f} {de:7.3f} {de - de_sk:+10.3f}")

    # cost vs image size: histogram palette is flat, apply_palette is linear
    big_hw = (1024, 1024) if quick else (3072, 4096)
    big = F.interpolate(tp.read_image(SAMPLE)[None, :3].float(), size=big_hw, mode="bilinear",
                        align_corners=False)[0].round().clamp(0, 255).to(torch.uint8)
    small = photos["astronaut"]
    print(f"\ncost vs size at k=16 (astronaut {small.shape[-1]}x{small.shape[-2]} vs "
          f"{big_hw[1]}x{big_hw[0]} = {big_hw[0] * big_hw[1] / 1e6:.1f} MP)")
    for label, im in (("small", small), ("full", big)):
        _, t_pal = timed(lambda: tp.palette(im, 16), max(1, repeats // 2))
        pal = tp.palette(im, 16).colors
        _, t_app = timed(lambda: tp.apply_palette(im, pal), 1)
        _, t_ref = timed(lambda: tp.reduce_colors(im, 16, assign="refined"), 1)
        print(f"  {label:<5} palette {t_pal * 1e3:8.1f} ms   apply_palette {t_app * 1e3:8.1f} ms"
              f"   reduce_colors(refined, palette included) {t_ref * 1e3:8.1f} ms")

    if torch.cuda.is_available():
        dev = torch.device("cuda")
        print(f"\nCUDA ({torch.cuda.get_device_name()}): torchpalette palette + apply_palette")
        sync = torch.cuda.synchronize
        for k in ks:
            ts, tb = [], []
            for img in photos.values():
                g = img.to(dev)
                _, t = timed(lambda: tp.apply_palette(g, tp.palette(g, k).colors), 5, sync)
                ts.append(t)
                _, t = timed(lambda: tp.reduce_colors(g, k), 5, sync)  # CUDA: look-up table
                tb.append(t)
            print(f"  k={k:<3} {statistics.mean(ts) * 1e3:8.2f} ms per photo (exact), "
                  f"{statistics.mean(tb) * 1e3:8.2f} ms (reduce_colors, look-up table)")
        g = big.to(dev)
        _, t = timed(lambda: tp.apply_palette(g, tp.palette(g, 16).colors), 3, sync)
        print(f"  full-size {big_hw[1]}x{big_hw[0]} k=16: {t * 1e3:.1f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
