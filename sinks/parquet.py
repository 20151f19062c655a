"""Parquet segments: an explicit Arrow schema per record kind, zstd-compressed.

Columns of type ``labels`` are ``map<string, string>``; free-form objects
(event payloads, alert details, trust evidence, health components) are JSON
strings. :func:`decode_rows` turns both back into Python dicts, so rows read
from Parquet equal rows read from JSON lines.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, BinaryIO

import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from sinks.rows import COLUMNS

COMPRESSION = "zstd"

_ARROW_TYPES: dict[str, pa.DataType] = {
    "f64": pa.float64(),
    "i64": pa.int64(),
    "str": pa.string(),
    "labels": pa.map_(pa.string(), pa.string()),
    "json": pa.string(),
}

SCHEMAS: dict[str, pa.Schema] = {
    kind: pa.schema([pa.field(name, _ARROW_TYPES[t], nullable=(name != "_seq")) for name, t in cols])
    for kind, cols in COLUMNS.items()
}
_JSON_COLS = {kind: [n for n, t in cols if t == "json"] for kind, cols in COLUMNS.items()}
_MAP_COLS = {kind: [n for n, t in cols if t == "labels"] for kind, cols in COLUMNS.items()}


def _json_or_none(v: Any) -> str | None:
    return None if v is None else orjson.dumps(v).decode()


def rows_to_table(kind: str, rows: list[dict[str, Any]]) -> pa.Table:
    """Rows of one kind as an Arrow table with that kind's schema."""
    schema = SCHEMAS[kind]
    arrays = []
    for name, t in COLUMNS[kind]:
        values = [r.get(name) for r in rows]
        if t == "json":
            values = [_json_or_none(v) for v in values]
        arrays.append(pa.array(values, type=_ARROW_TYPES[t]))
    return pa.Table.from_arrays(arrays, schema=schema)


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


class ParquetFormat:
    """Rows as ``.parquet`` files, one row group per segment."""

    name = "parquet"
    ext = "parquet"

    def write(self, f: BinaryIO, kind: str, rows: list[dict[str, Any]]) -> None:
        pq.write_table(rows_to_table(kind, rows), f, compression=COMPRESSION)

    def read(self, path: Path, kind: str) -> list[dict[str, Any]]:
        table = pq.read_table(path, schema=SCHEMAS[kind])
        return decode_rows(kind, table.to_pylist())


def read_many(
    paths: list[Path],
    kind: str,
    *,
    since: float | None = None,
    until: float | None = None,
    node: str | None = None,
) -> list[dict[str, Any]]:
    """Rows of many segments in one pyarrow.dataset scan, filtered on time [since, until) and node."""
    import pyarrow.dataset as ds

    from sinks.rows import TIME_COLUMN

    if not paths:
        return []
    dataset = ds.dataset([str(p) for p in paths], format="parquet", schema=SCHEMAS[kind])
    tcol = ds.field(TIME_COLUMN[kind])
    expr = None
    for e in (
        tcol >= since if since is not None else None,
        tcol < until if until is not None else None,
        ds.field("node") == node if node is not None and "node" in SCHEMAS[kind].names else None,
    ):
        if e is not None:
            expr = e if expr is None else expr & e
    if node is not None and "node" not in SCHEMAS[kind].names:
        return []
    table = dataset.to_table(filter=expr)
    return decode_rows(kind, table.to_pylist())
