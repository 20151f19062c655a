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

DEFAULT_COMPACT_MAX_RECORDS = 500_000  # rows per merged segment; bounds memory while merging


def _row_count(seg: Segment, fmt: str) -> int:
    if fmt == "parquet":
        import pyarrow.parquet as pq

        return int(pq.ParquetFile(seg.path).metadata.num_rows)
    with open(seg.path, "rb") as f:
        return sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 20), b""))


def _groups(segs: list[Segment], fmt: str, max_records: int) -> list[list[Segment]]:
    """Consecutive runs of segments (in seq order) holding at most ``max_records`` rows together."""
    out: list[list[Segment]] = []
    cur: list[Segment] = []
    rows = 0
    for s in segs:
        n = _row_count(s, fmt)
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


def _merge_parquet(group: list[Segment], kind: str, out: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from sinks.parquet import COMPRESSION, SCHEMAS

    overlap = _overlapping(group)
    tables = []
    seen: set[int] = set()
    for s in group:
        t = pq.read_table(s.path, schema=SCHEMAS[kind])
        if overlap:
            seqs = t["_seq"].to_pylist()
            if seen:
                t = t.filter(pa.array([q not in seen for q in seqs], type=pa.bool_()))
            seen.update(seqs)
        tables.append(t)
    merged = pa.concat_tables(tables)
    if overlap:
        merged = merged.sort_by("_seq")  # stable: rows of one message keep their order

    def write(f: BinaryIO) -> None:
        pq.write_table(merged, f, compression=COMPRESSION)

    write_atomic(out, write)


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
) -> int:
    """Merge small segments of ``<root>/<fmt>`` in date partitions before ``before_date`` (default: today, UTC).

    Returns how many segments were merged away. Days still being written are
    left alone unless ``before_date`` says otherwise.
    """
    if fmt not in FORMAT_EXT:
        raise ValueError(f"unknown file format {fmt!r}; expected 'json' or 'parquet'")
    if max_records < 1:
        raise ValueError(f"max_records must be >= 1, got {max_records!r}")
    r = Path(root)
    before = before_date or _dt.datetime.fromtimestamp(time.time(), _dt.timezone.utc).date().isoformat()
    ext = FORMAT_EXT[fmt]
    removed = 0
    for kind in kinds:
        check_kind(kind)
        by_part: dict[tuple[str, str], list[Segment]] = {}
        for s in list_segments(r, fmt, kind):
            if s.date < before:
                by_part.setdefault((s.date, s.cluster), []).append(s)
        for segs in by_part.values():
            for group in _groups(segs, fmt, max_records):
                first = min(s.first_seq for s in group)
                last = max(s.last_seq for s in group)
                out = group[0].path.parent / segment_name(kind, first, last, ext)
                if fmt == "parquet":
                    _merge_parquet(group, kind, out)
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
