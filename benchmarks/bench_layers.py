"""Quantizer layers (``tp.nn``) in training pipelines: throughput eager vs ``torch.compile``,
mixed precision, and RandomColorReduction with k drawn per image vs a fixed k.

Batches are random 224x224 crops of the bundled astronaut photo (CPU: B=8; ``--gpu``: B=256
at 256x256, fp32 and bf16 autocast). For each layer: images/s in eager mode and compiled
(``torch.compile(layer, fullgraph=True, dynamic=True)``, inductor; compile time reported
apart, then timed after a warm-up with a second, smaller batch so that the partial last batch
of an epoch is covered). For PaletteQuantizer also a training step (forward + backward of a
learnable palette). RandomColorReduction(p=1) with ``colors=(2, 64)`` (k drawn per image, one
batched call) is compared with a fixed k (``colors=k``, the drawn k's mean and maximum), with
the mean dE00 of each against the input (target: drawn-k within 1.5x of fixed-k time).

``--vq`` runs instead the VQ job of issue 23 (``_vq_job.py``): learn a 16-colour palette on
photo crops in 100 steps, held-out mean dE00 of torchpalette's recipes, ``fit`` and
``PaletteVQ`` against vector-quantize-pytorch's EMA codebook with k-means init (the ``bench``
extra), over ``--vq-seeds`` draws of the crops; it reports quality, and the load next to the
seconds each method took.

Usage: ``python benchmarks/bench_layers.py [--gpu] [--no-compile] [--repeats N]
[--vq [--vq-seeds N]]``.
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings
from pathlib import Path

import torch

import torchpalette as tp
from _common import machine_busy, report_machine, warn_if_busy  # noqa: E402  (benchmarks/ is on sys.path)

SAMPLE = Path(__file__).resolve().parents[1] / "torchpalette" / "data" / "astronaut.jpg"


def crops(b: int, size: int, device: str, seed: int = 0) -> torch.Tensor:
    img = tp.read_image(SAMPLE).float() / 255
    if size > img.shape[-1]:
        img = torch.nn.functional.interpolate(img[None], scale_factor=2, mode="bilinear")[0]
    g = torch.Generator().manual_seed(seed)
    h, w = img.shape[-2:]
    ys = torch.randint(0, h - size + 1, (b,), generator=g).tolist()
    xs = torch.randint(0, w - size + 1, (b,), generator=g).tolist()
    return torch.stack([img[:, y : y + size, x : x + size] for y, x in zip(ys, xs)]).to(device)


def timed(fn, repeats: int, device: str) -> float:
    """Median seconds of ``fn()`` over ``repeats`` runs (after one warm-up)."""
    fn()
    out = []
    for _ in range(repeats):
        if device == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        fn()
        if device == "cuda":
            torch.cuda.synchronize()
        out.append(time.perf_counter() - t)
    return statistics.median(out)


def mean_de(out: torch.Tensor, ref: torch.Tensor) -> float:
    return float(tp.delta_e(out.float().movedim(-3, -1), ref.float().movedim(-3, -1)).mean())


def layers(device: str):
    pal = tp.nn.PaletteQuantizer.fit(crops(8, 224, "cpu", seed=1), colors=16).palette
    return [
        ("ColorQuantizer(16)", tp.nn.ColorQuantizer(colors=16)),
        ("PaletteQuantizer(16)", tp.nn.PaletteQuantizer(pal).to(device)),
        ("RandomColorReduction((2,64), p=1)", tp.nn.RandomColorReduction((2, 64), p=1.0)),
    ]


def bench_throughput(x, args, autocast: bool) -> None:
    device = x.device.type
    b = x.shape[0]
    ctx = (lambda: torch.autocast(device, dtype=torch.bfloat16)) if autocast else None
    print(f"\n## Throughput, B={b} {x.shape[-1]}^2 {device}"
          f"{' bf16 autocast' if autocast else ' fp32'} (images/s; compile s apart)")
    print("| layer | eager img/s | compiled img/s | compiled/eager | compile s |")
    print("|---|---:|---:|---:|---:|")
    small = x[: max(1, b // 2 + 1)]
    for name, layer in layers(device):
        def run(f, inp=x):
            if ctx is None:
                return f(inp)
            with ctx():
                return f(inp)

        eager = timed(lambda: run(layer), args.repeats, device)
        row = f"| {name} | {b / eager:.1f} |"
        if args.no_compile:
            print(row + " | | |")
            continue
        compiled = torch.compile(layer, fullgraph=True, dynamic=True)
        t = time.perf_counter()
        run(compiled)
        run(compiled, small)  # the partial last batch: must not crash or recompile
        compile_s = time.perf_counter() - t
        comp = timed(lambda: run(compiled), args.repeats, device)
        print(row + f" {b / comp:.1f} | {eager / comp:.2f}x | {compile_s:.0f} |")
    train_step(x, args, ctx)


def train_step(x, args, ctx) -> None:
    device = x.device.type
    layer = tp.nn.PaletteQuantizer(torch.rand(16, 3), learnable=True).to(device)
    opt = torch.optim.Adam(layer.parameters(), lr=0.01)
    xg = x.clone().requires_grad_()

    def step(f):
        opt.zero_grad()
        if ctx is None:
            loss = (f(xg) - x).square().mean()
        else:
            with ctx():
                loss = (f(xg) - x).square().mean()
        loss.backward()
        opt.step()

    eager = timed(lambda: step(layer), args.repeats, device)
    line = f"PaletteQuantizer learnable training step: eager {x.shape[0] / eager:.1f} img/s"
    if not args.no_compile:
        compiled = torch.compile(layer, fullgraph=True, dynamic=True)
        comp = timed(lambda: step(compiled), args.repeats, device)
        line += f", compiled {x.shape[0] / comp:.1f} img/s ({eager / comp:.2f}x)"
    print(line)


def bench_drawn_k(x, args) -> None:
    device = x.device.type
    print(f"\n## RandomColorReduction p=1, k drawn per image vs fixed k (B={x.shape[0]} "
          f"{x.shape[-1]}^2 {device}, eager)")
    torch.manual_seed(0)
    drawn = tp.nn.RandomColorReduction((2, 64), p=1.0)
    ks = drawn.make_params([x])["k"]
    kmean, kmax = int(ks.float().mean().round()), int(ks.max())

    def drawn_run():
        torch.manual_seed(0)  # the same k's every repeat
        return drawn(x)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t_drawn = timed(drawn_run, args.repeats, device)
        de_drawn = mean_de(drawn_run(), x)
        ref = torch.stack([tp.reduce_colors(x[i], int(k)) for i, k in enumerate(ks)])
        de_ref = mean_de(ref, x)
        print(f"drawn k: {sorted(ks.tolist())}")
        print("| run | ms/batch | drawn / this | mean dE00 |")
        print("|---|---:|---:|---:|")
        print(f"| drawn k (one batched call) | {1e3 * t_drawn:.0f} | 1.00x | {de_drawn:.3f} |")
        print(f"| reduce_colors(image_i, k_i) per image (reference) | | | {de_ref:.3f} |")
        for k in (kmean, kmax):
            fixed = tp.nn.RandomColorReduction(k, p=1.0)
            t = timed(lambda: fixed(x), args.repeats, device)
            de = mean_de(fixed(x), x)
            print(f"| fixed k={k} | {1e3 * t:.0f} | {t_drawn / t:.2f}x | {de:.3f} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gpu", action="store_true", help="B=256 256^2 on CUDA, fp32 and bf16")
    ap.add_argument("--no-compile", action="store_true", help="eager timings only")
    ap.add_argument("--repeats", type=int, default=5, help="timed repeats (median)")
    ap.add_argument("--vq", action="store_true", help="the VQ quality job of issue 23 only")
    ap.add_argument("--vq-seeds", type=int, default=3, help="crop draws of the VQ job")
    args = ap.parse_args()
    busy = report_machine()
    if args.vq:
        import _vq_job

        _vq_job.run(args.vq_seeds)
        warn_if_busy(max(busy, machine_busy()), "(the seconds per method) ")
        return
    if args.gpu:
        x = crops(256, 256, "cuda")
        for autocast in (False, True):
            bench_throughput(x, args, autocast)
    else:
        x = crops(8, 224, "cpu")
        bench_throughput(x, args, False)
        bench_throughput(x, args, True)
    bench_drawn_k(x, args)
    warn_if_busy(busy, "above ")


if __name__ == "__main__":
    main()
