"""The VQ job of issue 23 for ``bench_layers.py --vq``: learn a 16-colour palette on photo
crops in 100 steps and measure held-out mean dE00, torchpalette against vector-quantize-pytorch.

Photos: the colour photos shipped inside scikit-image's data folder (no download) and the
bundled sample. Each photo's left 3/4 gives training crops, its right 1/4 the held-out crops.
Every method sees the same 100 batches (B=16 crops of 64x64) and is evaluated on the same 64
held-out crops by nearest colour (in Lab for torchpalette, in its own input space for
vector-quantize-pytorch, whose Euclidean search is what it offers).
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

import torchpalette as tp

PHOTOS = ["astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg", "motorcycle_left.png",
          "retina.jpg"]
STEPS, BATCH, SIZE, K = 100, 16, 64, 16


def photos() -> list[torch.Tensor]:
    import skimage.data

    folder = Path(skimage.data.__file__).parent
    found = [folder / n for n in PHOTOS if (folder / n).exists()]
    found.append(Path(tp.__file__).parent / "data" / "astronaut.jpg")
    return [tp.read_image(p)[:3].float() / 255 for p in found]


def _crops(images, n, g, train: bool) -> torch.Tensor:
    out = []
    for _ in range(n):
        img = images[int(torch.randint(len(images), (1,), generator=g))]
        h, w = img.shape[-2:]
        x0, x1 = (0, w * 3 // 4) if train else (w * 3 // 4, w)
        y = int(torch.randint(0, h - SIZE + 1, (1,), generator=g))
        x = int(torch.randint(x0, x1 - SIZE + 1, (1,), generator=g))
        out.append(img[:, y : y + SIZE, x : x + SIZE])
    return torch.stack(out)


def data(seed: int = 0):
    images = photos()
    g = torch.Generator().manual_seed(seed)
    batches = [_crops(images, BATCH, g, True) for _ in range(STEPS)]
    held_out = _crops(images, 64, g, False)
    return batches, held_out, len(images)


def mean_de(out: torch.Tensor, ref: torch.Tensor) -> float:
    return float(tp.delta_e(out.movedim(-3, -1), ref.movedim(-3, -1)).mean())


def _recipe(layer, batches):
    """The README recipe: Adam on the learnable palette, MSE to the input."""
    opt = torch.optim.Adam(layer.parameters(), lr=0.01)
    for x in batches:
        opt.zero_grad()
        (layer(x) - x).square().mean().backward()
        opt.step()
    return layer.eval()


def tp_random(batches, held):
    torch.manual_seed(0)
    layer = _recipe(tp.nn.PaletteQuantizer(torch.rand(K, 3), learnable=True), batches)
    with torch.no_grad():
        return mean_de(layer(held), held)


def tp_from_fit(batches, held):
    layer = tp.nn.PaletteQuantizer.fit(batches[0], K, learnable=True)
    layer = _recipe(layer, batches)
    with torch.no_grad():
        return mean_de(layer(held), held)


def tp_fit_alone(batches, held):
    layer = tp.nn.PaletteQuantizer.fit(batches, K)  # the same 100 batches, streamed
    return mean_de(layer(held), held)


def tp_vq(batches, held, space="lab"):
    vq = tp.nn.PaletteVQ(K, space=space)
    for x in batches:
        vq(x)
    vq.eval()
    return mean_de(vq(held).quantized, held)


def vqp(batches, held, lab: bool):
    from vector_quantize_pytorch import VectorQuantize

    torch.manual_seed(0)
    vq = VectorQuantize(dim=3, codebook_size=K, decay=0.99, kmeans_init=True, kmeans_iters=10,
                        threshold_ema_dead_code=2, commitment_weight=0.25)

    def enc(x):
        pts = x.movedim(1, -1).reshape(x.shape[0], -1, 3)
        return tp.srgb_to_lab(pts) if lab else pts

    for x in batches:
        vq.train()
        vq(enc(x))
    vq.eval()
    with torch.no_grad():
        q, _, _ = vq(enc(held))
    q = tp.lab_to_srgb(q) if lab else q.clamp(0, 1)
    out = q.reshape(held.shape[0], SIZE, SIZE, 3).movedim(-1, 1)
    return mean_de(out, held)


def run(seeds: int = 3) -> None:
    """Every method on ``seeds`` draws of the crops; prints each and the mean."""
    import os

    print(f"load average (1, 5, 15 min) at start: {os.getloadavg()}")
    table: dict[str, list[float]] = {}
    for seed in range(seeds):
        for name, de, _ in run_once(seed):
            table.setdefault(name, []).append(de)
    print(f"load average (1, 5, 15 min) at end: {os.getloadavg()}")
    print(f"mean over {seeds} crop draws (held-out dE00, lower is better):")
    for name, des in table.items():
        spread = f"{min(des):.3f}..{max(des):.3f}"
        print(f"  {name:62s} {sum(des) / len(des):6.3f}   (range {spread})")


def run_once(seed: int) -> list[tuple[str, float, float]]:
    batches, held, n = data(seed)
    print(f"VQ job, crop draw {seed}: {n} photos, {STEPS} steps of {BATCH} crops "
          f"{SIZE}x{SIZE}, K={K}, 64 held-out crops")
    jobs = [
        ("torchpalette PaletteQuantizer, random init (README recipe)", tp_random),
        ("torchpalette PaletteQuantizer, from fit + recipe", tp_from_fit),
        ("torchpalette PaletteQuantizer.fit alone (same 100 batches)", tp_fit_alone),
        ("torchpalette PaletteVQ (EMA, k-means init), Lab (default)", tp_vq),
        ("torchpalette PaletteVQ (EMA, k-means init), space='oklab'",
         lambda b, h: tp_vq(b, h, "oklab")),
        ("vector-quantize-pytorch EMA + k-means init, fed sRGB",
         lambda b, h: vqp(b, h, False)),
        ("vector-quantize-pytorch EMA + k-means init, fed Lab",
         lambda b, h: vqp(b, h, True)),
    ]
    rows = []
    for name, fn in jobs:
        t = time.perf_counter()
        try:
            de = fn(batches, held)
        except ImportError as e:
            print(f"  {name}: skipped ({e})")
            continue
        dt = time.perf_counter() - t
        rows.append((name, de, dt))
        print(f"  {name:62s} held-out dE00 {de:6.3f}   ({dt:5.1f} s)", flush=True)
    return rows


if __name__ == "__main__":
    run()
