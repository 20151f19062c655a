"""Segment files on disk: the partitioned layout, atomic writes, listing.

Layout::

    <root>/<format>/<kind>/date=YYYY-MM-DD/cluster=<cluster>/<kind>-<first seq>-<last seq>.<ext>

``format`` is ``json`` (``.jsonl``) or ``parquet`` (``.parquet``). A segment is
written to a dot-prefixed ``.tmp`` file in the same directory, fsynced, renamed
over its final name and the directory fsynced, so a reader sees either the whole
segment or nothing. Names starting with ``.`` are never data: readers skip them.
The seq range in the name makes a redelivered flush of the same messages
overwrite its earlier segment instead of adding a second one.
"""
from __future__ import annotations

import os
import re
import secrets
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Protocol

from sinks.rows import check_kind

FORMAT_EXT: dict[str, str] = {"json": "jsonl", "parquet": "parquet"}
TMP_SUFFIX = ".tmp"

_SEGMENT_RE = re.compile(r"^(?P<kind>[a-z]+)-(?P<first>\d+)-(?P<last>\d+)\.(?P<ext>jsonl|parquet)$")
_DATE_RE = re.compile(r"^date=(\d{4}-\d{2}-\d{2})$")


class SegmentFormat(Protocol):
    """How one file format writes and reads a segment of rows of one kind."""

    name: str  # "json" or "parquet": the directory under the root
    ext: str  # file extension without the dot

    def write(self, f: BinaryIO, kind: str, rows: list[dict[str, Any]]) -> None: ...

    def read(self, path: Path, kind: str) -> list[dict[str, Any]]: ...


def get_format(name: str) -> SegmentFormat:
    """The segment format called ``name`` (``json`` or ``parquet``)."""
    if name == "json":
        from sinks.jsonl import JsonLinesFormat

        return JsonLinesFormat()
    if name == "parquet":
        from sinks.parquet import ParquetFormat

        return ParquetFormat()
    raise ValueError(f"unknown file format {name!r}; expected 'json' or 'parquet'")


@dataclass(frozen=True, slots=True)
class Segment:
    """One complete segment file and what its name says."""

    path: Path
    kind: str
    date: str
    cluster: str
    first_seq: int
    last_seq: int


def by_partition(segments: Iterable[Segment]) -> list[list[Segment]]:
    """Segments grouped per (date, cluster) partition, each group in order of first seq, widest first."""
    parts: dict[tuple[str, str], list[Segment]] = {}
    for s in segments:
        parts.setdefault((s.date, s.cluster), []).append(s)
    for segs in parts.values():
        segs.sort(key=lambda s: (s.first_seq, -s.last_seq))
    return list(parts.values())


def segment_name(kind: str, first_seq: int, last_seq: int, ext: str) -> str:
    """``metrics-000000000001-000000000042.parquet``: zero-padded so names sort by seq."""
    return f"{kind}-{first_seq:012d}-{last_seq:012d}.{ext}"


def partition_dir(root: Path, fmt: str, kind: str, date: str, cluster: str) -> Path:
    return root / fmt / kind / f"date={date}" / f"cluster={cluster}"


def parse_segment_name(name: str) -> tuple[str, int, int] | None:
    """(kind, first seq, last seq) of a segment file name, or None for anything else (temp files)."""
    m = _SEGMENT_RE.match(name)
    if m is None:
        return None
    return m["kind"], int(m["first"]), int(m["last"])


def date_dirs(root: Path, fmt: str, kind: str) -> Iterator[tuple[str, Path]]:
    """(YYYY-MM-DD, directory) of each date partition of a kind, oldest first."""
    base = root / fmt / check_kind(kind)
    if not base.is_dir():
        return
    found = []
    for d in base.iterdir():
        m = _DATE_RE.match(d.name)
        if m and d.is_dir():
            found.append((m[1], d))
    yield from sorted(found)


def list_segments(
    root: Path,
    fmt: str,
    kind: str,
    *,
    first_date: str | None = None,
    last_date: str | None = None,
    cluster: str | None = None,
) -> list[Segment]:
    """Complete segments of a kind, optionally within [first_date, last_date] and one cluster.

    Sorted by date, cluster, first seq, then widest range first (a compacted
    segment comes before the small ones it replaced, if they are still there).
    """
    ext = FORMAT_EXT[fmt]
    out: list[Segment] = []
    for date, ddir in date_dirs(root, fmt, kind):
        if (first_date and date < first_date) or (last_date and date > last_date):
            continue
        for cdir in _entries(ddir):
            if not cdir.name.startswith("cluster="):
                continue
            cl = cdir.name[len("cluster="):]
            if cluster is not None and cl != cluster:
                continue
            for f in _entries(cdir):
                parsed = parse_segment_name(f.name)
                if parsed is None or parsed[0] != kind or not f.name.endswith("." + ext):
                    continue
                out.append(Segment(f, kind, date, cl, parsed[1], parsed[2]))
    out.sort(key=lambda s: (s.date, s.cluster, s.first_seq, -s.last_seq))
    return out


def _entries(d: Path) -> list[Path]:
    """A directory's entries; none if retention removed it meanwhile."""
    try:
        return list(d.iterdir())
    except (FileNotFoundError, NotADirectoryError):
        return []


def fsync_dir(path: Path) -> None:
    """Make a directory's entries (new or renamed files) durable."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def ensure_dir(path: Path) -> None:
    """Create ``path`` and its missing parents, fsyncing each parent so the new entries survive a crash."""
    if path.is_dir():
        return
    missing = []
    p = path
    while not p.exists():
        missing.append(p)
        p = p.parent
    for d in reversed(missing):
        try:
            d.mkdir()
        except FileExistsError:
            continue
        fsync_dir(d.parent)


def write_atomic(path: Path, write: Callable[[BinaryIO], None]) -> None:
    """Write ``path`` whole or not at all: temp file, fsync, rename, fsync the directory."""
    ensure_dir(path.parent)
    tmp = path.parent / f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}{TMP_SUFFIX}"
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            tmp.unlink()
        except OSError:
            pass
        raise
    fsync_dir(path.parent)


def remove_temp_files(base: Path) -> int:
    """Delete leftover ``.*.tmp`` files under ``base`` (from a crash mid-write). Returns how many."""
    n = 0
    if not base.is_dir():
        return 0
    for dirpath, _dirs, files in os.walk(base):
        for name in files:
            if name.startswith(".") and name.endswith(TMP_SUFFIX):
                try:
                    os.unlink(os.path.join(dirpath, name))
                    n += 1
                except OSError:
                    pass
    return n
