"""Where ``torchpalette quantize --format tokens|npy`` reads samples: a folder, local WebDataset
tar shards, a Parquet image column or a Hugging Face dataset saved to disk; cut into *units*,
each written as one output shard.

* a folder: its images in sorted order (the PNG mirror's walk), ``shard_size`` per unit;
* tar shards: ``data/shard-{000000..000127}.tar`` (brace ranges keep their zero padding), a
  glob, or paths joined by ``::`` (WebDataset's list form); one unit per input shard, named
  after it. Members group into samples by WebDataset's key rule (the name up to the first dot
  of its last path component); the first image member is decoded, every other member passes
  through byte for byte (labels, captions);
* ``.parquet`` files (a Hugging Face dataset's export): the image column holds encoded bytes
  or Hugging Face's ``{"bytes", "path"}`` struct; ``shard_size`` rows per unit; the other
  scalar columns go into the sample's JSON record;
* a folder written by ``datasets.Dataset.save_to_disk`` (``dataset_info.json``, ``state.json``,
  ``data-*.arrow`` in Arrow's stream format): its Arrow files in ``state.json``'s order, read
  as the Parquet files are (memory-mapped). A ``DatasetDict`` folder is refused: name a split.

A sample's *file* (for provenance and orphans) is its image file in a folder SRC, else the
tar, Parquet or Arrow file holding it.

Units are planned from names and headers only; image bytes are read where they are decoded (a
DataLoader worker seeks into the tar), so memory holds one batch of images, not a shard. Keys
are unique and never hold a dot in their last component, so WebDataset readers regroup them.
"""

from __future__ import annotations

import glob
import hashlib
import itertools
import os
import re
import tarfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from torchpalette import io

from .errors import UsageError, one_line
from .walk import walk_src

TAR_SUFFIXES = (".tar",)
PARQUET_SUFFIXES = (".parquet",)


@dataclass(frozen=True)
class Ref:
    """Bytes of one member: ``size`` bytes at ``offset`` of ``path`` (``size < 0``: the whole
    file), or ``data`` held inline (a Parquet cell)."""

    path: str
    offset: int = 0
    size: int = -1
    data: bytes | None = None

    def read(self) -> bytes:
        return self.head(-1)

    def head(self, n: int) -> bytes:
        """The first ``n`` bytes (``n < 0``: all of them)."""
        if self.data is not None:
            return self.data if n < 0 else self.data[:n]
        size = self.size if n < 0 else n if self.size < 0 else min(n, self.size)
        with open(self.path, "rb") as f:
            f.seek(self.offset)
            return f.read() if size < 0 else f.read(size)


@dataclass(frozen=True)
class ImageMember:
    """A sample's image as a :class:`~torchpalette.cli.decode.Member`: decoded in a worker
    from ``ref``'s bytes, its format told by ``name``."""

    name: str
    ref: Ref

    def read(self) -> bytes:
        return self.ref.read()

    def head(self, n: int) -> bytes:
        return self.ref.head(n)


@dataclass(frozen=True)
class NoImage:
    """A sample without an image member, as a member whose reading fails with ``reason`` (so
    the sample fails alone, listed)."""

    name: str
    reason: str

    def read(self) -> bytes:
        raise ValueError(self.reason)

    def head(self, n: int) -> bytes:
        raise ValueError(self.reason)


@dataclass
class Sample:
    """One sample: ``key`` in the output, ``rel`` (its source, for messages and the record),
    ``image`` (``None``: no image member, the sample fails alone), ``name`` (the image's file
    name, which tells the decoder its format), members passed through, extra JSON fields."""

    key: str
    rel: str
    image: Ref | None
    name: str = ""
    extras: dict[str, Ref] = field(default_factory=dict)
    fields: dict[str, Any] = field(default_factory=dict)


@dataclass
class Unit:
    """One output shard's worth of samples, and the inputs it comes from (for the record)."""

    name: str
    samples: list[Sample]
    inputs: list[str] = field(default_factory=list)

    def files(self, kind: str) -> list[str]:
        """The source files this unit covers (see the module docstring)."""
        return [s.rel for s in self.samples] if kind == "folder" else self.inputs[:1]


def expand_pattern(pattern: str) -> list[str]:
    """``a::b``, brace ranges/lists (``{000..012}``, ``{a,b}``) and globs -> paths, in order.

    Example:
        >>> expand_pattern("s-{08..10}.tar::t-{a,b}.tar")
        ['s-08.tar', 's-09.tar', 's-10.tar', 't-a.tar', 't-b.tar']
    """
    out: list[str] = []
    for part in pattern.split("::"):
        for item in _braces(part):
            hits = sorted(glob.glob(item)) if glob.has_magic(item) else [item]
            out += hits or [item]  # a glob matching nothing stays, to fail by name
    return out


def _braces(text: str) -> list[str]:
    m = re.search(r"\{([^{}]*)\}", text)
    if m is None:
        return [text]
    head, tail, body = text[: m.start()], text[m.end():], m.group(1)
    rng = re.fullmatch(r"(\d+)\.\.(\d+)", body)
    if rng:
        lo, hi = rng.groups()
        width = len(lo) if lo.startswith("0") or len(lo) == len(hi) else 0
        items = [str(i).zfill(width) for i in range(int(lo), int(hi) + 1)]
    else:
        items = body.split(",")
    return [x for item in items for x in _braces(head + item + tail)]


def source_kind(src: str) -> str:
    """``"folder"``, ``"arrow"`` (a saved Hugging Face dataset), ``"tar"`` or ``"parquet"``,
    from SRC's form (exit 2 when it is none)."""
    if Path(src).is_dir():
        if (Path(src) / "dataset_dict.json").is_file():
            raise UsageError(f"SRC: expected one split of a saved Hugging Face dataset (a "
                             f"folder with state.json), got the DatasetDict {src!r}: name a "
                             f"split folder in it")
        return "arrow" if (Path(src) / "state.json").is_file() else "folder"
    paths = expand_pattern(src)
    if paths and all(p.lower().endswith(TAR_SUFFIXES) for p in paths):
        return "tar"
    if paths and all(p.lower().endswith(PARQUET_SUFFIXES) for p in paths):
        return "parquet"
    raise UsageError(f"SRC: expected a folder, .tar shards (a list, glob or brace pattern), "
                     f".parquet files or a saved Hugging Face dataset, got {src!r}")


def source_files(src: str, kind: str) -> list[str]:
    """The files SRC names (tar, Parquet or Arrow; a folder SRC's files come from its walk)."""
    if kind != "arrow":
        return expand_pattern(src)
    import json

    try:
        state = json.loads((Path(src) / "state.json").read_text())
        return [str(Path(src) / f["filename"]) for f in state["_data_files"]]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise UsageError(f"SRC: expected a readable state.json (datasets.Dataset.save_to_disk) "
                         f"in {src!r}, got {one_line(exc)}") from None


def plan_units(src: str, kind: str, *, shard_size: int, image_column: str = "image",
               problems: list[tuple[str, str]] | None = None,
               dst: Path | None = None) -> list[Unit]:
    """Every unit of SRC, in a fixed order (the same on every rank). Tar and Parquet units are
    listed by name only (:func:`load_unit` reads their headers), so a rank opens its own.
    Folders that cannot be read are appended to ``problems`` as ``(path, reason)``; a folder
    SRC that overlaps ``dst`` is refused (``UsageError``)."""
    if kind == "folder":
        walk = walk_src(Path(src), dst)
        if problems is not None:
            problems += walk.problems
        keys = sample_keys([f.rel for f in walk.files])
        samples = [Sample(k, f.rel, Ref(str(f.path)), Path(f.rel).name)
                   for k, f in zip(keys, walk.files, strict=True)]
        return [Unit(f"shard-{i // shard_size:06d}", samples[i : i + shard_size],
                     [s.rel for s in samples[i : i + shard_size]])
                for i in range(0, len(samples), shard_size)]
    paths = source_files(src, kind)
    missing = [p for p in paths if not Path(p).is_file()]
    if missing:
        raise UsageError(f"SRC: expected existing files, got {len(missing)} missing "
                         f"({', '.join(repr(m) for m in missing[:3])})")
    names = [Path(p).name.split(".")[0] for p in paths]
    if len(set(names)) != len(names):
        raise UsageError(f"SRC: expected shards with distinct names, got {len(names)} paths "
                         f"with {len(set(names))} names")
    if kind == "tar":
        return [Unit(n, [], [p]) for n, p in zip(names, paths, strict=True)]
    return [Unit(f"{n}-{start // shard_size:06d}", [], [p, image_column, str(start),
                                                         str(min(start + shard_size, rows))])
            for n, p in zip(names, paths, strict=True)
            for rows in [_table_rows(p, kind)] for start in range(0, rows, shard_size)]


def load_unit(unit: Unit, kind: str) -> Unit:
    """``unit`` with its samples read from the tar headers or table rows (a no-op for
    folders). An unreadable shard raises ``ValueError`` naming it: the caller fails it whole."""
    if kind == "tar":
        unit.samples = tar_samples(unit.inputs[0])
    elif kind in ("parquet", "arrow"):
        path, column, start, stop = unit.inputs
        unit.samples = table_samples(path, column, int(start), int(stop), kind)
    return unit


def inputs_digest(unit: Unit, kind: str, content_hash: bool = False) -> str:
    """A digest of the unit's sources as they are now (path, size, mtime, content too with
    ``content_hash``; a table unit's row range too): a changed, added or removed source makes
    its unit's shards stale."""
    from .record import file_hash

    paths = [s.image.path for s in unit.samples if s.image] if kind == "folder" else unit.inputs[:1]
    parts = [*unit.inputs[1:]] if kind in ("parquet", "arrow") else []
    for path in paths:
        try:
            st = os.stat(path)
            parts.append(f"{path}\t{st.st_size}\t{st.st_mtime_ns}")
            if content_hash:
                parts.append(file_hash(Path(path)))
        except OSError:
            parts.append(f"{path}\tmissing")
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


def sample_keys(rels: Sequence[str]) -> list[str]:
    """WebDataset keys for relative paths: dots in the last component become ``_`` (a reader
    splits the key at the first dot), clashes take ``~2``, ``~3``... in order."""
    seen: set[str] = set()
    out = []
    for rel in rels:
        p = PurePosixPath(rel)
        base = str(p.with_name(p.name.replace(".", "_")))
        key = base
        for n in itertools.count(2):
            if key.lower() not in seen:
                break
            key = f"{base}~{n}"
        seen.add(key.lower())
        out.append(key)
    return out


def tar_samples(path: str) -> list[Sample]:
    """The samples of one WebDataset tar: members grouped by key in file order; the first
    member with an image suffix is the image, the rest pass through under their suffix."""
    try:
        with tarfile.open(path, "r:") as tar:
            members = [m for m in tar.getmembers() if m.isfile()]
    except (OSError, tarfile.TarError) as exc:
        raise ValueError(f"{path}: not a readable tar shard ({exc})") from None
    groups: dict[str, list[tarfile.TarInfo]] = {}
    for m in members:
        head, _, last = m.name.rpartition("/")
        if last.startswith(".") or "." not in last:
            continue  # WebDataset skips names without a suffix too
        key = f"{head}/{last.split('.')[0]}" if head else last.split(".")[0]
        groups.setdefault(key, []).append(m)
    samples = []
    for key, group in groups.items():
        image, extras, name = None, {}, ""
        for m in group:
            suffix = m.name.rpartition("/")[2].split(".", 1)[1]
            ref = Ref(path, m.offset_data, m.size)
            if image is None and "." + suffix.lower().rsplit(".", 1)[-1] in io.IMAGE_SUFFIXES:
                image, name = ref, m.name
            else:
                extras[suffix] = ref
        samples.append(Sample(key, f"{path}:{key}", image, name, extras))
    return samples


def _parquet(path: str):
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise UsageError("SRC: reading .parquet needs pyarrow (pip install "
                         "'torchpalette[hf]')") from None
    try:
        return pq.ParquetFile(path)
    except Exception as exc:
        raise UsageError(f"SRC: expected a readable Parquet file, got {path!r} ({exc})") from None


def _arrow(path: str):
    """A saved dataset's Arrow file (stream format), memory-mapped: ``ValueError`` naming it
    when it does not read (the caller fails its unit alone)."""
    import pyarrow as pa

    try:
        with pa.memory_map(path) as source:
            return pa.ipc.open_stream(source).read_all()
    except Exception as exc:
        raise ValueError(f"{path}: not a readable Arrow stream ({one_line(exc)})") from None


def _table_rows(path: str, kind: str) -> int:
    if kind == "parquet":
        return _parquet(path).metadata.num_rows
    try:
        return _arrow(path).num_rows
    except ValueError as exc:
        raise UsageError(f"SRC: {exc}") from None


def _read_rows(path: str, start: int, stop: int, kind: str) -> tuple[list[str], list[dict]]:
    """``(column names, rows start:stop as dicts)`` of a Parquet or Arrow file."""
    if kind == "arrow":
        table = _arrow(path)
        return table.column_names, table.slice(start, stop - start).to_pylist()
    pf = _parquet(path)
    rows: list[dict[str, Any]] = []
    seen = 0
    for g in range(pf.num_row_groups):  # only the row groups that hold rows start:stop
        n = pf.metadata.row_group(g).num_rows
        lo, hi = max(start - seen, 0), min(stop - seen, n)
        if hi > lo:
            rows += pf.read_row_group(g).slice(lo, hi - lo).to_pylist()
        seen += n
        if seen >= stop:
            break
    return pf.schema_arrow.names, rows


def table_samples(path: str, column: str, start: int, stop: int,
                  kind: str = "parquet") -> list[Sample]:
    """Rows ``start:stop`` of ``column`` (encoded bytes, or ``{"bytes", "path"}`` structs as
    Hugging Face ``datasets`` stores images: bytes, else the file at ``path``); other scalar
    columns become JSON fields. A cell with no image fails its sample alone."""
    names, rows = _read_rows(path, start, stop, kind)
    if column not in names:
        raise UsageError(f"--image-column: expected one of {names} in {path!r}, got {column!r}")
    stem = Path(path).name.split(".")[0]
    samples = []
    for i, row in enumerate(rows, start):
        cell = row.pop(column)
        data = cell.get("bytes") if isinstance(cell, dict) else cell
        name = (cell.get("path") if isinstance(cell, dict) else None) or f"row{i}"
        ref = (Ref(path, data=bytes(data)) if data
               else Ref(name) if isinstance(cell, dict) and cell.get("path") else None)
        fields = {k: x for k, x in row.items() if isinstance(x, (str, int, float, bool))}
        samples.append(Sample(f"{stem}/{i:09d}", f"{path}:{i}", ref, str(name), fields=fields))
    return samples
