"""Writers of ``torchpalette quantize --format tokens|npy``: palette indices as training data.

``tokens``: WebDataset tar shards. Per sample ``<key>.idx.npy`` (``[H, W]``, uint8 when the
palette has at most 256 entries, else uint16), ``<key>.json`` (``{"torchpalette": {"source",
"size", "palette", "palette_id"}}``, merged into the source sample's own JSON object when it
has one) and, without a dataset palette, ``<key>.palette.npy`` (``[K, 3|4]`` uint8, the sample's
own palette, RGBA where the image has transparency). Other members of a WebDataset sample pass
through byte for byte. A dataset palette (``--palette``, ``--fit-palette``) is written once as
``palette.npy`` (``[K, 3]`` uint8 sRGB in the fixed index order) and ``palette.json`` (hex
colours, space, K, seed, library version). Decoding is ``palette[indices]``: the pixels of the
PNG mirror for the same options (palettes are rounded to 8 bits by the same rule).

Each shard is written under ``DST/.torchpalette/`` and renamed into DST once complete (``fsync``
first), so a reader never sees a partial shard; a shard past ``max_count`` samples or
``max_bytes`` continues in ``<name>_1.tar``, ``<name>_2.tar``... Tar headers carry no time or
owner, so the same samples give the same bytes on any run, rank count or machine.

``npy``: ImageGPT's layout for same-size images: ``indices.npy`` ``[N, H, W]`` (memory-mappable
with ``np.load(mmap_mode="r")``), ``keys.json`` (key and source of each row) and ``palette.npy``
``[K, 3]`` or per image ``palettes.npy`` ``[N, K, 3]`` (uint8); written by
:class:`~torchpalette.cli.tokens_sink.NpySink` (a part per rank) and joined in sample order.
"""

from __future__ import annotations

import hashlib
import io as _io
import json
import os
import tarfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

import torchpalette as tp

from .dstdir import HIDDEN, temp_path, write_atomic


def palette_u8(palette: Tensor) -> np.ndarray:
    """Float palette ``[K, C]`` in [0, 1] -> uint8 ``round(255 x)`` half to even, in float64:
    the rule of the indexed PNG entries, so token and PNG pixels agree."""
    return (palette.detach().cpu().double() * 255).round().clamp(0, 255).to(torch.uint8).numpy()


def index_dtype(k: int) -> np.dtype:
    """uint8 for palettes of at most 256 entries, uint16 up to 65,536."""
    return np.dtype(np.uint8 if k <= 256 else np.uint16)


def npy_bytes(array: np.ndarray) -> bytes:
    buf = _io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    return buf.getvalue()


def palette_id(pal8: np.ndarray) -> str:
    """A short content digest of a uint8 palette ``[K, C]``."""
    return hashlib.sha256(pal8.tobytes() + str(pal8.shape).encode()).hexdigest()[:16]


def write_dataset_palette(dst: Path, palette: Tensor, info: dict[str, Any]) -> str:
    """``palette.npy`` (uint8 ``[K, 3]``) and ``palette.json`` into ``dst``; returns its id."""
    pal8 = palette_u8(palette[:, :3])
    pid = palette_id(pal8)
    meta = {"colors": [f"#{r:02x}{g:02x}{b:02x}" for r, g, b in pal8.tolist()],
            "k": int(pal8.shape[0]), "palette_id": pid, "index_dtype": str(index_dtype(len(pal8))),
            "library_version": tp.__version__, **info}
    tmp = dst / HIDDEN / "tmp"
    write_atomic(npy_bytes(pal8), dst / "palette.npy", tmp)
    write_atomic(json.dumps(meta, indent=1).encode(), dst / "palette.json", tmp)
    return pid


def sample_members(key: str, rel: str, indices: Tensor, palette: Tensor, *,
                   dataset_pid: str | None, k: int, extras: dict[str, bytes],
                   fields: dict[str, Any]) -> list[tuple[str, bytes]]:
    """The tar members of one sample: indices ``[H, W]`` into ``palette`` ``[K', 3|4]``. The
    dataset palette (id ``dataset_pid``) is used unless this sample needed its own (RGBA
    entries added to a fixed palette); ``k`` (the run's palette size) sets the index dtype."""
    pal8 = palette_u8(palette)
    own = dataset_pid is None or pal8.shape[1] == 4
    record = {"source": rel, "size": list(indices.shape),
              "palette": f"{key}.palette.npy" if own else "palette.npy",
              "palette_id": palette_id(pal8) if own else dataset_pid, **fields}
    meta: dict[str, Any] = {"torchpalette": record}
    if "json" in extras:  # the source's own record keeps its fields; ours is one key of it
        try:
            theirs = json.loads(extras["json"])
        except ValueError:
            theirs = {"source_json": extras["json"].decode("utf-8", "replace")}
        meta = {**theirs, **meta} if isinstance(theirs, dict) else {"source_json": theirs, **meta}
    idx = indices.cpu().numpy().astype(index_dtype(max(k, len(pal8))))
    out = [(f"{key}.idx.npy", npy_bytes(idx))]
    if own:
        out.append((f"{key}.palette.npy", npy_bytes(pal8)))
    out.append((f"{key}.json", json.dumps(meta, sort_keys=True).encode()))
    out += [(f"{key}.{suffix}", data) for suffix, data in extras.items() if suffix != "json"]
    return out


class ShardWriter:
    """Samples of one unit into ``DST/<name>.tar`` (and ``<name>_1.tar``... past ``max_count``
    samples or ``max_bytes``), each part renamed into place only by :meth:`commit`."""

    def __init__(self, dst: Path, name: str, *, max_count: int | None = None,
                 max_bytes: int | None = None):
        self.dst, self.name = dst, name
        self.max_count, self.max_bytes = max_count, max_bytes
        self.tmp_dir = dst / HIDDEN / "tmp"
        self.tmp_dir.mkdir(parents=True, exist_ok=True)
        self.parts: list[tuple[Path, Path]] = []  # (temp, final)
        self.tar: tarfile.TarFile | None = None
        self.count = self.samples = 0

    def _open(self) -> tarfile.TarFile:
        n = len(self.parts)
        final = self.dst / (f"{self.name}.tar" if n == 0 else f"{self.name}_{n}.tar")
        tmp = temp_path(self.tmp_dir)
        self.parts.append((tmp, final))
        self.count = 0
        return tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT)

    def add(self, members: list[tuple[str, bytes]]) -> None:
        """One sample's members, kept together in one part."""
        size = sum(512 + -(-len(d) // 512) * 512 for _, d in members)
        if self.tar is not None and (
                (self.max_count is not None and self.count >= self.max_count)
                or (self.max_bytes is not None and self.count
                    and self.tar.offset + size > self.max_bytes)):
            self._close_part()
        if self.tar is None:
            self.tar = self._open()
        for name, data in members:
            info = tarfile.TarInfo(name)  # mtime 0, no owner: the same bytes on every run
            info.size, info.mode = len(data), 0o644
            self.tar.addfile(info, _io.BytesIO(data))
        self.count += 1
        self.samples += 1

    def _close_part(self) -> None:
        if self.tar is not None:
            self.tar.close()
            with open(self.parts[-1][0], "rb+") as f:
                os.fsync(f.fileno())
            self.tar = None

    def commit(self) -> list[str]:
        """Close and rename every part into DST; returns their file names (none if empty)."""
        self._close_part()
        for tmp, final in self.parts:
            os.replace(tmp, final)
        return [final.name for _, final in self.parts]

    def abort(self) -> None:
        if self.tar is not None:
            self.tar.close()
            self.tar = None
        for tmp, _ in self.parts:
            tmp.unlink(missing_ok=True)
