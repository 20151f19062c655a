"""Reading what the file sinks stored, as rows (dicts), for the API, reports and backtests.

Rows of every kind carry ``_seq`` (the stream sequence of their message); a
message written twice (a crash between a write and its ack, then a redelivery
with a different flush boundary) is returned once. Temp files are never read.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from sinks.rows import TIME_COLUMN, check_kind, utc_date
from sinks.segments import FORMAT_EXT, Segment, by_partition, get_format, list_segments

READ_ATTEMPTS = 3


def available_format(root: str | Path, kind: str) -> str | None:
    """``parquet`` if the root holds Parquet data of ``kind``, else ``json`` if it holds JSON lines, else None."""
    r = Path(root)
    for fmt in ("parquet", "json"):
        if (r / fmt / kind).is_dir():
            return fmt
    return None


def _dedupe_groups(segments: list[Segment]) -> tuple[list[Segment], list[list[Segment]]]:
    """Split segments into those whose partition has no overlapping seq ranges and groups that do."""
    clean: list[Segment] = []
    overlapping: list[list[Segment]] = []
    for segs in by_partition(segments):
        hi = -1
        overlap = False
        for s in segs:
            if s.first_seq <= hi:
                overlap = True
                break
            hi = s.last_seq
        if overlap:
            overlapping.append(segs)
        else:
            clean.extend(segs)
    return clean, overlapping


def _keep(row: dict[str, Any], tcol: str, since: float | None, until: float | None, node: str | None) -> bool:
    t = row.get(tcol)
    if since is not None and (t is None or t < since):
        return False
    if until is not None and (t is None or t >= until):
        return False
    return node is None or row.get("node") == node


def iter_records(
    root: str | Path,
    kind: str,
    *,
    since: float | None = None,
    until: float | None = None,
    cluster: str | None = None,
    node: str | None = None,
    fmt: str | None = None,
) -> Iterator[dict[str, Any]]:
    """Stream rows of ``kind`` with time in [since, until) (UNIX s), partition by partition, unsorted."""
    check_kind(kind)
    fmt = fmt or available_format(root, kind)
    if fmt is None:
        return
    if fmt not in FORMAT_EXT:
        raise ValueError(f"unknown file format {fmt!r}; expected 'json' or 'parquet'")
    tcol = TIME_COLUMN[kind]
    segs = list_segments(
        Path(root), fmt, kind,
        first_date=utc_date(since) if since is not None else None,
        last_date=utc_date(until) if until is not None else None,
        cluster=cluster,
    )
    clean, overlapping = _dedupe_groups(segs)
    if fmt == "parquet" and clean:
        from sinks.parquet import read_many

        by_date: dict[str, list[Path]] = {}
        for s in clean:
            by_date.setdefault(s.date, []).append(s.path)
        for paths in by_date.values():  # one scan per day bounds memory
            yield from read_many(paths, kind, since=since, until=until, node=node)
    else:
        f = get_format(fmt)
        for s in clean:
            for row in f.read(s.path, kind):
                if _keep(row, tcol, since, until, node):
                    yield row
    f = get_format(fmt)
    for group in overlapping:
        seen: set[int] = set()
        for s in group:
            rows = f.read(s.path, kind)
            here = {r["_seq"] for r in rows}
            for row in rows:
                if row["_seq"] not in seen and _keep(row, tcol, since, until, node):
                    yield row
            seen |= here


def read_records(
    root: str | Path,
    kind: str,
    since: float | None = None,
    until: float | None = None,
    cluster: str | None = None,
    *,
    node: str | None = None,
    fmt: str | None = None,
) -> list[dict[str, Any]]:
    """Rows of ``kind`` (metrics, events, agg, alerts, trust, health) with time in [since, until), in time order.

    ``root`` is the sinks' root directory (holding ``json/`` and/or ``parquet/``);
    ``fmt`` picks one, by default Parquet when present. The time column is
    ``start`` for ``agg`` and ``ts`` for the others; ties are in stream order,
    then (the rows of one message) by series name and labels.
    """
    rows: list[dict[str, Any]] = []
    for attempt in range(READ_ATTEMPTS):
        try:
            rows = list(iter_records(root, kind, since=since, until=until, cluster=cluster, node=node, fmt=fmt))
            break
        except FileNotFoundError:  # compaction or retention removed a segment while it was being read: list again
            if attempt == READ_ATTEMPTS - 1:
                raise
    rows.sort(key=row_order(kind))
    return rows


def _labels_text(labels: dict[str, str] | None) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items())) if labels else ""


def row_order(kind: str) -> Callable[[dict[str, Any]], tuple[Any, ...]]:
    """Sort key of stored rows: time, stream seq, then (metrics, agg) series, so any layout reads back in one order."""
    tcol = TIME_COLUMN[kind]
    if kind == "metrics":
        return lambda r: (r[tcol], r["_seq"], r["metric"], _labels_text(r.get("labels")))
    if kind == "agg":
        return lambda r: (r[tcol], r["_seq"], r["metric"], _labels_text(r.get("labels")), r["window_s"])
    return lambda r: (r[tcol], r["_seq"])
