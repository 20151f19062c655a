"""Compaction: merge a closed day's many small segments into a few large ones.

A sink writes one segment per partition per flush (every ``flush_interval_s``),
which leaves many small files. Compaction merges consecutive segments of one
partition, up to ``max_records`` rows each, into one segment named after the
merged seq range, written atomically; only then are the inputs deleted. A
reader running meanwhile sees overlapping seq ranges for a moment and drops the
duplicate rows (see :mod:`sinks.reader`), so it never sees a row twice or miss one.
Rows a redelivery wrote twice are merged into one.
"""
from __future__ import annotations

import datetime as _dt
import logging
import os
import time
from pathlib import Path
from collections.abc import Iterable, Iterator
from typing import Any, BinaryIO

from sinks.rows import KINDS, check_kind
from sinks.segments import (
    FORMAT_EXT,
    Segment,
    fsync_dir,
    get_format,
    list_segments,
    segment_name,
    write_atomic,
)

log = logging.getLogger(__name__)

DEFAULT_COMPACT_MAX_RECORDS = 500_000_000  # rows per merged segment (Parquet is merged streaming; see sort_rows)
DEFAULT_JSON_COMPACT_MAX_RECORDS = 500_000  # rows per merged JSON-lines segment
DEFAULT_SETTLED_RECORDS = 1_000_000  # a segment this large is left alone while its day is open
DEFAULT_SORT_ROWS = 2_000_000  # rows sorted together while merging Parquet: bounds memory (~100-200 MB)
DEFAULT_ROW_GROUP_ROWS = 262_144


_ROW_CACHE: dict[tuple[str, int, int], int] = {}  # (path, size, mtime ns) -> rows: each pass counts only new files
_ROW_CACHE_MAX = 200_000


def _row_count(seg: Segment, fmt: str) -> int:
    try:
        st = seg.path.stat()
    except FileNotFoundError:
        return 0
    key = (str(seg.path), st.st_size, st.st_mtime_ns)
    n = _ROW_CACHE.get(key)
    if n is not None:
        return n
    if fmt == "parquet":
        import pyarrow.parquet as pq

        n = int(pq.ParquetFile(seg.path).metadata.num_rows)
    else:
        with open(seg.path, "rb") as f:
            n = sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 20), b""))
    if len(_ROW_CACHE) >= _ROW_CACHE_MAX:
        _ROW_CACHE.clear()
    _ROW_CACHE[key] = n
    return n


def _groups(segs: list[Segment], fmt: str, max_records: int, settled_records: int) -> list[list[Segment]]:
    """Runs of consecutive small segments (in seq order) holding at most ``max_records`` rows together.

    A segment of ``settled_records`` rows or more (an earlier compaction's
    output) ends a run and is left as it is, so compacting the open day every
    hour merges only what arrived since, not the whole day again.
    """
    out: list[list[Segment]] = []
    cur: list[Segment] = []
    rows = 0
    for s in segs:
        n = _row_count(s, fmt)
        if n >= settled_records:
            if cur:
                out.append(cur)
            cur, rows = [], 0
            continue
        if cur and rows + n > max_records:
            out.append(cur)
            cur, rows = [], 0
        cur.append(s)
        rows += n
    if cur:
        out.append(cur)
    return [g for g in out if len(g) > 1]


def _overlapping(group: list[Segment]) -> bool:
    hi = -1
    for s in group:
        if s.first_seq <= hi:
            return True
        hi = max(hi, s.last_seq)
    return False


def write_sorted_parquet(
    f: BinaryIO,
    kind: str,
    tables: Iterable[Any],
    *,
    sort_rows: int = DEFAULT_SORT_ROWS,
    row_group_rows: int = DEFAULT_ROW_GROUP_ROWS,
) -> int:
    """Write tables of the current layout (in stream order) as one compacted segment; returns the rows written.

    Rows are buffered up to about ``sort_rows``; each full buffer is sorted (one
    series' values together, in time order, see ``sinks.parquet.SORT_KEYS``) and
    written as row groups of ``row_group_rows``, so memory stays bounded by the
    buffer however large the output grows, and a row group holds few nodes (its
    statistics let a per-node query skip the others). Encodings are chosen on
    the first buffer (``sinks.parquet.choose_encodings``).
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    from sinks.parquet import COMPACT_COMPRESSION_LEVEL, SCHEMAS, sort_for_storage, writer_options

    writer: pq.ParquetWriter | None = None
    buf: list[pa.Table] = []
    buffered = 0
    written = 0

    def drain() -> None:
        nonlocal writer, buf, buffered, written
        if not buf:
            return
        t = sort_for_storage(kind, pa.concat_tables(buf))
        buf, buffered = [], 0
        if writer is None:
            writer = pq.ParquetWriter(f, SCHEMAS[kind], **writer_options(kind, t, level=COMPACT_COMPRESSION_LEVEL))
        writer.write_table(t, row_group_size=row_group_rows)
        written += t.num_rows

    for t in tables:
        buf.append(t)
        buffered += t.num_rows
        if buffered >= sort_rows:
            drain()
    drain()
    if writer is None:
        pq.write_table(SCHEMAS[kind].empty_table(), f)
    else:
        writer.close()
    return written


def _merge_parquet(group: list[Segment], kind: str, out: Path, sort_rows: int = DEFAULT_SORT_ROWS) -> None:
    """Merge segments (either layout) into one of the current layout, streaming (see :func:`write_sorted_parquet`)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from sinks.parquet import to_current_layout

    overlap = _overlapping(group)

    def tables() -> Iterator[Any]:
        seen: set[int] = set()
        for s in group:
            t = to_current_layout(kind, pq.read_table(s.path))
            if overlap:
                seqs = t["_seq"].to_pylist()
                if seen:
                    t = t.filter(pa.array([q not in seen for q in seqs], type=pa.bool_()))
                seen.update(seqs)
            yield t

    write_atomic(out, lambda f: write_sorted_parquet(f, kind, tables(), sort_rows=sort_rows))


def _merge_jsonl(group: list[Segment], kind: str, out: Path) -> None:
    if not _overlapping(group):
        def concat(f: BinaryIO) -> None:
            for s in group:
                with open(s.path, "rb") as src:
                    data = src.read()
                f.write(data)
                if data and not data.endswith(b"\n"):
                    f.write(b"\n")

        write_atomic(out, concat)
        return
    fmt = get_format("json")
    rows: list[dict[str, Any]] = []
    seen: set[int] = set()
    for s in group:
        part = fmt.read(s.path, kind)
        rows.extend(r for r in part if r["_seq"] not in seen)
        seen |= {r["_seq"] for r in part}
    rows.sort(key=lambda r: r["_seq"])
    write_atomic(out, lambda f: fmt.write(f, kind, rows))


def compact(
    root: str | Path,
    fmt: str,
    *,
    kinds: tuple[str, ...] = KINDS,
    before_date: str | None = None,
    max_records: int = DEFAULT_COMPACT_MAX_RECORDS,
    open_day: bool = False,
    settled_records: int = DEFAULT_SETTLED_RECORDS,
    sort_rows: int = DEFAULT_SORT_ROWS,
) -> int:
    """Merge small segments of ``<root>/<fmt>`` in date partitions before ``before_date`` (default: today, UTC).

    With ``open_day`` every date partition is compacted, the day still being
    written included (the file sinks do this every hour, so a day holds a few
    dozen files instead of one per flush). Segments of ``settled_records`` rows
    or more are left as they are. Parquet output is in the current layout
    (``sinks.parquet``), sorted by series and time, whatever the inputs' layout;
    JSON-lines segments hold at most ``DEFAULT_JSON_COMPACT_MAX_RECORDS`` rows.
    Returns how many segments were merged away.
    """
    if fmt not in FORMAT_EXT:
        raise ValueError(f"unknown file format {fmt!r}; expected 'json' or 'parquet'")
    if max_records < 1:
        raise ValueError(f"max_records must be >= 1, got {max_records!r}")
    r = Path(root)
    if open_day and before_date is None:
        before = "9999-12-31"
    else:
        before = before_date or _dt.datetime.fromtimestamp(time.time(), _dt.timezone.utc).date().isoformat()
    limit = max_records if fmt == "parquet" else min(max_records, DEFAULT_JSON_COMPACT_MAX_RECORDS)
    ext = FORMAT_EXT[fmt]
    removed = 0
    for kind in kinds:
        check_kind(kind)
        by_part: dict[tuple[str, str], list[Segment]] = {}
        for s in list_segments(r, fmt, kind):
            if s.date < before:
                by_part.setdefault((s.date, s.cluster), []).append(s)
        for segs in by_part.values():
            for group in _groups(segs, fmt, limit, settled_records):
                first = min(s.first_seq for s in group)
                last = max(s.last_seq for s in group)
                out = group[0].path.parent / segment_name(kind, first, last, ext)
                if fmt == "parquet":
                    _merge_parquet(group, kind, out, sort_rows=sort_rows)
                else:
                    _merge_jsonl(group, kind, out)
                for s in group:
                    if s.path != out:
                        try:
                            os.unlink(s.path)
                            removed += 1
                        except FileNotFoundError:
                            pass
                fsync_dir(out.parent)
                log.info("compacted %d %s segments of %s into %s", len(group), fmt, out.parent, out.name)
    return removed
