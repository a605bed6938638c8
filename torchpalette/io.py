"""Image files <-> uint8 tensors ``[3|4, H, W]``, and walking a folder of images.

Decoding goes through ``torchvision.io.decode_image`` with an explicit mode: in its default mode
it returns palette *indices* for paletted PNGs and uint16 for 16-bit PNGs, so we ask for
``ImageReadMode.RGB`` (or ``RGB_ALPHA`` when the file has transparency, found from the header
by Pillow without decoding) and scale 16-bit samples to 8 bits with rounding. EXIF orientation
is applied. Formats torchvision cannot decode (BMP, TIFF) go through Pillow. Every failure names
the path: ``FileNotFoundError`` for a missing file, ``ValueError`` for an empty, truncated or
non-image file.

Encoding: PNG (``encode_png``, 3 channels), JPEG (``encode_jpeg``, quality 95, no alpha), and
through Pillow the cases ``encode_png`` rejects: RGBA PNGs and indexed PNGs (mode "P") written
from a palette. The whole file is encoded in memory before the path is opened, so a bad
argument never leaves a half-written file (writing atomically is the caller's job).
"""

from __future__ import annotations

import contextlib
import io as _io
import os
import warnings
from pathlib import Path

import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from torch import Tensor
from torchvision.io import ImageReadMode, decode_image, encode_jpeg, encode_png

from . import _validate as v
from ._image import float_to_uint8

__all__ = ["read_image", "write_image", "iter_image_files", "IMAGE_SUFFIXES"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")
WRITE_SUFFIXES = (".png", ".jpg", ".jpeg")
JPEG_QUALITY = 95


@contextlib.contextmanager
def _tv_quiet():
    """torchvision 0.29 deprecates its image codecs (for TorchCodec) with a DeprecationWarning on
    every call; the DESIGN uses them on purpose, so keep that out of users' logs."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning, module="torchvision")
        yield


def _has_alpha(im: Image.Image) -> bool:
    return im.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in im.info


def _why(err: Exception) -> str:
    return "unrecognised file format" if isinstance(err, UnidentifiedImageError) else str(err)


def _jpeg_truncated(data: bytes) -> bool:
    """Full decode by Pillow, which raises on truncation. Only run for JPEGs that do not end
    with the end-of-image marker (truncated, or valid with trailing data such as motion photos)."""
    try:
        with Image.open(_io.BytesIO(data)) as im:
            im.load()
    except OSError:
        return True
    return False


def _pillow_decode(data: bytes, path: str) -> Tensor:
    """Fallback decoder for formats torchvision lacks (BMP, TIFF): Pillow, EXIF applied."""
    try:
        with Image.open(_io.BytesIO(data)) as im:
            im = ImageOps.exif_transpose(im)
            im = im.convert("RGBA" if _has_alpha(im) else "RGB")
            arr = torch.frombuffer(bytearray(im.tobytes()), dtype=torch.uint8)
            return arr.reshape(im.height, im.width, len(im.mode)).permute(2, 0, 1).contiguous()
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as err:
        raise ValueError(f"{path}: not a readable image ({_why(err)})") from None


def read_image(path: str | os.PathLike) -> Tensor:
    """Read an image file as a uint8 tensor ``[3, H, W]`` (RGB) or ``[4, H, W]`` (RGBA).

    Grey and paletted images become RGB (RGBA when they carry transparency), 16-bit samples
    become 8-bit (rounded), and the EXIF orientation is applied. PNG, JPEG, WebP through
    ``torchvision.io.decode_image``; BMP and TIFF through Pillow.

    Args:
        path: the image file.

    Returns:
        ``[3|4, H, W]`` uint8, on the CPU.

    Raises:
        FileNotFoundError: the path does not exist.
        ValueError: a directory, an empty, truncated or non-image file, or an animation with
            more than one frame. The message starts with the path.

    Example:
        >>> import torchpalette as tp
        >>> from torchpalette.io import SAMPLE
        >>> tp.read_image(SAMPLE).shape
        torch.Size([3, 512, 512])
    """
    name = os.fspath(path)
    p = Path(name)
    if not p.exists():
        raise FileNotFoundError(f"{name}: no such file")
    if not p.is_file():
        raise ValueError(f"{name}: expected an image file, got a directory or special file")
    data = p.read_bytes()
    if not data:
        raise ValueError(f"{name}: expected an image file, got an empty (0-byte) file")
    try:
        with Image.open(_io.BytesIO(data)) as im:
            alpha, fmt = _has_alpha(im), im.format
            im.verify()  # cheap structural check (PNG CRCs, truncation at the chunk level)
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as err:
        raise ValueError(f"{name}: not a readable image ({_why(err)})") from None
    if fmt not in ("PNG", "JPEG", "WEBP", "GIF"):
        return _pillow_decode(data, name)
    if fmt == "JPEG" and not data.rstrip(b"\0").endswith(b"\xff\xd9") and _jpeg_truncated(data):
        # libjpeg only warns on a truncated JPEG and fills the rest with grey: refuse instead
        raise ValueError(f"{name}: truncated JPEG (image data ends early)")
    mode = ImageReadMode.RGB_ALPHA if alpha else ImageReadMode.RGB
    try:
        with _tv_quiet():
            image = decode_image(
                torch.frombuffer(bytearray(data), dtype=torch.uint8),
                mode=mode,
                apply_exif_orientation=True,
            )
    except RuntimeError as err:
        raise ValueError(f"{name}: not a readable image ({err})") from None
    if image.ndim == 4:  # animated GIF/WebP: [frames, C, H, W]
        if image.shape[0] != 1:
            raise ValueError(
                f"{name}: expected a single image, got an animation of {image.shape[0]} frames"
            )
        image = image[0]
    if image.dtype == torch.uint16:  # 16-bit PNG: round 0..65535 to 0..255
        image = ((image.to(torch.int32) * 255 + 32767) // 65535).to(torch.uint8)
    return image


def _palette_png(rgb: Tensor, alpha: Tensor | None, palette: Tensor) -> Image.Image:
    """uint8 image ``[3, H, W]`` whose pixels are all palette colours -> Pillow "P" image."""
    pal8 = float_to_uint8(palette.detach().cpu()).to(torch.int64)  # [K, 3]
    pal_key = pal8[:, 0] << 16 | pal8[:, 1] << 8 | pal8[:, 2]
    px = rgb.to(torch.int64)
    key = (px[0] << 16 | px[1] << 8 | px[2]).flatten()
    sorted_key, order = torch.sort(pal_key, stable=True)  # stable: first entry wins duplicates
    pos = torch.searchsorted(sorted_key, key).clamp_max(len(sorted_key) - 1)
    missing = sorted_key[pos] != key
    if bool(missing.any()):
        bad = int(key[missing.nonzero()[0, 0]])
        raise ValueError(
            f"image: expected every pixel to be a palette colour (apply_palette first), got "
            f"{int(missing.sum())} pixels that are not, e.g. #{bad:06x}"
        )
    index = order[pos]  # [H*W] palette index of each pixel
    colors = pal8
    if alpha is not None:  # one entry per (colour, alpha) pair actually used
        pairs, index = torch.unique(index * 256 + alpha.flatten().to(torch.int64), return_inverse=True)
        if len(pairs) > 256:
            raise ValueError(
                f"image: expected at most 256 (palette colour, alpha) pairs for an indexed PNG, "
                f"got {len(pairs)}"
            )
        colors = torch.cat([pal8[pairs // 256], (pairs % 256)[:, None]], dim=1)
    h, w = rgb.shape[-2:]
    im = Image.frombytes("P", (w, h), index.to(torch.uint8).numpy().tobytes())
    raw = colors.to(torch.uint8).numpy().tobytes()
    im.putpalette(raw, rawmode="RGBA" if alpha is not None else "RGB")
    return im


def write_image(image: Tensor, path: str | os.PathLike, *, palette: Tensor | None = None) -> None:
    """Write an image ``[3|4, H, W]`` to a PNG or JPEG file, chosen by the suffix.

    Args:
        image: ``[3|4, H, W]`` uint8, or float in [0, 1] (rounded to uint8). 4 channels (RGBA)
            only for PNG.
        path: destination ending in ``.png``, ``.jpg`` or ``.jpeg`` (any case); its folder must
            exist. An existing file is replaced.
        palette: optional ``[K, 3]`` float sRGB, K <= 256, PNG only: write an indexed PNG
            (Pillow mode "P"), each pixel stored as the index of its exact palette colour. With
            alpha, the palette holds each used (colour, alpha) pair (PNG tRNS). Every pixel,
            rounded to uint8, must equal a palette colour rounded to uint8.

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
        if jpeg:
            raise ValueError(f"palette: expected None for JPEG, got a palette (use .png): {name!r}")
        v.check_colors(palette, "palette", min_ndim=2)
        if palette.ndim != 2 or palette.shape[0] > 256:
            raise ValueError(
                f"palette: expected shape [K, 3] with K <= 256, got {v.shape_str(palette.shape)}"
            )
    img8 = image.detach().cpu()
    img8 = img8 if img8.dtype == torch.uint8 else float_to_uint8(img8)  # as apply_palette
    rgb, alpha = img8[:3], (img8[3] if img8.shape[0] == 4 else None)
    if palette is not None:
        buf = _io.BytesIO()
        _palette_png(rgb, alpha, palette).save(buf, format="PNG", optimize=True)
        data = buf.getvalue()
    elif alpha is not None:
        buf = _io.BytesIO()
        Image.fromarray(img8.permute(1, 2, 0).contiguous().numpy(), "RGBA").save(buf, format="PNG")
        data = buf.getvalue()
    elif jpeg:
        with _tv_quiet():
            data = encode_jpeg(rgb.contiguous(), quality=JPEG_QUALITY).numpy().tobytes()
    else:
        with _tv_quiet():
            data = encode_png(rgb.contiguous()).numpy().tobytes()
    with open(name, "wb") as f:
        f.write(data)


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
