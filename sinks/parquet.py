"""Parquet segments: an explicit Arrow schema per record kind, laid out for replay and analysis.

Two layouts exist on disk and both are read:

- **layout 1** (before issue 13): times are float64 UNIX seconds, every column
  zstd with pyarrow's default encodings.
- **layout 2** (written now): times are int64 ``TIMESTAMP(NANOS, UTC)``; names,
  units and label maps are dictionary-encoded; each numeric column takes the
  encoding that zstd makes smallest, tried per file on its first rows: floats
  ``BYTE_STREAM_SPLIT``, plain or dictionary, times and ``_seq`` delta, plain or
  dictionary (see :func:`choose_encodings`). Compacted segments are sorted so
  one series' values lie together in time order. The file's key-value metadata
  says ``swarmwatch.layout = 2``.

Columns of type ``labels`` are ``map<string, string>``; free-form objects
(event payloads, alert details, trust evidence, health components) are JSON
strings. :func:`decode_rows` turns both back into Python dicts and times back
into float seconds, so rows read from Parquet equal rows read from JSON lines
(the seconds <-> nanoseconds conversion is exact for every float time).
"""
from __future__ import annotations

import io
from collections.abc import Iterable
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from sinks.rows import COLUMNS, TIME_COLUMN

COMPRESSION = "zstd"
COMPRESSION_LEVEL = 3  # flush segments: fast
COMPACT_COMPRESSION_LEVEL = 9  # compacted segments: written once an hour, read many times
LAYOUT = 2
LAYOUT_KEY = b"swarmwatch.layout"
DICTIONARY_PAGE_LIMIT = 16 << 20  # bytes; large enough that a day's distinct times stay in the dictionary
TRIAL_ROWS = 262_144  # rows written each candidate way to choose a column's encoding
PAGE_ROWS = 1 << 20  # rows per data page at most (pyarrow's default, 20,000, makes zstd restart every 20,000 rows)
PAGE_BYTES = 4 << 20  # bytes per data page: zstd finds one series' timestamps again in the next series' within a page
_NS = 1_000_000_000

# Columns holding a time in UNIX seconds (rows) / TIMESTAMP(ns, UTC) (layout 2).
TIME_COLUMNS: dict[str, tuple[str, ...]] = {
    "metrics": ("ts",),
    "events": ("ts",),
    "agg": ("start", "end"),
    "alerts": ("ts", "started_at", "ended_at"),
    "trust": ("ts",),
    "health": ("ts",),
}
TIMESTAMP_TYPE = pa.timestamp("ns", tz="UTC")

_ARROW_TYPES: dict[str, pa.DataType] = {
    "f64": pa.float64(),
    "i64": pa.int64(),
    "str": pa.string(),
    "labels": pa.map_(pa.string(), pa.string()),
    "json": pa.string(),
}


def _field(kind: str, name: str, t: str, layout: int) -> pa.Field:
    typ = TIMESTAMP_TYPE if layout >= 2 and name in TIME_COLUMNS[kind] else _ARROW_TYPES[t]
    return pa.field(name, typ, nullable=(name != "_seq"))


LEGACY_SCHEMAS: dict[str, pa.Schema] = {
    kind: pa.schema([_field(kind, n, t, 1) for n, t in cols]) for kind, cols in COLUMNS.items()
}
SCHEMAS: dict[str, pa.Schema] = {
    kind: pa.schema([_field(kind, n, t, 2) for n, t in cols], metadata={LAYOUT_KEY: str(LAYOUT).encode()})
    for kind, cols in COLUMNS.items()
}
_JSON_COLS = {kind: [n for n, t in cols if t == "json"] for kind, cols in COLUMNS.items()}
_MAP_COLS = {kind: [n for n, t in cols if t == "labels"] for kind, cols in COLUMNS.items()}
_FLOAT_COLS = {kind: [n for n, t in cols if t == "f64" and n not in TIME_COLUMNS[kind]] for kind, cols in COLUMNS.items()}
_DICT_COLS = {
    kind: [
        *(n for n, t in cols if t in ("str", "i64") or n in TIME_COLUMNS[kind]),
        *(p for n, t in cols if t == "labels" for p in (f"{n}.key_value.key", f"{n}.key_value.value")),
    ]
    for kind, cols in COLUMNS.items()
}
# Order of rows in a compacted segment: one series' values next to each other, in time order.
SORT_KEYS: dict[str, tuple[str, ...]] = {
    "metrics": ("node", "metric", "labels", "ts", "_seq"),
    "agg": ("node", "window_s", "metric", "labels", "start", "_seq"),
    "events": ("ts", "_seq"),
    "alerts": ("ts", "_seq"),
    "trust": ("ts", "_seq"),
    "health": ("ts", "_seq"),
}


def _json_or_none(v: Any) -> str | None:
    return None if v is None else orjson.dumps(v).decode()


def seconds_to_ns(values: Iterable[float | None]) -> pa.Array:
    """UNIX seconds (floats, None allowed) as TIMESTAMP(ns, UTC), exactly: whole seconds and fraction apart."""
    a = np.array([np.nan if v is None else v for v in values], dtype=np.float64)
    missing = ~np.isfinite(a)
    a = np.where(missing, 0.0, a)
    whole = np.floor(a)
    ns = whole.astype(np.int64) * _NS + np.round((a - whole) * 1e9).astype(np.int64)
    return pa.array(ns, type=pa.int64(), mask=missing if missing.any() else None).cast(TIMESTAMP_TYPE)


def ns_to_seconds(arr: pa.Array | pa.ChunkedArray) -> pa.Array:
    """TIMESTAMP(ns) as float64 UNIX seconds; the inverse of :func:`seconds_to_ns` for every float it wrote."""
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    ints = arr.cast(pa.int64())
    valid = ints.is_valid().to_numpy(zero_copy_only=False)
    n = ints.fill_null(0).to_numpy(zero_copy_only=False)
    secs = (n // _NS).astype(np.float64) + (n % _NS).astype(np.float64) / 1e9
    return pa.array(secs, type=pa.float64(), mask=~valid if not valid.all() else None)


def rows_to_table(kind: str, rows: list[dict[str, Any]]) -> pa.Table:
    """Rows of one kind as an Arrow table in the current layout (times as TIMESTAMP(ns, UTC))."""
    schema = SCHEMAS[kind]
    times = TIME_COLUMNS[kind]
    arrays = []
    for name, t in COLUMNS[kind]:
        values = [r.get(name) for r in rows]
        if name in times:
            arrays.append(seconds_to_ns(values))
            continue
        if t == "json":
            values = [_json_or_none(v) for v in values]
        arrays.append(pa.array(values, type=_ARROW_TYPES[t]))
    return pa.Table.from_arrays(arrays, schema=schema)


def to_current_layout(kind: str, table: pa.Table) -> pa.Table:
    """A table read from either layout, as the current layout (float-second times become timestamps)."""
    cols = []
    for f in SCHEMAS[kind]:
        if f.name not in table.column_names:
            cols.append(pa.nulls(table.num_rows, f.type))
            continue
        c = table[f.name]
        if f.name in TIME_COLUMNS[kind] and not pa.types.is_timestamp(c.type):
            c = seconds_to_ns(c.to_pylist())
        elif c.type != f.type:
            c = c.cast(f.type)
        cols.append(c)
    return pa.Table.from_arrays(cols, schema=SCHEMAS[kind])


def to_row_layout(kind: str, table: pa.Table) -> pa.Table:
    """A table of either layout with times as float64 seconds, the row (JSON) form."""
    cols, fields = [], []
    for f in LEGACY_SCHEMAS[kind]:
        if f.name not in table.column_names:
            cols.append(pa.nulls(table.num_rows, f.type))
        else:
            c = table[f.name]
            if pa.types.is_timestamp(c.type):
                c = ns_to_seconds(c)
            elif c.type != f.type:
                c = c.cast(f.type)
            cols.append(c)
        fields.append(f)
    return pa.Table.from_arrays(cols, schema=pa.schema(fields))


def decode_rows(kind: str, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Turn JSON-string and map columns of ``table.to_pylist()`` rows back into dicts, in place."""
    jcols, mcols = _JSON_COLS[kind], _MAP_COLS[kind]
    if not jcols and not mcols:
        return rows
    for r in rows:
        for c in jcols:
            v = r.get(c)
            if v is not None:
                r[c] = orjson.loads(v)
        for c in mcols:
            v = r.get(c)
            if v is not None:
                r[c] = dict(v)
    return rows


def _trial_size(col: pa.Array, encoding: str, level: int) -> int:
    """Bytes of one column written alone with ``encoding`` (``DICT``, ``PLAIN``, ``BYTE_STREAM_SPLIT``, ``DELTA_BINARY_PACKED``)."""
    buf = io.BytesIO()
    t = pa.table({"c": col})
    if encoding == "DICT":
        pq.write_table(t, buf, compression=COMPRESSION, compression_level=level, use_dictionary=True,
                       dictionary_pagesize_limit=DICTIONARY_PAGE_LIMIT, max_rows_per_page=PAGE_ROWS, data_page_size=PAGE_BYTES)
    else:
        pq.write_table(t, buf, compression=COMPRESSION, compression_level=level, use_dictionary=False,
                       column_encoding={"c": encoding}, max_rows_per_page=PAGE_ROWS, data_page_size=PAGE_BYTES)
    return len(buf.getvalue())


def choose_encodings(kind: str, table: pa.Table, level: int = COMPRESSION_LEVEL) -> dict[str, str]:
    """The smallest encoding of each numeric column, tried on its first ``TRIAL_ROWS`` rows under zstd.

    Floats choose among byte-stream-split, plain and dictionary; times and
    integers among delta, plain and dictionary. Strings and labels are always
    dictionary-encoded.
    """
    out: dict[str, str] = {}
    sample = table.slice(0, TRIAL_ROWS)
    for f in SCHEMAS[kind]:
        if f.name in _FLOAT_COLS[kind]:
            cands = ("BYTE_STREAM_SPLIT", "PLAIN", "DICT")
        elif f.name in TIME_COLUMNS[kind] or pa.types.is_int64(f.type):
            cands = ("DELTA_BINARY_PACKED", "PLAIN", "DICT")
        else:
            continue
        col = sample[f.name].combine_chunks() if sample.num_rows else pa.array([], f.type)
        if sample.num_rows < 64:
            out[f.name] = "DICT"
            continue
        sizes = {e: _trial_size(col, e, level) for e in cands}
        out[f.name] = min(cands, key=lambda e: (sizes[e], e != "DICT"))  # ties: the dictionary (reads fastest)
    return out


def writer_options(kind: str, table: pa.Table, *, level: int = COMPRESSION_LEVEL, trial: bool = True) -> dict[str, Any]:
    """``pq.ParquetWriter`` keyword arguments of the current layout for ``table``'s columns.

    ``trial=False`` (flush segments, short-lived until the hourly compaction)
    skips the encoding trials: dictionary for names, times and seqs, plain floats.
    """
    if trial:
        chosen = choose_encodings(kind, table, level)
    else:
        chosen = {c: "PLAIN" for c in _FLOAT_COLS[kind]}
    dict_cols = [c for c in _DICT_COLS[kind] if chosen.get(c, "DICT") == "DICT"]
    dict_cols += [c for c in _FLOAT_COLS[kind] if chosen.get(c) == "DICT"]
    return {
        "compression": COMPRESSION,
        "compression_level": level,
        "use_dictionary": dict_cols,
        "column_encoding": {c: e for c, e in chosen.items() if e != "DICT"} or None,
        "dictionary_pagesize_limit": DICTIONARY_PAGE_LIMIT,
        "write_statistics": True,
        "max_rows_per_page": PAGE_ROWS,
        "data_page_size": PAGE_BYTES,
    }


def sort_for_storage(kind: str, table: pa.Table) -> pa.Table:
    """Rows of one series together in time order (metrics, agg); time order otherwise."""
    keys = SORT_KEYS[kind]
    if table.num_rows < 2:
        return table
    sort_cols: dict[str, pa.Array] = {}
    for k in keys:
        c = table[k]
        if pa.types.is_map(c.type):
            c = labels_text(c)
        sort_cols[k] = c
    order = pc.sort_indices(pa.table(sort_cols), sort_keys=[(k, "ascending") for k in keys])
    return table.take(order)


def labels_text(col: pa.Array | pa.ChunkedArray) -> pa.Array:
    """A ``map<string,string>`` column as ``k=v,k=v`` text per row ('' for no labels), in stored key order."""
    if isinstance(col, pa.ChunkedArray):
        col = col.combine_chunks() if col.num_chunks else pa.array([], col.type)
    if len(col) == 0:
        return pa.array([], pa.string())
    flat_kv = pc.binary_join_element_wise(col.keys, col.items, "=")
    lists = pa.ListArray.from_arrays(col.offsets, flat_kv)
    joined = pc.binary_join(lists, ",")
    return pc.fill_null(joined, "")


def write_table(f: BinaryIO, kind: str, table: pa.Table, *, level: int = COMPRESSION_LEVEL, trial: bool = False) -> None:
    """One segment of the current layout from a table in the current layout."""
    pq.write_table(table, f, **writer_options(kind, table, level=level, trial=trial))


class ParquetFormat:
    """Rows as ``.parquet`` files, one row group per segment, in the current layout."""

    name = "parquet"
    ext = "parquet"

    def write(self, f: BinaryIO, kind: str, rows: list[dict[str, Any]]) -> None:
        write_table(f, kind, rows_to_table(kind, rows))

    def read(self, path: Path, kind: str) -> list[dict[str, Any]]:
        table = to_row_layout(kind, pq.read_table(path))
        return decode_rows(kind, table.to_pylist())


def file_layout(path: str | Path) -> int:
    """2 for files of the current layout, 1 for float-second files written before it."""
    md = pq.read_schema(path).metadata or {}
    try:
        return int(md.get(LAYOUT_KEY, b"1"))
    except ValueError:
        return 1


def read_many(
    paths: list[Path],
    kind: str,
    *,
    since: float | None = None,
    until: float | None = None,
    node: str | None = None,
) -> list[dict[str, Any]]:
    """Rows of many segments (either layout) in one pyarrow.dataset scan per layout, on time [since, until) and node."""
    import pyarrow.dataset as ds

    if not paths:
        return []
    if node is not None and "node" not in SCHEMAS[kind].names:
        return []
    by_layout: dict[int, list[str]] = {}
    for p in paths:
        by_layout.setdefault(file_layout(p), []).append(str(p))
    out: list[dict[str, Any]] = []
    tname = TIME_COLUMN[kind]
    for layout, group in sorted(by_layout.items()):
        schema = SCHEMAS[kind] if layout >= 2 else LEGACY_SCHEMAS[kind]
        dataset = ds.dataset(group, format="parquet", schema=schema)
        tcol = ds.field(tname)

        def bound(v: float) -> Any:
            return pa.scalar(int(seconds_to_ns([v])[0].value), TIMESTAMP_TYPE) if layout >= 2 else v

        expr = None
        for e in (
            tcol >= bound(since) if since is not None else None,
            tcol < bound(until) if until is not None else None,
            ds.field("node") == node if node is not None else None,
        ):
            if e is not None:
                expr = e if expr is None else expr & e
        table = to_row_layout(kind, dataset.to_table(filter=expr))
        out.extend(decode_rows(kind, table.to_pylist()))
    return out
