"""Batched JPEG decoding on any device, with the EXIF orientation applied on every device.

``torchvision.io.decode_jpeg`` applies the EXIF orientation on the CPU only: its CUDA decoder
(nvJPEG) ignores ``apply_exif_orientation``, so a photo taken in portrait would come out
sideways. Here the orientation tag is read from the file's bytes on the CPU (the markers
before the image data only, a few microseconds) and applied to the decoded tensor wherever
it lives, the same way on every device.

References:
    CIPA DC-008 (Exif 2.3), tag 0x0112 Orientation. ITU T.81 (JPEG markers).
"""

from __future__ import annotations

import warnings
from typing import Any, Literal

import torch
from torch import Tensor

__all__ = ["decode_jpegs", "jpeg_orientation", "orient"]

_ORIENTATION = 0x0112


def jpeg_orientation(data: bytes | Tensor) -> int:
    """EXIF orientation (1..8) of a JPEG file's bytes (or a uint8 CPU tensor of them); 1 where
    the file has none or it cannot be read. Only the markers before the image data are read."""
    buf: Any = data.numpy() if isinstance(data, Tensor) else data  # no copy of the file
    mv = memoryview(buf).cast("B")
    if bytes(mv[:2]) != b"\xff\xd8":
        return 1
    i, n = 2, len(mv)
    while i + 4 <= n:
        if mv[i] != 0xFF:
            return 1
        marker = mv[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in (0xD9, 0xDA):  # end of image / start of scan: no EXIF before the data
            return 1
        if 0xD0 <= marker <= 0xD7 or marker == 0x01:  # markers without a length
            i += 2
            continue
        length = int.from_bytes(mv[i + 2 : i + 4], "big")
        if marker == 0xE1 and bytes(mv[i + 4 : i + 10]) == b"Exif\0\0":
            return _tiff_orientation(bytes(mv[i + 10 : i + 2 + length]))
        i += 2 + length
    return 1


def _tiff_orientation(tiff: bytes) -> int:
    """The Orientation entry of the first IFD of an EXIF TIFF block; 1 if absent or bad."""
    if len(tiff) < 8 or tiff[:2] not in (b"II", b"MM"):
        return 1
    order: Literal["little", "big"] = "little" if tiff[:2] == b"II" else "big"
    ifd = int.from_bytes(tiff[4:8], order)
    if ifd + 2 > len(tiff):
        return 1
    for e in range(int.from_bytes(tiff[ifd : ifd + 2], order)):
        p = ifd + 2 + 12 * e
        if p + 12 > len(tiff):
            break
        if int.from_bytes(tiff[p : p + 2], order) == _ORIENTATION:  # a SHORT, left-justified
            value = int.from_bytes(tiff[p + 8 : p + 10], order)
            return value if 1 <= value <= 8 else 1
    return 1


def orient(image: Tensor, orientation: int) -> Tensor:
    """Apply an EXIF ``orientation`` (1..8) to ``image [..., C, H, W]``: the picture as it
    should be displayed (what Pillow's ``ImageOps.exif_transpose`` gives)."""
    h, w = -2, -1
    if orientation == 2:
        return image.flip(w)
    if orientation == 3:
        return image.flip(h, w)
    if orientation == 4:
        return image.flip(h)
    if orientation == 5:  # transpose
        return image.transpose(h, w)
    if orientation == 6:  # rotate 90 degrees clockwise
        return image.flip(h).transpose(h, w)
    if orientation == 7:  # transverse
        return image.flip(h, w).transpose(h, w)
    if orientation == 8:  # rotate 90 degrees counter-clockwise
        return image.flip(w).transpose(h, w)
    return image


def decode_jpegs(data: list[Tensor], device: torch.device | str = "cpu") -> list[Tensor]:
    """Decode JPEG files (their bytes as uint8 CPU tensors ``[L]``) on ``device`` in one
    batched call -> uint8 RGB images ``[3, H, W]`` on ``device``, EXIF orientation applied.

    Raises:
        RuntimeError: a file the decoder rejects (the whole batch fails; decode files alone to
            find it).
    """
    from torchvision.io import ImageReadMode, decode_jpeg

    with warnings.catch_warnings():  # torchvision 0.29 deprecates its codecs on every call
        warnings.filterwarnings("ignore", category=DeprecationWarning, module="torchvision")
        images = decode_jpeg(data, mode=ImageReadMode.RGB, device=device,
                             apply_exif_orientation=False)  # applied below, on every device
    return [orient(img, jpeg_orientation(d)).contiguous()
            for img, d in zip(images, data, strict=True)]
