"""What ``torchpalette quantize`` will do, decided before any image is decoded, in O(files).

* :func:`plan_jobs` walks SRC (:mod:`~torchpalette.cli.walk`: one scan per folder, every file
  decided) and pairs every image with a unique output mirrored under DST;
* :func:`shard` takes a deterministic, disjoint slice for a ``(rank, world_size)`` pair;
* :func:`resume` compares the jobs with DST (one scan per output folder) and its provenance
  record (:mod:`~torchpalette.cli.record`, one query): an output is finished only when its
  record names the same source (path, size, mtime, hash with ``--hash``), the same options
  and the file as written; anything else is redone, with the reason counted. Recorded outputs
  whose source is gone are orphans: listed, kept unless ``--delete-orphans``.

Output names: ``a.jpg`` becomes ``a.png``. Where two sources would share an output, compared
case-insensitively (``a.png`` and ``a.PNG``; ``b.jpg``, ``b.png`` and ``b.jpg.png``), or an
output would take the name of a mirrored folder (``a.jpg`` beside a folder ``a.png/``), a source
already named exactly like its output keeps it and the others take their full name plus
``.png`` (``a.PNG.png``), then ``~2``, ``~3``... (``b.jpg~2.png``) until the name is free.
The names depend only on the list of sources and folders, so a re-run finds the same outputs;
a source added later may take a name an older source had, and the record then redoes both.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from .record import Row, file_hash
from .walk import walk_src


@dataclass(frozen=True)
class Job:
    """One image to quantize: ``src`` under SRC (``rel`` relative, its ``size`` and
    ``mtime_ns`` when planned), its output ``key`` under DST and full path ``dst``."""

    src: Path
    dst: Path
    rel: str
    key: str = ""
    size: int = 0
    mtime_ns: int = 0


@dataclass
class Plan:
    """The jobs of a run and what the walk found: ``problems`` are failures (unreadable
    folders), ``skipped`` are listed with a reason but not failures (symlink loops),
    ``renamed`` the ``(source, output)`` pairs that clash handling moved, ``by_suffix`` the
    files not decoded per suffix, ``hidden`` the hidden entries skipped, ``scans`` the
    ``os.scandir`` calls of the walk."""

    jobs: list[Job]
    problems: list[tuple[str, str]] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    renamed: list[tuple[str, str]] = field(default_factory=list)
    by_suffix: Counter = field(default_factory=Counter)
    hidden: int = 0
    scans: int = 0

    @property
    def ignored(self) -> int:
        return sum(self.by_suffix.values()) + self.hidden


def output_names(rels: Sequence[str], suffix: str = ".png",
                 folders: Sequence[str] = ()) -> list[str]:
    """A unique (case-insensitively) output per source, by the rule of the module docstring.
    ``rels`` sorted POSIX relative paths, ``folders`` the mirrored folders (names no output
    may take); returns outputs in the order of ``rels``."""
    taken = {f.casefold() for f in folders}
    out: list[str | None] = [None] * len(rels)
    want = [str(PurePosixPath(r).with_suffix(suffix)) for r in rels]
    # a source named exactly like its output claims it first, so a real a.png is never renamed
    for i, rel in enumerate(rels):
        if want[i] == rel and rel.casefold() not in taken:
            taken.add(rel.casefold())
            out[i] = rel
    for i, rel in enumerate(rels):
        if out[i] is not None:
            continue
        candidates = [want[i], rel + suffix]
        n = 2
        while all(c.casefold() in taken for c in candidates):
            candidates.append(f"{rel}~{n}{suffix}")
            n += 1
        name = next(c for c in candidates if c.casefold() not in taken)
        taken.add(name.casefold())
        out[i] = name
    return [o for o in out if o is not None]


def plan_jobs(src: Path, dst: Path, suffix: str = ".png") -> Plan:
    """Every image under ``src`` paired with its unique output mirrored under ``dst``.

    Raises:
        UsageError: SRC is not a folder, DST is a file, or DST and a folder the walk follows
            overlap (DST inside SRC, equal, holding it, or reached through a symlink).
    """
    from .errors import UsageError

    if dst.exists() and not dst.is_dir():
        raise UsageError(f"DST: expected a folder, got the file {str(dst)!r}")
    w = walk_src(src, dst)
    rels = [f.rel for f in w.files]
    names = output_names(rels, suffix, w.folders)
    d = Path(os.path.abspath(dst))
    jobs = [Job(f.path, d / n, f.rel, n, f.size, f.mtime_ns)
            for f, n in zip(w.files, names, strict=True)]
    renamed = [(r, n) for r, n in zip(rels, names, strict=True)
               if n != str(PurePosixPath(r).with_suffix(suffix))]
    return Plan(jobs, w.problems, w.skipped, renamed, w.by_suffix, w.hidden, w.scans)


def shard(jobs: Sequence[Job], rank: int, world_size: int) -> list[Job]:
    """Rank ``rank``'s share of the sorted job list: every ``world_size``-th job, so the shards
    are disjoint, cover every job exactly once, and differ in size by at most one."""
    if not 0 <= rank < world_size:
        raise ValueError(f"rank: expected an int in [0, {world_size - 1}], got {rank}")
    return list(jobs[rank::world_size])


class DstScan:
    """Regular files of DST's folders, each folder scanned once on first use."""

    def __init__(self, dst: Path):
        self.dst = dst
        self.folders: dict[str, dict[str, tuple[int, int]]] = {}
        self.scans = 0

    def stat(self, key: str) -> tuple[int, int] | None:
        """``(size, mtime_ns)`` of the output ``key``, or None when it is not a file."""
        folder, _, name = key.rpartition("/")
        files = self.folders.get(folder)
        if files is None:
            files = self.folders[folder] = {}
            self.scans += 1
            try:
                with os.scandir(self.dst / folder) as it:
                    for e in it:
                        if e.is_file(follow_symlinks=False):
                            st = e.stat(follow_symlinks=False)
                            files[e.name] = (st.st_size, st.st_mtime_ns)
            except (FileNotFoundError, NotADirectoryError):
                pass
        return files.get(name)


@dataclass
class Resume:
    """Jobs to do, how many are finished, why the others are redone (reason -> count), the
    recorded outputs whose source is gone, and the content hashes computed (``--hash``)."""

    todo: list[Job]
    finished: int = 0
    redo: Counter = field(default_factory=Counter)
    orphans: list[str] = field(default_factory=list)
    hashes: dict[str, str] = field(default_factory=dict)
    scans: int = 0


def _why_stale(job: Job, row: Row | None, out: tuple[int, int] | None, digest: str,
               hashed: str) -> str | None:
    if out is None:
        return "output missing" if row is not None else ""
    if row is None:
        return "output not in the record"
    if row.src != job.rel:
        return "another source now takes this output's name"
    if (row.size, row.mtime_ns) != (job.size, job.mtime_ns) or (hashed and row.hash != hashed):
        return "source changed"
    if row.options != digest:
        return "options changed"
    if (row.out_size, row.out_mtime_ns) != out:
        return "output changed or damaged since written"
    return None


def resume(jobs: Sequence[Job], rows: dict[str, Row], digest: str, *, dst: Path,
           overwrite: bool = False, content_hash: bool = False,
           all_keys: Sequence[str] | None = None) -> Resume:
    """Which ``jobs`` to (re)do against DST and its record ``rows`` (see the module docstring).
    ``all_keys``: every planned output of every rank (orphans are judged on those)."""
    scan = DstScan(Path(os.path.abspath(dst)))
    res = Resume(todo=[])
    if content_hash:
        with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 2)) as pool:
            res.hashes = dict(zip([j.key for j in jobs], pool.map(lambda j: file_hash(j.src), jobs),
                                  strict=True))
    for job in jobs:
        why = "overwrite" if overwrite else _why_stale(
            job, rows.get(job.key), scan.stat(job.key), digest, res.hashes.get(job.key, ""))
        if why is None:
            res.finished += 1
            continue
        res.todo.append(job)
        if why:
            res.redo[why] += 1
    planned = set(j.key for j in jobs) if all_keys is None else set(all_keys)
    res.orphans = sorted(k for k in rows if k not in planned and scan.stat(k) is not None)
    res.scans = scan.scans
    return res
