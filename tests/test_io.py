"""io.py: reading every kind of file the issue names, writing PNG/JPEG/indexed PNG, errors,
and walking folders. Test files are generated in tmp dirs."""

from __future__ import annotations

import io
import struct
import subprocess
import sys
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import torchpalette as tp
from torchpalette.io import iter_image_files

RNG = np.random.default_rng(0)
RGB = RNG.integers(0, 256, (5, 7, 3), dtype=np.uint8)


def _chw(arr: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.array(arr)).permute(2, 0, 1)  # np.array: a writable copy


def _png16_rgb(path, arr16: np.ndarray) -> None:
    """A 16-bit RGB PNG written by hand (Pillow cannot write one)."""
    h, w, _ = arr16.shape
    raw = b"".join(b"\0" + arr16[y].astype(">u2").tobytes() for y in range(h))

    def chunk(kind, data):
        crc = struct.pack(">I", zlib.crc32(kind + data))
        return struct.pack(">I", len(data)) + kind + data + crc

    ihdr = struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
                     + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


# ------------------------------------------------------------------ read_image
def test_read_sample(sample_path):
    img = tp.read_image(sample_path)
    assert img.shape == (3, 512, 512) and img.dtype == torch.uint8
    assert img.float().std() > 20  # a photo, not a blank
    assert tp.read_image(str(sample_path)).equal(img)


def test_read_rgb_and_rgba_png(tmp_path):
    Image.fromarray(RGB).save(tmp_path / "rgb.png")
    assert tp.read_image(tmp_path / "rgb.png").equal(_chw(RGB))
    rgba = np.dstack([RGB, RGB[..., :1]])
    Image.fromarray(rgba).save(tmp_path / "rgba.png")
    assert tp.read_image(tmp_path / "rgba.png").equal(_chw(rgba))


def test_read_grey_becomes_rgb(tmp_path):
    Image.fromarray(RGB[..., 0]).save(tmp_path / "grey.png")
    out = tp.read_image(tmp_path / "grey.png")
    assert out.shape == (3, 5, 7) and out.equal(_chw(RGB[..., 0:1]).expand(3, -1, -1))


def test_read_palette_png_gives_colours_not_indices(tmp_path):
    im = Image.fromarray(RGB).convert("P", palette=Image.Palette.ADAPTIVE, colors=8)
    im.save(tmp_path / "pal.png")
    expect = _chw(np.asarray(im.convert("RGB")))
    out = tp.read_image(tmp_path / "pal.png")
    assert out.shape == (3, 5, 7) and out.equal(expect) and int(out.max()) > 8
    im.save(tmp_path / "pal_t.png", transparency=0)  # tRNS: index 0 transparent
    out = tp.read_image(tmp_path / "pal_t.png")
    assert out.shape == (4, 5, 7) and out[:3].equal(expect)
    assert out[3].eq(0).eq(torch.from_numpy(np.asarray(im) == 0)).all()


def test_read_16_bit(tmp_path):
    grey16 = RGB[..., 0].astype(np.uint16) * 257  # exact 8-bit values scaled to 16 bits
    Image.fromarray(grey16).save(tmp_path / "g16.png")
    assert tp.read_image(tmp_path / "g16.png").equal(_chw(RGB[..., 0:1]).expand(3, -1, -1))
    rgb16 = RNG.integers(0, 65536, (4, 6, 3), dtype=np.uint16)
    _png16_rgb(tmp_path / "rgb16.png", rgb16)
    out = tp.read_image(tmp_path / "rgb16.png")
    assert out.dtype == torch.uint8
    assert out.equal(_chw(np.round(rgb16 / 65535 * 255).astype(np.uint8)))


def test_read_exif_rotated_jpeg(tmp_path):
    arr = np.zeros((4, 8, 3), np.uint8)
    arr[:, :4] = 255  # left half white
    im = Image.fromarray(arr)
    exif = im.getexif()
    exif[0x0112] = 6  # display rotated 90° clockwise
    im.save(tmp_path / "rot.jpg", exif=exif, quality=100)
    out = tp.read_image(tmp_path / "rot.jpg")
    assert out.shape == (3, 8, 4)
    assert out[:, :4].float().mean() > 200 and out[:, 4:].float().mean() < 50  # white on top


@pytest.mark.parametrize("suffix", ["bmp", "tif", "webp", "gif"])
def test_read_other_formats(tmp_path, suffix):
    path = tmp_path / f"x.{suffix}"
    Image.fromarray(RGB).save(path, **({"lossless": True} if suffix == "webp" else {}))
    out = tp.read_image(path)
    assert out.shape == (3, 5, 7) and out.dtype == torch.uint8
    assert out.equal(_chw(np.asarray(Image.open(path).convert("RGB"))))


def test_read_errors(tmp_path, sample_path):
    with pytest.raises(FileNotFoundError, match="missing.png"):
        tp.read_image(tmp_path / "missing.png")
    with pytest.raises(ValueError, match=f"{tmp_path}: expected an image file"):
        tp.read_image(tmp_path)
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(ValueError, match="empty.png: expected an image file, got an empty"):
        tp.read_image(tmp_path / "empty.png")
    (tmp_path / "text.jpg").write_text("hello, not an image\n")
    with pytest.raises(ValueError, match="text.jpg: not a readable image"):
        tp.read_image(tmp_path / "text.jpg")
    data = sample_path.read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="cut.jpg: truncated JPEG"):
        tp.read_image(tmp_path / "cut.jpg")
    (tmp_path / "tail.jpg").write_bytes(data + b"trailing bytes after the end-of-image marker")
    assert tp.read_image(tmp_path / "tail.jpg").equal(tp.read_image(sample_path))
    Image.fromarray(RGB).save(tmp_path / "ok.png")
    png = (tmp_path / "ok.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(png[: len(png) - 20])
    with pytest.raises(ValueError, match="cut.png: not a readable image"):
        tp.read_image(tmp_path / "cut.png")


@pytest.mark.parametrize("suffix", [".gif", ".png", ".webp", ".tif"])
def test_animated_and_multi_page_read_the_first_frame_with_a_warning(tmp_path, suffix):
    """One rule for GIF, APNG, WebP and multi-page TIFF (issue 21): frame 0 and a warning."""
    frames = [Image.fromarray(RGB), Image.fromarray(255 - RGB), Image.fromarray(RGB // 2)]
    path = tmp_path / f"anim{suffix}"
    kw = {"lossless": True} if suffix == ".webp" else {}
    frames[0].save(path, save_all=True, append_images=frames[1:], **kw)
    with pytest.warns(UserWarning, match=f"anim{suffix}: animated or multi-page image of 3 "
                                         "frames: read the first frame only"):
        got = tp.read_image(path)
    want = _chw(np.asarray(Image.open(path).convert("RGB")))  # Pillow's frame 0
    assert got.shape == (3, *RGB.shape[:2]) and got.equal(want)
    if suffix != ".gif":  # a 256-colour GIF is lossy; the others keep frame 0 exactly
        assert got.equal(_chw(RGB))


def test_decompression_bomb_names_path_and_option(tmp_path):
    Image.new("RGB", (300, 200)).save(tmp_path / "big.png")
    with pytest.raises(ValueError, match=r"big.png: image of 300 x 200 = 60,000 pixels, over "
                                         r"the limit of 59,999.*max_pixels"):
        tp.read_image(tmp_path / "big.png", max_pixels=59_999)
    assert tp.read_image(tmp_path / "big.png", max_pixels=60_000).shape == (3, 200, 300)
    old = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = 1000  # Pillow's own limit is not what decides, and is restored
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            assert tp.read_image(tmp_path / "big.png", max_pixels=None).shape == (3, 200, 300)
        assert Image.MAX_IMAGE_PIXELS == 1000
    finally:
        Image.MAX_IMAGE_PIXELS = old


@pytest.mark.parametrize("suffix", [".ppm", ".tga", ".ico", ".qoi"])
def test_more_pillow_formats_read(tmp_path, suffix):
    assert suffix in tp.io.IMAGE_SUFFIXES
    Image.fromarray(RGB).save(tmp_path / f"x{suffix}")
    assert tp.read_image(tmp_path / f"x{suffix}").equal(_chw(RGB))


def _block_torchvision_io(monkeypatch):
    """Simulate a torchvision without ``torchvision.io`` (and no TorchCodec)."""
    for name in ("torchvision.io", "torchcodec", "torchcodec.decoders"):
        monkeypatch.setitem(sys.modules, name, None)  # import raises ImportError


def test_read_and_write_without_torchvision_io(tmp_path, monkeypatch, sample_path):
    Image.fromarray(RGB).save(tmp_path / "x.png")
    want_png = tp.read_image(tmp_path / "x.png")
    want_jpg = tp.read_image(sample_path)
    _block_torchvision_io(monkeypatch)
    assert tp.read_image(tmp_path / "x.png").equal(want_png)
    got = tp.read_image(sample_path)  # Pillow's libjpeg: within rounding of torchvision's
    assert got.shape == want_jpg.shape and (got.int() - want_jpg.int()).abs().float().mean() < 1
    tp.write_image(want_png, tmp_path / "y.png")
    tp.write_image(want_png, tmp_path / "y.jpg")
    assert tp.read_image(tmp_path / "y.png").equal(want_png)
    assert tp.read_image(tmp_path / "y.jpg").shape == want_png.shape


def test_torchcodec_is_used_where_installed(tmp_path, monkeypatch):
    import types

    calls = []

    def decode_image(data, mode, apply_exif_orientation):
        calls.append((mode, apply_exif_orientation))
        return torch.from_numpy(np.asarray(Image.open(io.BytesIO(data.numpy().tobytes())))
                                .copy()).permute(2, 0, 1)

    fake = types.ModuleType("torchcodec.decoders")
    fake.decode_image = decode_image
    monkeypatch.setitem(sys.modules, "torchcodec", types.ModuleType("torchcodec"))
    monkeypatch.setitem(sys.modules, "torchcodec.decoders", fake)
    Image.fromarray(RGB).save(tmp_path / "x.png")
    assert tp.read_image(tmp_path / "x.png").equal(_chw(RGB))
    assert calls == [("RGB", True)]


def test_no_deprecation_warning_reaches_users(tmp_path, sample_path):
    Image.fromarray(RGB).save(tmp_path / "x.png")
    code = (f"import torchpalette as tp\ntp.read_image({str(sample_path)!r})\n"
            f"tp.read_image({str(tmp_path / 'x.png')!r})\n"
            f"tp.write_image(tp.read_image({str(sample_path)!r}), {str(tmp_path / 'y.jpg')!r})")
    res = subprocess.run([sys.executable, "-W", "error::DeprecationWarning", "-c", code],
                         capture_output=True, text=True, cwd=Path(__file__).parents[1])
    assert res.returncode == 0, res.stderr


def test_read_16_bit_and_float_tiff_scaled_like_16_bit_png(tmp_path):
    grey16 = np.array([[0, 257, 32768, 65535], [128, 40000, 65534, 1000]], np.uint16)
    Image.fromarray(grey16).save(tmp_path / "g16.tif")
    assert Image.open(tmp_path / "g16.tif").mode.startswith("I;16")  # the case under test
    out = tp.read_image(tmp_path / "g16.tif")
    want = np.round(grey16.astype(np.float64) * 255 / 65535).astype(np.uint8)  # NumPy reference
    assert out.shape == (3, 2, 4) and out.equal(_chw(want[..., None]).expand(3, -1, -1))
    assert int(out[0, 0, 2]) == 128
    f = np.array([[0.0, 0.5, 1.0, 0.25], [1.5, -0.2, 0.002, 0.999]], np.float32)
    Image.fromarray(f, mode="F").save(tmp_path / "f.tif")
    out = tp.read_image(tmp_path / "f.tif")
    want = np.round(np.clip(f, 0, 1) * 255).astype(np.uint8)
    assert out.equal(_chw(want[..., None]).expand(3, -1, -1)) and int(out[0, 0, 1]) == 128


def test_read_trns_colour_key_png_becomes_alpha(tmp_path):
    rgb = RGB.copy()
    rgb[0, :3] = (10, 20, 30)
    Image.fromarray(rgb).save(tmp_path / "key.png", transparency=(10, 20, 30))
    out = tp.read_image(tmp_path / "key.png")
    ref = np.asarray(Image.open(tmp_path / "key.png").convert("RGBA"))  # Pillow reference
    assert out.shape == (4, 5, 7) and out.equal(_chw(ref))
    key = (rgb == (10, 20, 30)).all(-1)
    assert out[3].eq(0).equal(torch.from_numpy(key)) and key.sum() >= 3
    grey = RGB[..., 0].copy()
    grey[1, :2] = 7
    Image.fromarray(grey).save(tmp_path / "gkey.png", transparency=7)
    out = tp.read_image(tmp_path / "gkey.png")
    assert out.shape == (4, 5, 7) and out[3].eq(0).equal(torch.from_numpy(grey == 7))
    assert out[:3].equal(_chw(grey[..., None]).expand(3, -1, -1))


def test_read_transparent_gif_becomes_alpha(tmp_path):
    idx = RNG.integers(0, 4, (6, 5)).astype(np.uint8)
    im = Image.fromarray(idx, "P")
    im.putpalette([255, 0, 0, 0, 255, 0, 0, 0, 255, 9, 9, 9])
    im.save(tmp_path / "t.gif", transparency=2)
    out = tp.read_image(tmp_path / "t.gif")
    assert out.shape == (4, 6, 5)
    assert out[3].eq(0).equal(torch.from_numpy(idx == 2))
    opaque = torch.from_numpy(idx != 2)
    pal = torch.tensor([[255, 0, 0], [0, 255, 0], [0, 0, 255], [9, 9, 9]], dtype=torch.uint8)
    assert out[:3].permute(1, 2, 0)[opaque].equal(pal[torch.from_numpy(idx).long()][opaque])


def test_read_webp_honours_exif_orientation(tmp_path):
    arr = np.zeros((4, 8, 3), np.uint8)
    arr[:, :4] = 255  # left half white
    im = Image.fromarray(arr)
    exif = im.getexif()
    exif[0x0112] = 6  # display rotated 90 degrees clockwise
    im.save(tmp_path / "rot.webp", exif=exif, lossless=True)
    out = tp.read_image(tmp_path / "rot.webp")
    assert out.equal(_chw(np.rot90(arr, k=-1)))  # NumPy reference: clockwise, white on top


@pytest.mark.parametrize("k, bits", [(1, 1), (2, 1), (3, 2), (4, 2), (16, 4), (17, 8), (256, 8)])
def test_encode_indexed_png_smallest_bit_depth(tmp_path, k, bits):
    pal = torch.from_numpy(RNG.integers(0, 256, (k, 4), dtype=np.uint8))
    pal[0, 3] = 0
    idx = torch.from_numpy(RNG.integers(0, k, (9, 11)))
    data = tp.io.encode_indexed_png(idx, pal)
    assert data[24] == bits  # IHDR bit depth
    (tmp_path / "p.png").write_bytes(data)
    with Image.open(tmp_path / "p.png") as im:
        assert im.mode == "P" and ("transparency" in im.info) == (k > 0)
    assert tp.read_image(tmp_path / "p.png").equal(pal[idx].permute(2, 0, 1))
    small = tp.io.encode_indexed_png(idx, pal, optimize=True)
    assert len(small) <= len(data)
    with pytest.raises(ValueError, match=r"indices: expected values in \[0, "):
        tp.io.encode_indexed_png(idx + k, pal)


def test_write_image_with_alpha_palette(tmp_path):
    pal = torch.tensor([[0, 0, 0, 0], [1, 0, 0, 1], [1, 0, 0, 0.5], [0, 0, 1, 1]])
    idx = torch.from_numpy(RNG.integers(0, 4, (8, 6)))
    img = (pal[idx].permute(2, 0, 1) * 255).round().to(torch.uint8)
    tp.write_image(img, tmp_path / "a.png", palette=pal)
    with Image.open(tmp_path / "a.png") as im:
        assert im.mode == "P" and len(im.getpalette()) // 3 == 4
    assert tp.read_image(tmp_path / "a.png").equal(img)
    with pytest.raises(ValueError, match="palette: expected \\[K, 3\\] for a 3-channel"):
        tp.write_image(img[:3], tmp_path / "b.png", palette=pal)


# ------------------------------------------------------------------ write_image
@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32, torch.float64])
@pytest.mark.parametrize("channels", [3, 4])
def test_write_png_round_trip(tmp_path, dtype, channels):
    img8 = torch.from_numpy(RNG.integers(0, 256, (channels, 6, 9), dtype=np.uint8))
    img = img8 if dtype == torch.uint8 else img8.to(dtype) / 255
    tp.write_image(img, tmp_path / "out.PNG")
    assert tp.read_image(tmp_path / "out.PNG").equal(img8)


@pytest.mark.parametrize("suffix", ["jpg", "jpeg"])
def test_write_jpeg(tmp_path, suffix, sample_path):
    img = tp.read_image(sample_path)
    tp.write_image(img, tmp_path / f"out.{suffix}")
    back = tp.read_image(tmp_path / f"out.{suffix}")
    assert back.shape == img.shape
    assert (back.float() - img.float()).abs().mean() < 3  # quality 95


def test_write_indexed_png(tmp_path, sample_path):
    pal = tp.parse_colors(["#000000", "#ff8800", "rebeccapurple", "#ffffff", "teal"])
    idx = torch.from_numpy(RNG.integers(0, 5, (40, 30)))
    img = pal[idx].permute(2, 0, 1)  # float [3, 40, 30], every pixel a palette colour
    tp.write_image(img, tmp_path / "p.png", palette=pal)
    with Image.open(tmp_path / "p.png") as im:
        assert im.mode == "P"
        assert len(im.getpalette()) // 3 <= 256
    assert tp.read_image(tmp_path / "p.png").equal((img * 255).round().to(torch.uint8))
    tp.write_image(img, tmp_path / "rgb.png")
    assert (tmp_path / "p.png").stat().st_size < (tmp_path / "rgb.png").stat().st_size


def test_write_indexed_png_with_alpha(tmp_path):
    pal = tp.parse_colors(["red", "blue", "lime"])
    idx = torch.from_numpy(RNG.integers(0, 3, (10, 12)))
    rgb8 = (pal[idx].permute(2, 0, 1) * 255).round().to(torch.uint8)
    alpha = torch.from_numpy(RNG.choice([0, 128, 255], (1, 10, 12)).astype(np.uint8))
    img = torch.cat([rgb8, alpha])
    tp.write_image(img, tmp_path / "pa.png", palette=pal)
    with Image.open(tmp_path / "pa.png") as im:
        assert im.mode == "P"
    assert tp.read_image(tmp_path / "pa.png").equal(img)


def test_write_errors_write_nothing(tmp_path):
    out = tmp_path / "x.png"
    img = torch.rand(3, 4, 5)
    pal = torch.rand(4, 3)
    cases = [
        (dict(image=img, path=tmp_path / "x.gif"), ValueError, r"path: expected a suffix in"),
        (dict(image=img, path=tmp_path / "x"), ValueError, r"path: expected a suffix in"),
        (dict(image=torch.rand(1, 3, 4, 5)), ValueError,
         r"image: expected shape \[3\|4, H, W\], got \[1, 3, 4, 5\]"),
        (dict(image=torch.rand(1, 4, 5)), ValueError, "expected 3|4 channels"),
        (dict(image=img * 2), ValueError, r"image: expected values in \[0, 1\]"),
        (dict(image=img.int()), TypeError, "image: expected dtype uint8 or a float dtype"),
        (dict(image=torch.rand(4, 4, 5), path=tmp_path / "x.jpg"), ValueError,
         "expected 3 channels for JPEG"),
        (dict(palette=pal, path=tmp_path / "x.jpg"), ValueError, "palette: expected None for JPEG"),
        (dict(palette=torch.rand(257, 3)), ValueError,
         r"palette: expected shape \[K, 3\] with K <= 256"),
        (dict(palette=torch.rand(2, 4, 3)), ValueError,
         r"palette: expected shape \[K, 3\] with K <= 256"),
        (dict(palette=pal * 2), ValueError, r"palette: expected values in \[0, 1\]"),
        (dict(palette=pal), ValueError, "image: expected every pixel to be a palette colour"),
    ]
    for kwargs, err, msg in cases:
        args = dict(image=img, path=out) | kwargs
        with pytest.raises(err, match=msg):
            tp.write_image(args.pop("image"), args.pop("path"), **args)
        assert list(tmp_path.iterdir()) == [], kwargs
    # too many (colour, alpha) pairs for one indexed PNG
    pal2 = torch.tensor([[0.0, 0.0, 0.0], [1.0, 1.0, 1.0]])
    rgb = torch.zeros(3, 1, 300, dtype=torch.uint8)
    rgb[:, :, 150:] = 255
    alpha = (torch.arange(300) % 256).to(torch.uint8).reshape(1, 1, 300)
    with pytest.raises(ValueError, match=r"at most 256 \(palette colour, alpha\) pairs"):
        tp.write_image(torch.cat([rgb, alpha]), out, palette=pal2)
    assert not out.exists()


# ------------------------------------------------------------------ iter_image_files
def test_iter_image_files(tmp_path):
    names = ["b/z.png", "b/a/y.JPG", "a.jpeg", "c.webp", "d.bmp", "e.tif", "f.TIFF",
             "notes.txt", "g.gif", ".hidden.png", ".git/h.png", "b/readme.md"]
    for n in names:
        (tmp_path / n).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / n).write_bytes(b"")
    got = [p.relative_to(tmp_path).as_posix() for p in iter_image_files(tmp_path)]
    assert got == ["a.jpeg", "b/a/y.JPG", "b/z.png", "c.webp", "d.bmp", "e.tif", "f.TIFF", "g.gif"]
    assert iter_image_files(str(tmp_path)) == iter_image_files(tmp_path)
    with pytest.raises(FileNotFoundError, match="nowhere"):
        iter_image_files(tmp_path / "nowhere")
    with pytest.raises(ValueError, match="root: expected a folder, got a file"):
        iter_image_files(tmp_path / "a.jpeg")


def test_read_image_from_bytes_in_memory(tmp_path):
    """``data=``: bytes already in memory (a tar member) decode as the file does; errors name
    the given path."""
    from torchpalette.io import SAMPLE

    data = SAMPLE.read_bytes()
    assert torch.equal(tp.read_image("member.jpg", data=data), tp.read_image(SAMPLE))
    with pytest.raises(ValueError, match="shard.tar:key.png"):
        tp.read_image("shard.tar:key.png", data=b"not an image")
    with pytest.raises(ValueError, match="0-byte"):
        tp.read_image("x.png", data=b"")
