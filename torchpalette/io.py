"""Image files <-> uint8 tensors ``[3|4, H, W]``, and walking a folder of images.

Decoding (:mod:`torchpalette._decode`): JPEG and PNG through TorchCodec where installed, else
torchvision's deprecated decoders (their warning kept from users), else Pillow; Pillow for PNGs
with a tRNS chunk (colour-key or palette transparency), GIF (its transparent index), WebP (whose
EXIF orientation torchvision ignores), BMP, TIFF (16-bit and float too, scaled like 16-bit PNG:
32768 -> 128, float 0.5 -> 128), APNG, and the other formats of ``IMAGE_SUFFIXES`` that Pillow
reads (PNM, TGA, ICO, PSD, JPEG 2000, QOI, AVIF where built in). EXIF orientation is applied
everywhere. Animated and multi-page images (GIF, APNG, WebP, TIFF alike): the first frame, with
a ``UserWarning`` naming the path and the frame count. Images over ``max_pixels`` (Pillow's
decompression-bomb limit by default) are refused before decoding. Every failure names the path:
``FileNotFoundError`` for a missing file, ``ValueError`` for an empty, truncated, oversized or
non-image file.

Encoding: PNG (``encode_png``, 3 channels), JPEG (``encode_jpeg``, quality 95, no alpha), and
through Pillow the cases ``encode_png`` rejects (and everything, where torchvision's encoders are
gone): RGBA PNGs and indexed PNGs (mode "P") written from a palette, at the smallest bit depth
that holds the palette (1, 2, 4 or 8) and zlib level ``PNG_LEVEL`` (``optimize=True`` for
Pillow's slow, smallest search). The whole file is encoded in memory before the path is opened,
so a bad argument never leaves a half-written file (writing atomically is the caller's job).
torchvision is imported on first use only: its import pulls in ``torch._dynamo``, seconds that
a command which never decodes should not pay.
"""

from __future__ import annotations

import io as _io
import os
from pathlib import Path

import torch
from PIL import Image, UnidentifiedImageError, features
from torch import Tensor

from . import _decode
from . import _validate as v
from ._image import float_to_uint8
from ._jpeg import decode_jpegs  # batched (GPU) JPEG decoding, EXIF orientation applied

__all__ = ["read_image", "write_image", "encode_indexed_png", "iter_image_files",
           "decode_jpegs", "IMAGE_SUFFIXES", "PNG_LEVEL", "MAX_PIXELS"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff", ".gif", ".ppm",
                  ".pgm", ".pbm", ".pnm", ".tga", ".ico", ".psd", ".qoi", ".jp2", ".j2k") + (
                  (".avif",) if features.check("avif") else ())
"""Suffixes ``read_image`` decodes (any case); Pillow's optional AVIF where it is built in."""
WRITE_SUFFIXES = (".png", ".jpg", ".jpeg")
JPEG_QUALITY = 95
PNG_LEVEL = 4
"""zlib level of indexed PNGs: the knee of time vs size on 512x512 16-colour photos (see
benchmarks/RESULTS.md): about 2x faster than level 6 for ~2% more bytes; 9 is 20x slower."""
MAX_PIXELS: int = Image.MAX_IMAGE_PIXELS or 89_478_485
"""Default pixel limit of ``read_image``: Pillow's decompression-bomb threshold."""


def read_image(path: str | os.PathLike, *, max_pixels: int | None = MAX_PIXELS,
               data: bytes | None = None) -> Tensor:
    """Read an image file as a uint8 tensor ``[3, H, W]`` (RGB) or ``[4, H, W]`` (RGBA).

    Grey and paletted images become RGB (RGBA when they carry transparency: an alpha channel,
    a PNG tRNS colour key or palette entry, a GIF transparent index), 16-bit and float samples
    become 8-bit (``round(x * 255 / 65535)`` for 16-bit, ``round(255 x)`` for float in [0, 1]),
    and the EXIF orientation is applied (JPEG, PNG, WebP, TIFF). Of an animated or multi-page
    image, the first frame (with a ``UserWarning``).

    Args:
        path: the image file (with ``data``: only its name, for messages).
        data: the file's bytes, when already in memory (a member of a tar shard, a Parquet cell).
        max_pixels: refuse images of more pixels (width x height) than this, before decoding;
            None for no limit. Default: Pillow's decompression-bomb limit (~89.5 MP).

    Returns:
        ``[3|4, H, W]`` uint8, on the CPU.

    Raises:
        FileNotFoundError: the path does not exist.
        ValueError: a directory, an empty, truncated, non-image or oversized file. The message
            starts with the path.

    Example:
        >>> import torchpalette as tp
        >>> from torchpalette.io import SAMPLE
        >>> tp.read_image(SAMPLE).shape
        torch.Size([3, 512, 512])
    """
    name, p = os.fspath(path), Path(path)
    if data is None and not p.exists():
        raise FileNotFoundError(f"{name}: no such file")
    if data is None and not p.is_file():
        raise ValueError(f"{name}: expected an image file, got a directory or special file")
    data = p.read_bytes() if data is None else bytes(data)
    if not data:
        raise ValueError(f"{name}: expected an image file, got an empty (0-byte) file")
    try:
        with _decode.open_image(data) as im:
            alpha, fmt, trns = _decode.has_alpha(im), im.format, "transparency" in im.info
            (w, h), frames = im.size, getattr(im, "n_frames", 1)
            im.verify()  # cheap structural check (PNG CRCs, truncation at the chunk level)
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as err:
        raise ValueError(f"{name}: not a readable image ({_decode.why(err)})") from None
    if max_pixels is not None and w * h > max_pixels:
        raise ValueError(f"{name}: image of {w} x {h} = {w * h:,} pixels, over the limit of "
                         f"{max_pixels:,} (a decompression bomb?); raise max_pixels "
                         f"(--max-pixels in the command line) to allow it")
    _decode.first_frame_note(name, frames)
    if fmt not in _decode.CODEC_FORMATS or trns or frames > 1:
        return _decode.pillow_decode(data, name)
    if fmt == "JPEG" and not data.rstrip(b"\0").endswith(b"\xff\xd9") and \
            _decode.jpeg_truncated(data):
        # libjpeg only warns on a truncated JPEG and fills the rest with grey: refuse instead
        raise ValueError(f"{name}: truncated JPEG (image data ends early)")
    return _decode.codec_decode(data, name, alpha)


def png_bits(k: int) -> int:
    """The smallest PNG bit depth (1, 2, 4 or 8) whose indices address ``k`` palette entries."""
    return next(b for b in (1, 2, 4, 8) if k <= 1 << b)


def encode_indexed_png(indices: Tensor, palette: Tensor, *, optimize: bool = False) -> bytes:
    """Encode palette indices as an indexed PNG (mode "P") in memory.

    Args:
        indices: ``[H, W]`` integer indices into ``palette``.
        palette: ``[K, 3]`` (RGB) or ``[K, 4]`` (RGBA, written with a tRNS chunk), uint8 or float
            in [0, 1] (rounded), 1 <= K <= 256.
        optimize: Pillow's ``optimize=True`` (zlib level 9 and a search): the smallest files,
            ~20x slower than the default level ``PNG_LEVEL``.

    Returns:
        The PNG file's bytes, at bit depth ``png_bits(K)``.

    Raises:
        TypeError: ``indices`` not an integer tensor.
        ValueError: wrong shapes, K out of range, or an index >= K.

    Example:
        >>> import torch
        >>> pal = torch.tensor([[1.0, 0, 0, 1], [0, 0, 0, 0]])
        >>> data = encode_indexed_png(torch.tensor([[0, 1]]), pal)
        >>> data[:8] == b"\\x89PNG\\r\\n\\x1a\\n", data[24]  # bit depth 1
        (True, 1)
    """
    if not isinstance(indices, Tensor) or indices.dtype.is_floating_point or indices.ndim != 2:
        raise TypeError(f"indices: expected an integer tensor [H, W], got {_describe(indices)}")
    if not isinstance(palette, Tensor) or palette.ndim != 2 or palette.shape[1] not in (3, 4) \
            or not 1 <= palette.shape[0] <= 256:
        raise ValueError(f"palette: expected shape [K, 3|4] with 1 <= K <= 256, got "
                         f"{_describe(palette)}")
    pal8 = palette.detach().cpu()
    pal8 = pal8 if pal8.dtype == torch.uint8 else float_to_uint8(pal8)
    k = pal8.shape[0]
    idx = indices.detach().cpu()
    if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= k):
        raise ValueError(f"indices: expected values in [0, {k - 1}], got "
                         f"[{int(idx.min())}, {int(idx.max())}]")
    h, w = idx.shape
    im = Image.frombytes("P", (w, h), idx.to(torch.uint8).contiguous().numpy().tobytes())
    im.putpalette(pal8.contiguous().numpy().tobytes(),
                  rawmode="RGBA" if pal8.shape[1] == 4 else "RGB")
    buf = _io.BytesIO()
    opts = {"optimize": True} if optimize else {"compress_level": PNG_LEVEL}
    im.save(buf, format="PNG", bits=png_bits(k), **opts)
    return buf.getvalue()


def _describe(x: object) -> str:
    return f"{x.dtype} {v.shape_str(x.shape)}" if isinstance(x, Tensor) else type(x).__name__


def _palette_indices(img8: Tensor, palette: Tensor) -> tuple[Tensor, Tensor]:
    """uint8 image ``[3|4, H, W]`` whose pixels are all palette entries -> (indices ``[H, W]``,
    uint8 palette ``[K', 3|4]``). A ``[K, 4]`` palette is matched on RGBA; a ``[K, 3]`` one on
    RGB, and with an RGBA image each used (colour, alpha) pair becomes one entry."""
    pal8 = float_to_uint8(palette.detach().cpu()).to(torch.int64)  # [K, 3|4]
    rgba_pal = pal8.shape[1] == 4
    chans = img8[:4] if rgba_pal else img8[:3]
    px = chans.to(torch.int64).flatten(1)

    def pack(c: Tensor) -> Tensor:  # [C, N] -> [N] one integer per colour
        key = c[0]
        for row in c[1:]:
            key = key << 8 | row
        return key

    key, pal_key = pack(px), pack(pal8.T)
    sorted_key, order = torch.sort(pal_key, stable=True)  # stable: first entry wins duplicates
    pos = torch.searchsorted(sorted_key, key).clamp_max(len(sorted_key) - 1)
    missing = sorted_key[pos] != key
    if bool(missing.any()):
        bad = int(key[missing.nonzero()[0, 0]])
        raise ValueError(
            f"image: expected every pixel to be a palette colour (apply_palette first), got "
            f"{int(missing.sum())} pixels that are not, e.g. #{bad:0{2 * len(chans)}x}"
        )
    index = order[pos]  # [H*W] palette index of each pixel
    colors = pal8
    if img8.shape[0] == 4 and not rgba_pal:  # one entry per (colour, alpha) pair actually used
        pairs, index = torch.unique(index * 256 + img8[3].flatten().to(torch.int64),
                                    return_inverse=True)
        if len(pairs) > 256:
            raise ValueError(
                f"image: expected at most 256 (palette colour, alpha) pairs for an indexed PNG, "
                f"got {len(pairs)}; quantize with a [K, 4] palette that carries alpha"
            )
        colors = torch.cat([pal8[pairs // 256], (pairs % 256)[:, None]], dim=1)
    return index.reshape(img8.shape[-2:]), colors.to(torch.uint8)


def write_image(image: Tensor, path: str | os.PathLike, *, palette: Tensor | None = None,
                optimize: bool = False) -> None:
    """Write an image ``[3|4, H, W]`` to a PNG or JPEG file, chosen by the suffix.

    Args:
        image: ``[3|4, H, W]`` uint8, or float in [0, 1] (rounded to uint8). 4 channels (RGBA)
            only for PNG.
        path: destination ending in ``.png``, ``.jpg`` or ``.jpeg`` (any case); its folder must
            exist. An existing file is replaced.
        palette: optional ``[K, 3]`` or ``[K, 4]`` float sRGB(A) in [0, 1], K <= 256, PNG only:
            write an indexed PNG (mode "P", bit depth 1, 2, 4 or 8 as K needs), each pixel
            stored as the index of its exact palette entry (rounded to uint8). A ``[K, 4]``
            palette carries alpha (written as PNG tRNS) and needs a 4-channel image; with a
            ``[K, 3]`` palette and an RGBA image, each used (colour, alpha) pair becomes one
            entry (at most 256).
        optimize: indexed PNG only: the smallest file (Pillow's ``optimize``), ~20x slower.

    Raises:
        TypeError: ``image``/``palette`` not tensors or of a wrong dtype.
        ValueError: wrong shape, NaN, values out of range, an unsupported suffix, alpha or a
            palette with JPEG, K > 256, or pixels not in the palette. Raised before the file is
            opened, so nothing is written.

    Example:
        >>> import tempfile, pathlib, torch, torchpalette as tp
        >>> pal = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
        >>> img = pal[torch.tensor([[0, 1], [1, 0]])].permute(2, 0, 1)  # [3, 2, 2]
        >>> out = pathlib.Path(tempfile.mkdtemp()) / "tiny.png"
        >>> tp.write_image(img, out, palette=pal)
        >>> torch.equal(tp.read_image(out), (img * 255).to(torch.uint8))
        True
    """
    v.check_image(image, "image")
    if image.ndim != 3:
        raise ValueError(f"image: expected shape [3|4, H, W], got {v.shape_str(image.shape)}")
    name = os.fspath(path)
    suffix = Path(name).suffix.lower()
    if suffix not in WRITE_SUFFIXES:
        raise ValueError(f"path: expected a suffix in {list(WRITE_SUFFIXES)}, got {name!r}")
    jpeg = suffix != ".png"
    if jpeg and image.shape[0] == 4:
        raise ValueError("image: expected 3 channels for JPEG (no alpha), got 4; use .png")
    if palette is not None:
        _check_palette(palette, image, name, jpeg)
    img8 = image.detach().cpu()
    img8 = img8 if img8.dtype == torch.uint8 else float_to_uint8(img8)  # as apply_palette
    if palette is not None:
        data = encode_indexed_png(*_palette_indices(img8, palette), optimize=optimize)
    elif img8.shape[0] == 4:
        buf = _io.BytesIO()
        Image.fromarray(img8.permute(1, 2, 0).contiguous().numpy(), "RGBA").save(buf, format="PNG")
        data = buf.getvalue()
    else:
        data = _encode_rgb(img8.contiguous(), jpeg)
    with open(name, "wb") as f:
        f.write(data)


def _encode_rgb(rgb: Tensor, jpeg: bool) -> bytes:
    """RGB ``[3, H, W]`` uint8 as JPEG or PNG: torchvision's encoders, Pillow without them."""
    try:
        with _decode.quiet():
            from torchvision.io import encode_jpeg, encode_png
    except ImportError:
        buf = _io.BytesIO()
        im = Image.fromarray(rgb.permute(1, 2, 0).numpy(), "RGB")
        im.save(buf, format="JPEG", quality=JPEG_QUALITY) if jpeg else im.save(buf, format="PNG")
        return buf.getvalue()
    with _decode.quiet():
        data = encode_jpeg(rgb, quality=JPEG_QUALITY) if jpeg else encode_png(rgb)
    return data.numpy().tobytes()


def _check_palette(palette: Tensor, image: Tensor, name: str, jpeg: bool) -> None:
    if jpeg:
        raise ValueError(f"palette: expected None for JPEG, got a palette (use .png): {name!r}")
    if isinstance(palette, Tensor) and palette.ndim == 2 and palette.shape[-1] == 4:
        v.check_colors(palette[:, :3], "palette", min_ndim=2)
        v.check_colors(palette[:, 1:], "palette", min_ndim=2)  # alpha: same range check
        if image.shape[0] != 4:
            raise ValueError(f"palette: expected [K, 3] for a 3-channel image, got "
                             f"{v.shape_str(palette.shape)} (alpha entries need RGBA)")
    else:
        v.check_colors(palette, "palette", min_ndim=2)
    if palette.ndim != 2 or palette.shape[0] > 256:
        raise ValueError(
            f"palette: expected shape [K, 3] with K <= 256, got {v.shape_str(palette.shape)}"
        )


def iter_image_files(root: str | os.PathLike) -> list[Path]:
    """Every image file under a folder, recursively, in a deterministic order.

    Args:
        root: the folder to walk.

    Returns:
        Paths (``root / relative``) of files whose suffix is in ``IMAGE_SUFFIXES`` (any case),
        sorted by their relative POSIX path; hidden files and folders (names starting with ".")
        are skipped.

    Raises:
        FileNotFoundError: ``root`` does not exist.
        ValueError: ``root`` is not a folder.

    Example:
        >>> import tempfile, pathlib
        >>> root = pathlib.Path(tempfile.mkdtemp())
        >>> for name in ["b/x.PNG", "a.jpg", "notes.txt"]:
        ...     (root / name).parent.mkdir(parents=True, exist_ok=True)
        ...     (root / name).touch()
        >>> [p.relative_to(root).as_posix() for p in iter_image_files(root)]
        ['a.jpg', 'b/x.PNG']
    """
    base = Path(os.fspath(root))
    if not base.exists():
        raise FileNotFoundError(f"{base}: no such folder")
    if not base.is_dir():
        raise ValueError(f"root: expected a folder, got a file: {base}")
    found = []
    for dirpath, dirnames, filenames in os.walk(base):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        rel = Path(dirpath).relative_to(base)
        for f in filenames:
            if not f.startswith(".") and Path(f).suffix.lower() in IMAGE_SUFFIXES:
                found.append(rel / f)
    return [base / r for r in sorted(found, key=lambda r: r.as_posix())]


SAMPLE = Path(__file__).parent / "data" / "astronaut.jpg"
"""The bundled sample photo (512 x 512 JPEG)."""
