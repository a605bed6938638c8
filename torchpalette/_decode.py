"""The decoders behind :func:`torchpalette.io.read_image`: bytes -> uint8 ``[3|4, H, W]``.

JPEG and PNG go through TorchCodec's ``decode_image`` where TorchCodec is installed, else
through ``torchvision.io.decode_image`` (deprecated in torchvision 0.29 for TorchCodec; its
``DeprecationWarning`` is kept from users), else through Pillow, so ``read_image`` outlives
torchvision's codecs. The mode is explicit (RGB, or RGB_ALPHA when the header says alpha): the
default mode returns palette indices for paletted PNGs and uint16 for 16-bit PNGs. Pillow
decodes what those get wrong or lack: PNG with tRNS, GIF, WebP, BMP, TIFF (16-bit and float
too), APNG, and every Pillow format ``io.IMAGE_SUFFIXES`` lists.

Animated and multi-page images (GIF, APNG, WebP, TIFF, ...) follow one rule: the first frame
is read and a ``UserWarning`` names the path and the frame count.
"""

from __future__ import annotations

import contextlib
import io as _io
import threading
import warnings

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from torch import Tensor

CODEC_FORMATS = ("PNG", "JPEG")
_bomb_lock = threading.Lock()


@contextlib.contextmanager
def quiet():
    """torchvision 0.29 deprecates its image codecs (for TorchCodec) with a DeprecationWarning on
    every call: the fallback uses them on purpose, so keep that out of users' logs."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        yield


def open_image(data: bytes) -> Image.Image:
    """``Image.open`` without Pillow's decompression-bomb check (``read_image`` checks the
    size itself, naming the path and the option). Pillow keeps its limit in a module global,
    read only inside ``open`` (which decodes nothing), so it is lifted just for that call."""
    with _bomb_lock:
        old = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = None
        try:
            return Image.open(_io.BytesIO(data))
        finally:
            Image.MAX_IMAGE_PIXELS = old


def has_alpha(im: Image.Image) -> bool:
    return im.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in im.info


def why(err: Exception) -> str:
    return "unrecognised file format" if isinstance(err, UnidentifiedImageError) else str(err)


def jpeg_truncated(data: bytes) -> bool:
    """Full decode by Pillow, which raises on truncation. Only run for JPEGs that do not end
    with the end-of-image marker (truncated, or valid with trailing data such as motion photos)."""
    try:
        with open_image(data) as im:
            im.load()
    except OSError:
        return True
    return False


def _high_depth_to_uint8(im: Image.Image) -> np.ndarray:
    """16-bit and 32-bit integer samples scale like 16-bit PNG (``round(x * 255 / 65535)``,
    32768 -> 128); float samples are taken as [0, 1] (clipped; 0.5 -> 128). -> ``[H, W]``."""
    arr = np.asarray(im)
    if arr.dtype.kind == "f":
        return np.round(np.clip(np.nan_to_num(arr, nan=0.0), 0.0, 1.0) * 255.0).astype(np.uint8)
    x = np.clip(arr.astype(np.int64), 0, 65535)
    return ((x * 255 + 32767) // 65535).astype(np.uint8)


def first_frame_note(path: str, frames: int) -> None:
    if frames > 1:
        warnings.warn(f"{path}: animated or multi-page image of {frames} frames: read the "
                      f"first frame only", UserWarning, stacklevel=3)


def pillow_decode(data: bytes, path: str) -> Tensor:
    """Pillow, first frame, EXIF orientation applied, transparency (tRNS, GIF's transparent
    index) as alpha; 16-bit and float samples scaled to 8 bits."""
    try:
        with open_image(data) as im:
            im.seek(0)
            im = ImageOps.exif_transpose(im)
            if im.mode in ("I", "F") or im.mode.startswith("I;16"):
                grey = _high_depth_to_uint8(im)
                return torch.from_numpy(grey).unsqueeze(0).expand(3, -1, -1).contiguous()
            im = im.convert("RGBA" if has_alpha(im) else "RGB")
            arr = torch.frombuffer(bytearray(im.tobytes()), dtype=torch.uint8)
            return arr.reshape(im.height, im.width, len(im.mode)).permute(2, 0, 1).contiguous()
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError) as err:
        raise ValueError(f"{path}: not a readable image ({why(err)})") from None


def _codec():
    """``(decode_image, rgb_mode, rgba_mode)`` of TorchCodec, else of torchvision.io, else
    None (Pillow then decodes everything)."""
    try:
        from torchcodec.decoders import decode_image

        return decode_image, "RGB", "RGBA"
    except ImportError:
        pass
    try:
        with quiet():
            from torchvision.io import ImageReadMode, decode_image
    except ImportError:
        return None
    return decode_image, ImageReadMode.RGB, ImageReadMode.RGB_ALPHA


def codec_decode(data: bytes, path: str, alpha: bool) -> Tensor:
    """A single-frame PNG or JPEG through TorchCodec or torchvision (Pillow without either)."""
    codec = _codec()
    if codec is None:
        return pillow_decode(data, path)
    decode, rgb, rgba = codec
    try:
        with quiet():
            image = decode(torch.frombuffer(bytearray(data), dtype=torch.uint8),
                           mode=rgba if alpha else rgb, apply_exif_orientation=True)
    except RuntimeError as err:
        raise ValueError(f"{path}: not a readable image ({err})") from None
    if image.ndim == 4:  # [frames, C, H, W]: the header said one frame, keep the first
        image = image[0]
    if image.dtype == torch.uint16:  # 16-bit PNG: round 0..65535 to 0..255
        image = ((image.to(torch.int32) * 255 + 32767) // 65535).to(torch.uint8)
    return image
