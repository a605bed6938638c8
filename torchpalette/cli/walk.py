"""Walking SRC: every entry decided (an image to decode, or skipped with its reason), one
``os.scandir`` per folder, symlinks resolved once.

* Files whose suffix ``tp.io.IMAGE_SUFFIXES`` lists are decoded; every other file is skipped
  and counted under its suffix with the reason (:func:`skip_reason`), so nothing is dropped
  silently. Hidden files and folders (names starting with ".") are skipped and counted too.
* Real folders are walked first, under their own names; a directory symlink is followed only
  afterwards, and only when its target was not walked yet (so ``real/`` keeps its name whatever
  the order of ``dup -> real``), the target's own symlinks after it in turn.
* A symlink that resolves to itself (a loop) or to nothing is skipped with that reason.
* Any followed folder (SRC, or a symlink's target) that overlaps DST (equal, inside it, or
  holding it) is a usage error: the run would write into what it reads.
"""

from __future__ import annotations

import errno
import os
import stat
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from torchpalette import io

from .errors import UsageError

# suffixes seen in image folders that no installed decoder reads: said, never silent
_NO_DECODER = {
    ".heic": "HEIC/HEIF needs a plugin Pillow lacks (pillow-heif)",
    ".heif": "HEIC/HEIF needs a plugin Pillow lacks (pillow-heif)",
    ".jxl": "JPEG XL needs a plugin Pillow lacks (pillow-jxl-plugin)",
    ".svg": "vector image: nothing to quantize",
    ".raw": "camera raw: no decoder", ".cr2": "camera raw: no decoder",
    ".nef": "camera raw: no decoder", ".dng": "camera raw: no decoder",
    ".arw": "camera raw: no decoder",
}


def skip_reason(suffix: str) -> str:
    """Why a file with ``suffix`` (lower case, ``""`` for none) is not decoded."""
    if suffix in _NO_DECODER:
        return _NO_DECODER[suffix]
    return "not an image suffix" if suffix else "no suffix"


@dataclass(frozen=True)
class SrcFile:
    """A source image: its POSIX path relative to SRC, full path, size and mtime (ns)."""

    rel: str
    path: Path
    size: int
    mtime_ns: int


@dataclass
class Walk:
    """What the walk found. ``problems``: unreadable folders (failures); ``skipped``: entries
    listed with a reason (symlink loops, broken links, symlinks to walked folders);
    ``by_suffix``: files not decoded, counted per suffix; ``folders``: rel paths of the
    folders walked (for the file/folder clash rule); ``scans``: ``os.scandir`` calls."""

    files: list[SrcFile] = field(default_factory=list)
    problems: list[tuple[str, str]] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    by_suffix: Counter = field(default_factory=Counter)
    hidden: int = 0
    folders: list[str] = field(default_factory=list)
    scans: int = 0


def _overlap(a: str, b: str) -> bool:
    """Whether real paths ``a`` and ``b`` are equal or one holds the other."""
    a_in, b_in = a.rstrip(os.sep) + os.sep, b.rstrip(os.sep) + os.sep
    return a == b or a.startswith(b_in) or b.startswith(a_in)


def _link_problem(path: str) -> str | None:
    """Why a symlink cannot be followed (a loop, a missing target), or None."""
    try:
        os.stat(path)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return "symlink loop"
        return f"broken symlink ({exc.strerror or exc})"
    return None


def walk_src(src: Path, dst: Path | None = None) -> Walk:
    """Every file under ``src`` decided, in sorted order; see the module docstring.

    Raises:
        UsageError: SRC is not a folder, or a followed folder overlaps ``dst``.
    """
    if not src.is_dir():
        raise UsageError(f"SRC: expected an existing folder, got {str(src)!r}")
    dst_real = None if dst is None else os.path.realpath(dst)
    src_real = os.path.realpath(src)
    if dst_real is not None and _overlap(src_real, dst_real):
        raise UsageError(f"DST: expected a folder outside SRC (and not holding it), got "
                         f"{str(dst)!r} for SRC {str(src)!r}")
    w = Walk()
    walked: dict[str, str] = {src_real: ""}  # real path -> rel it is walked under
    links: list[tuple[str, str]] = []  # (rel, path) of directory symlinks, followed last
    queue: list[tuple[str, str]] = [("", str(src))]
    while queue or links:
        if not queue:
            links.sort()
            rel, path = links.pop(0)
            real = os.path.realpath(path)
            if real in walked:
                first = walked[real] or "SRC"
                why = "directory symlink loop" if (rel + "/").startswith(
                    walked[real] + "/" if walked[real] else "") else \
                    f"directory symlink to {first}/, walked under that name"
                w.skipped.append((rel + "/", why))
                continue
            if dst_real is not None and _overlap(real, dst_real):
                raise UsageError(f"DST: expected a folder outside SRC, got {str(dst)!r}, "
                                 f"reached through the symlink {rel}/ in SRC")
            walked[real] = rel
            queue.append((rel, path))
        rel_dir, path = queue.pop()
        _scan(w, rel_dir, path, queue, links, walked)
    w.files.sort(key=lambda f: f.rel)
    w.problems.sort()
    w.skipped.sort()
    w.folders.sort()
    return w


def _scan(w: Walk, rel_dir: str, path: str, queue: list, links: list,
          walked: dict[str, str]) -> None:
    """One ``os.scandir`` of a folder: files decided, real subfolders queued, symlinks kept."""
    if rel_dir:
        w.folders.append(rel_dir)
    w.scans += 1
    try:
        with os.scandir(path) as it:
            entries = sorted(it, key=lambda e: e.name)
    except OSError as err:
        w.problems.append(((rel_dir + "/") if rel_dir else "./",
                           f"unreadable folder ({err.strerror or err})"))
        return
    for e in entries:
        rel = f"{rel_dir}/{e.name}" if rel_dir else e.name
        if e.name.startswith("."):
            w.hidden += 1
            continue
        try:
            link = e.is_symlink()
            if link and (why := _link_problem(e.path)) is not None:
                w.skipped.append((rel, why))
                continue
            st = e.stat()  # follows a file symlink: the target's size and mtime
        except OSError as err:
            w.problems.append((rel, f"unreadable ({err.strerror or err})"))
            continue
        if stat.S_ISDIR(st.st_mode):
            if link:
                links.append((rel, e.path))
            else:
                walked.setdefault(os.path.realpath(e.path), rel)
                queue.append((rel, e.path))
        elif not stat.S_ISREG(st.st_mode):
            w.by_suffix["(special file)"] += 1
        elif os.path.splitext(e.name)[1].lower() in io.IMAGE_SUFFIXES:
            w.files.append(SrcFile(rel, Path(e.path), st.st_size, st.st_mtime_ns))
        else:
            w.by_suffix[os.path.splitext(e.name)[1].lower()] += 1
