"""What ``torchpalette quantize`` will do, decided before any image is decoded.

* :func:`plan_jobs` walks SRC (following directory symlinks, each real folder once), pairs
  every image with a unique ``.png`` output mirrored under DST, and lists what it could not
  read (folders: reported as failures, exit 1) or chose to skip (symlink loops);
* :func:`shard` takes a deterministic, disjoint slice for a ``(rank, world_size)`` pair;
* :func:`pending_jobs` keeps the jobs whose output is missing or does not decode (zero-byte,
  truncated) and removes temp files of an earlier, killed run;
* :class:`DstLock` holds ``DST/.torchpalette.lock`` (``fcntl.flock``) for the whole run, so a
  second run on the same DST waits, then finds the work done: nothing is done twice.

Output names: ``a.jpg`` becomes ``a.png``. Where two sources would share an output, compared
case-insensitively (``a.png`` and ``a.PNG``; ``b.jpg``, ``b.png`` and ``b.jpg.png``), a source
already named exactly like its output keeps it and the others take their full name plus
``.png`` (``a.PNG.png``), then ``~2``, ``~3``... (``b.jpg~2.png``) until the name is free.
The names depend only on the list of sources, so a re-run finds the same outputs.
"""

from __future__ import annotations

import os
import re
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from PIL import Image

from torchpalette import io

from .errors import UsageError

LOCK_NAME = ".torchpalette.lock"


@dataclass(frozen=True)
class Job:
    """One image to quantize: ``src`` under SRC, ``dst`` its PNG under DST, ``rel`` for messages."""

    src: Path
    dst: Path
    rel: str


@dataclass
class Plan:
    """The jobs of a run and what the walk found: ``problems`` are failures (unreadable
    folders), ``skipped`` are listed but not failures (symlink loops), ``renamed`` the
    ``(source, output)`` pairs that clash handling moved, ``ignored`` non-image files."""

    jobs: list[Job]
    problems: list[tuple[str, str]] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    renamed: list[tuple[str, str]] = field(default_factory=list)
    ignored: int = 0


def walk_images(src: Path, avoid: Path | None = None) -> Plan:
    """Image files under ``src`` as sorted POSIX relative paths (in ``Job.rel``), following
    directory symlinks once per real folder; hidden files and folders are skipped."""
    rels: list[str] = []
    plan = Plan(jobs=[])
    seen = {os.path.realpath(src)}

    def unreadable(err: OSError) -> None:
        rel = Path(err.filename).relative_to(src).as_posix() if err.filename else "?"
        plan.problems.append((rel + "/", f"unreadable folder ({err.strerror or err})"))

    for dirpath, dirnames, filenames in os.walk(src, onerror=unreadable, followlinks=True):
        here = Path(dirpath)
        keep = []
        for d in sorted(dirnames):
            if d.startswith("."):
                continue
            real = os.path.realpath(here / d)
            rel = (here / d).relative_to(src).as_posix() + "/"
            if real in seen:
                plan.skipped.append((rel, "directory symlink to a folder already walked"))
            elif avoid is not None and Path(real) == avoid:
                plan.skipped.append((rel, "directory symlink to DST"))
            else:
                seen.add(real)
                keep.append(d)
        dirnames[:] = keep
        for f in filenames:
            if f.startswith("."):
                continue
            if Path(f).suffix.lower() in io.IMAGE_SUFFIXES:
                rels.append((here / f).relative_to(src).as_posix())
            else:
                plan.ignored += 1
    plan.jobs = [Job(src / r, Path(), r) for r in sorted(rels)]
    plan.problems.sort()
    plan.skipped.sort()
    return plan


def output_names(rels: Sequence[str]) -> list[str]:
    """A unique (case-insensitively) ``.png`` output per source, by the rule of the module
    docstring. ``rels`` sorted POSIX relative paths; returns outputs in the same order."""
    taken: set[str] = set()
    out: list[str | None] = [None] * len(rels)
    want = [str(PurePosixPath(r).with_suffix(".png")) for r in rels]
    # a source named exactly like its output claims it first, so a real a.png is never renamed
    for i, rel in enumerate(rels):
        if want[i] == rel and rel.casefold() not in taken:
            taken.add(rel.casefold())
            out[i] = rel
    for i, rel in enumerate(rels):
        if out[i] is not None:
            continue
        candidates = [want[i], rel + ".png"]
        n = 2
        while all(c.casefold() in taken for c in candidates):
            candidates.append(f"{rel}~{n}.png")
            n += 1
        name = next(c for c in candidates if c.casefold() not in taken)
        taken.add(name.casefold())
        out[i] = name
    return [o for o in out if o is not None]


def plan_jobs(src: Path, dst: Path) -> Plan:
    """Every image under ``src`` paired with its unique ``.png`` output mirrored under ``dst``.

    Raises:
        UsageError: SRC is not a folder, DST is a file or inside SRC (or the same).
    """
    if not src.is_dir():
        raise UsageError(f"SRC: expected an existing folder, got {str(src)!r}")
    s, d = src.resolve(), dst.resolve()
    if d == s or s in d.parents:
        raise UsageError(
            f"DST: expected a folder outside SRC, got {str(dst)!r} inside {str(src)!r}")
    if dst.exists() and not dst.is_dir():
        raise UsageError(f"DST: expected a folder, got the file {str(dst)!r}")
    plan = walk_images(src, avoid=d)
    rels = [j.rel for j in plan.jobs]
    names = output_names(rels)
    plan.jobs = [Job(src / r, d / n, r) for r, n in zip(rels, names, strict=True)]
    plan.renamed = [(r, n) for r, n in zip(rels, names, strict=True)
                    if n != str(PurePosixPath(r).with_suffix(".png"))]
    return plan


def shard(jobs: Sequence[Job], rank: int, world_size: int) -> list[Job]:
    """Rank ``rank``'s share of the sorted job list: every ``world_size``-th job, so the shards
    are disjoint, cover every job exactly once, and differ in size by at most one."""
    if not 0 <= rank < world_size:
        raise ValueError(f"rank: expected an int in [0, {world_size - 1}], got {rank}")
    return list(jobs[rank::world_size])


def temp_path(dst: Path) -> Path:
    """Where ``dst`` is written before ``os.replace`` (hidden, so no walk picks it up)."""
    return dst.with_name(f".{dst.name}.{os.getpid()}.tmp.png")


def _glob_escape(name: str) -> str:
    return re.sub(r"([*?\[])", r"[\1]", name)


def output_ok(path: Path) -> bool:
    """Whether an existing output is a complete PNG: Pillow's ``verify`` checks every chunk's
    CRC up to IEND without decompressing, so zero-byte and truncated files fail it."""
    try:
        with Image.open(path) as im:
            im.verify()
        return True
    except Exception:  # any decode error means: redo it
        return False


def pending_jobs(jobs: Sequence[Job], overwrite: bool) -> tuple[list[Job], int]:
    """``(jobs to do, how many of them redo a broken output)``: outputs missing, not decoding,
    or all with ``overwrite``. Temp files of a killed run for these outputs are removed (safe
    under :class:`DstLock`: no other run writes here)."""
    todo, broken = [], 0
    for job in jobs:
        if job.dst.parent.is_dir():
            for stale in job.dst.parent.glob(f".{_glob_escape(job.dst.name)}.*.tmp.png"):
                stale.unlink(missing_ok=True)
        if overwrite or not job.dst.exists():
            todo.append(job)
        elif not output_ok(job.dst):
            todo.append(job)
            broken += 1
    return todo, broken


class DstLock:
    """An exclusive ``flock`` on ``DST/.torchpalette.lock`` for the life of a run.

    A second run on the same DST waits (``on_wait`` is told the holder's pid once), then plans
    what is left: the first run's outputs count as finished, so no image is done twice. The
    kernel drops the lock when its process dies, so a killed run never blocks the next one.
    Where ``fcntl`` is missing (Windows) runs are not serialised. NFS may not honour flock.
    """

    def __init__(self, dst: Path, on_wait: Callable[[str], None] | None = None):
        self.path = dst / LOCK_NAME
        self.on_wait = on_wait
        self.fd: int | None = None
        self.waited_s = 0.0

    def __enter__(self) -> DstLock:
        try:
            import fcntl
        except ImportError:  # pragma: no cover - Windows
            return self
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(self.fd, 64, 0).decode(errors="replace").strip() or "?"
            if self.on_wait is not None:
                self.on_wait(holder)
            t0 = time.perf_counter()
            fcntl.flock(self.fd, fcntl.LOCK_EX)
            self.waited_s = time.perf_counter() - t0
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, f"{os.getpid()}\n".encode(), 0)
        return self

    def __exit__(self, *exc) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing the descriptor releases the flock
            self.fd = None


def say_waiting(holder: str) -> None:
    print(f"torchpalette quantize: another run (pid {holder}) is writing to this DST; waiting "
          f"for it to finish, then doing what is left", file=sys.stderr, flush=True)
