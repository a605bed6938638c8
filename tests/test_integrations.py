"""Integrations (issue 22): the ``datasets.Dataset.map`` callable and Ray Data (local, 2 CPUs)
give the tokens of ``torchpalette quantize --format tokens`` for the same images and options;
the two-pass Ray palette equals ``tp.fit_palette``. Each test skips when its package is absent.
"""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import torchpalette as tp
from torchpalette.cli import commands as cli
from torchpalette.integrations import imagegpt_palette
from torchpalette.integrations._common import require


def _images(n: int = 6) -> list[np.ndarray]:
    rng = np.random.default_rng(11)
    base = rng.integers(0, 256, (9, 3), dtype=np.uint8)
    return [base[rng.integers(0, 9, (8 + i % 2, 10))] + rng.integers(0, 9, (8 + i % 2, 10, 3),
                                                                        dtype=np.uint8)
            for i in range(n)]


def _cli_tokens(tmp_path: Path, images: list[np.ndarray], *opts: str) -> dict[str, np.ndarray]:
    """``torchpalette quantize --format tokens`` of the images as PNG files: key -> indices."""
    src = tmp_path / "src"
    src.mkdir(exist_ok=True)
    for i, im in enumerate(images):
        Image.fromarray(im).save(src / f"{i:03d}.png")
    dst = tmp_path / "tok"
    assert cli.main(["quantize", str(src), str(dst), "--format", "tokens", "--workers", "0",
                     "--quiet", *opts]) == 0
    out = {}
    with tarfile.open(dst / "shard-000000.tar") as tar:
        for m in tar.getmembers():
            if m.name.endswith(".idx.npy"):
                out[m.name.split("_")[0]] = np.load(io.BytesIO(tar.extractfile(m).read()))
    return out


def test_require_names_the_extra():
    with pytest.raises(ImportError, match=r"torchpalette\[ray\]"):
        require("no_such_module_for_torchpalette", "ray")


def test_imagegpt_palette_checks_range():
    with pytest.raises(ValueError, match="centers"):
        imagegpt_palette([[0.0, 2.0, 0.0]])


@pytest.mark.parametrize("fixed", [False, True])
def test_datasets_map_callable_matches_the_command(tmp_path, fixed):
    datasets = pytest.importorskip("datasets")
    from torchpalette.integrations.hf import PaletteTokenizer

    images = _images()
    pal = tp.fit_palette(torch.stack([torch.from_numpy(im).permute(2, 0, 1)
                                      for im in images if im.shape[0] == 8]), 7) if fixed else None
    if fixed:
        np.save(tmp_path / "pal.npy", (pal * 255).round().to(torch.uint8).numpy())
    opts = ["--palette", str(tmp_path / "pal.npy")] if fixed else ["--colors", "5"]
    want = _cli_tokens(tmp_path, images, *opts)
    ds = datasets.Dataset.from_dict({"image": [Image.fromarray(im) for im in images],
                                     "label": list(range(len(images)))})
    ds = ds.cast_column("image", datasets.Image())
    tok = PaletteTokenizer(palette=None if pal is None else (pal * 255).round().to(torch.uint8),
                           colors=5)
    out = ds.map(tok, batched=True, with_rank=True, batch_size=4)
    assert out.column_names == ["image", "label", "input_ids", "palette"]
    for i, row in enumerate(out.with_format("numpy")):
        h, w = images[i].shape[:2]
        np.testing.assert_array_equal(np.asarray(row["input_ids"]).reshape(h, w),
                                      want[f"{i:03d}"])
        assert row["label"] == i and np.asarray(row["palette"]).shape == (7 if fixed else 5, 3)


def test_tokenizer_512_colours_uint16():
    from torchpalette.integrations.hf import PaletteTokenizer

    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    centers = rng.uniform(-1, 1, (512, 3)).astype(np.float32)  # ImageGPT's form
    out = PaletteTokenizer(palette=imagegpt_palette(centers))({"image": [img]})
    ids = out["input_ids"][0]
    assert ids.dtype == np.uint16 and ids.shape == (32 * 32,) and ids.max() > 255


@pytest.fixture(scope="module")
def ray_local():
    ray = pytest.importorskip("ray")
    pytest.importorskip("ray.data")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             configure_logging=False)
    try:
        yield ray
    finally:
        ray.shutdown()


def test_ray_two_pass_equals_one_process(tmp_path, ray_local):
    from torchpalette.integrations.ray import quantize_ray

    images = _images(8)
    ds = ray_local.data.from_items([{"image": im, "label": i} for i, im in enumerate(images)],
                                   override_num_blocks=4)
    out, pal = quantize_ray(ds, colors=6, fit=True, concurrency=2, batch_size=3)
    rows = sorted(out.take_all(), key=lambda r: r["label"])
    one = tp.fit_palette([torch.from_numpy(im).permute(2, 0, 1)[None] for im in images], 6)
    assert torch.equal(pal, one)  # the palette of one process, whatever the blocks
    np.save(tmp_path / "pal.npy", (one * 255).round().to(torch.uint8).numpy())
    want = _cli_tokens(tmp_path, images, "--palette", str(tmp_path / "pal.npy"))
    assert len(rows) == len(images)
    for row in rows:
        np.testing.assert_array_equal(row["indices"], want[f"{row['label']:03d}"])
        assert row["palette"].shape == (6, 3) and row["indices"].dtype == np.uint8
