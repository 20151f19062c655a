"""SQL over the file sinks' store: DuckDB views ``samples``, ``events``, ``aggregates``, ``alerts``, ``health``, ``trust``.

One read layer for ``swarmwatch query``, ``swarmwatch report``, incident bundles
and the dashboard's history. Each view reads the store's Parquet segments (or
its JSON lines where a kind has no Parquet), both Parquet layouts, and:

- ``ts`` (and ``start``/``end``/``started_at``/``ended_at``) is a real
  ``TIMESTAMP WITH TIME ZONE`` in nanoseconds (``TIMESTAMPTZ_NS``, shown in UTC; compare with
  ``'2026-12-04 10:00'``); ``epoch(ts)`` gives
  UNIX seconds;
- ``labels`` is a ``MAP(VARCHAR, VARCHAR)``, empty (never NULL) when a sample
  has none, so ``labels['core'] = '0'`` and ``labels = MAP {}`` just work;
  ``labels_key`` is the same as sorted ``k=v,k=v`` text ('' for none) and
  ``series`` is ``metric`` or ``metric{k=v,...}``, the dashboard's series key;
- rows a redelivery wrote twice are returned once. Duplicates are removed by
  file, not by row: in each partition a segment whose seq range another one
  covers is skipped, and one that partly overlaps keeps only its newer seqs
  (a message's rows are always in one segment), which costs nothing per row.

``StoreQuery(root, since=..., until=...)`` limits the views to the date
partitions that can hold that range (the views still hold whole days; filter
on ``ts`` for the exact range).
"""
from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sinks.reader import available_format
from sinks.rows import COLUMNS, utc_date
from sinks.segments import Segment, by_partition, list_segments

VIEWS: dict[str, str] = {  # view name -> stored record kind
    "samples": "metrics",
    "events": "events",
    "aggregates": "agg",
    "alerts": "alerts",
    "health": "health",
    "trust": "trust",
}
OUTPUT_FORMATS = ("table", "csv", "json", "parquet")
DEFAULT_TABLE_ROWS = 1000  # rows printed by the table format; the others write everything

_TIME_COLS = {"metrics": ("ts",), "events": ("ts",), "agg": ("start", "end"), "alerts": ("ts", "started_at", "ended_at"),
              "trust": ("ts",), "health": ("ts",)}
_SQL_TYPES = {"f64": "DOUBLE", "i64": "BIGINT", "str": "VARCHAR", "labels": "MAP(VARCHAR, VARCHAR)", "json": "JSON"}
_LABELS_KEY = "array_to_string(list_sort(list_transform(map_entries({m}), lambda e: e.key || '=' || e.value)), ',')"


def at(ts: float) -> Any:
    """UNIX seconds as an exact ``TIMESTAMPTZ_NS`` parameter value: use ``CAST(make_timestamp_ns(?) AS TIMESTAMPTZ_NS)``."""
    from sinks.parquet import seconds_to_ns

    return int(seconds_to_ns([ts]).cast("int64")[0].as_py())


AT = "CAST(make_timestamp_ns(?) AS TIMESTAMPTZ_NS)"  # SQL for a parameter made by :func:`at`


class QueryError(ValueError):
    """A query cannot run: bad SQL, a missing store, an unknown output format."""


READ_ATTEMPTS = 3


def _missing_file(exc: Exception) -> bool:
    text = str(exc).lower()
    return "no such file" in text or "no files found" in text or "not found" in text or "does not exist" in text


def _q(s: str) -> str:
    return "'" + s.replace("'", "''") + "'"


def _files(paths: Sequence[Path]) -> str:
    return "[" + ", ".join(_q(str(p)) for p in paths) + "]"


@dataclass(frozen=True, slots=True)
class _Part:
    """Files of one kind read together: a format/layout and the lowest seq kept (duplicates below it)."""

    fmt: str
    layout: int
    min_seq: int | None
    paths: tuple[Path, ...]


def dedupe_plan(segments: list[Segment]) -> list[tuple[Segment, int | None]]:
    """Which segments to read and from which seq on, so every stored message is read once.

    Per partition, in order of first seq (widest first): a segment inside the
    range already covered is skipped; one that overlaps it is read for seqs
    above the covered range only.
    """
    out: list[tuple[Segment, int | None]] = []
    for segs in by_partition(segments):
        hi = -1
        for s in segs:
            if s.last_seq <= hi:
                continue
            out.append((s, hi if s.first_seq <= hi else None))
            hi = s.last_seq
    return out


class StoreQuery:
    """A DuckDB connection with the store's views. Use as a context manager or ``close()`` it.

    ``since``/``until`` (UNIX s) restrict the views to the date partitions that
    can hold rows of that range; ``threads`` and ``memory_limit`` (``'1GB'``)
    bound DuckDB.
    """

    def __init__(
        self,
        root: str | Path,
        *,
        since: float | None = None,
        until: float | None = None,
        clusters: Sequence[str] | None = None,
        threads: int | None = None,
        memory_limit: str | None = None,
    ) -> None:
        import duckdb

        self.root = Path(root)
        if not self.root.is_dir():
            raise QueryError(f"store {str(self.root)!r} is not a directory")
        self.con = duckdb.connect(":memory:")
        self.con.execute("SET TimeZone = 'UTC'")
        if threads is not None:
            self.con.execute(f"SET threads = {int(threads)}")
        if memory_limit is not None:
            self.con.execute(f"SET memory_limit = {_q(memory_limit)}")
        self._lock = threading.Lock()
        self.files: dict[str, int] = {}
        self._first = utc_date(since - 86_400.0) if since is not None else None  # aggregates are dated by window start
        self._last = utc_date(until) if until is not None else None
        self._clusters = clusters
        self._build_views()

    def _build_views(self) -> None:
        for view, kind in VIEWS.items():
            self.con.execute(f"CREATE OR REPLACE VIEW {view} AS {self._view_sql(kind, self._first, self._last, self._clusters)}")

    # ------------------------------------------------------------------ views

    def _parts(self, kind: str, first: str | None, last: str | None, clusters: Sequence[str] | None) -> list[_Part]:
        fmt = available_format(self.root, kind)
        if fmt is None:
            return []
        segs = list_segments(self.root, fmt, kind, first_date=first, last_date=last)
        if clusters is not None:
            segs = [s for s in segs if s.cluster in clusters]
        plan = dedupe_plan(segs)
        self.files[kind] = len(plan)
        groups: dict[tuple[int, int | None], list[Path]] = {}
        for seg, min_seq in plan:
            layout = 0
            if fmt == "parquet":
                from sinks.parquet import file_layout

                layout = file_layout(seg.path)
            groups.setdefault((layout, min_seq), []).append(seg.path)
        return [_Part(fmt, layout, min_seq, tuple(paths)) for (layout, min_seq), paths in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1] or -1))]

    def _view_sql(self, kind: str, first: str | None, last: str | None, clusters: Sequence[str] | None) -> str:
        parts = self._parts(kind, first, last, clusters)
        selects = [self._select(kind, p) for p in parts]
        if not selects:
            selects = [self._select(kind, None)]
        return " UNION ALL ".join(selects)

    def _select(self, kind: str, part: _Part | None) -> str:
        cols: list[str] = []
        times = _TIME_COLS[kind]
        for name, t in COLUMNS[kind]:
            qn = f'"{name}"'
            if part is None:
                typ = "TIMESTAMPTZ_NS" if name in times else _SQL_TYPES[t]
                expr = f"CAST(NULL AS {typ})"
            elif name in times and (part.fmt == "json" or part.layout < 2):
                expr = f"CAST(to_timestamp({qn}) AS TIMESTAMPTZ_NS)"
            elif t == "labels":
                expr = f"coalesce({qn}, CAST(MAP {{}} AS MAP(VARCHAR, VARCHAR)))"
            elif t == "json" and part.fmt == "parquet":
                expr = f"CAST({qn} AS JSON)"
            else:
                expr = qn
            cols.append(f"{expr} AS {qn}")
            if t == "labels":
                m = f"coalesce({qn}, CAST(MAP {{}} AS MAP(VARCHAR, VARCHAR)))" if part is not None else "CAST(NULL AS MAP(VARCHAR, VARCHAR))"
                lk = _LABELS_KEY.format(m=m)
                cols.append(f"coalesce({lk}, '') AS labels_key")
                cols.append(f"CASE WHEN cardinality({m}) = 0 THEN metric ELSE metric || '{{' || {lk} || '}}' END AS series")
        if part is None:
            return "SELECT " + ", ".join(cols) + " WHERE false"
        if part.fmt == "parquet":
            src = f"read_parquet({_files(part.paths)})"
        else:
            spec = ", ".join(f"{_q(n)}: {_q(_SQL_TYPES[t])}" for n, t in COLUMNS[kind])
            src = f"read_json({_files(part.paths)}, format = 'newline_delimited', columns = {{{spec}}})"
        where = f" WHERE _seq > {int(part.min_seq)}" if part.min_seq is not None else ""
        return f"SELECT {', '.join(cols)} FROM {src}{where}"

    # ------------------------------------------------------------------ use

    def sql(self, query: str, params: Sequence[Any] | dict[str, Any] | None = None) -> Any:
        """Run ``query``; returns a DuckDB relation (``.arrow()``, ``.fetchall()``, ``.df()``)."""
        import duckdb

        try:
            with self._lock:
                return self.con.sql(query, params=params) if params is not None else self.con.sql(query)
        except duckdb.Error as exc:
            raise QueryError(str(exc).strip()) from None

    def arrow(self, query: str, params: Sequence[Any] | dict[str, Any] | None = None) -> Any:
        """The result as a ``pyarrow.Table`` (empty table for a statement without rows)."""
        import duckdb
        import pyarrow as pa

        for attempt in range(READ_ATTEMPTS):
            try:
                with self._lock:
                    rel = self.con.sql(query, params=params) if params is not None else self.con.sql(query)
                    if rel is None:  # a statement without a result (SET, CREATE ...)
                        return pa.table({})
                    return rel.to_arrow_table()
            except duckdb.IOException as exc:
                # compaction or retention removed a listed segment meanwhile (its rows are in the merged one): list again
                if attempt == READ_ATTEMPTS - 1 or not _missing_file(exc):
                    raise QueryError(str(exc).strip()) from None
                with self._lock:
                    self._build_views()
            except duckdb.Error as exc:
                raise QueryError(str(exc).strip()) from None
        raise AssertionError("unreachable")

    def rows(self, query: str, params: Sequence[Any] | dict[str, Any] | None = None) -> list[dict[str, Any]]:
        """The result as dicts (timestamps as ``datetime``; use ``epoch(ts)`` in SQL for seconds)."""
        return list(self.arrow(query, params).to_pylist())

    def records(self, view: str, where: str = "true", params: Sequence[Any] | None = None, order: str | None = None) -> list[dict[str, Any]]:
        """Rows of a view in the file sinks' row form: times as float UNIX seconds, labels a dict or None, JSON as objects.

        ``where`` is SQL over the view's columns with ``?`` parameters; :func:`at`
        turns UNIX seconds into a timestamp parameter.
        """
        import orjson

        kind = VIEWS[view]
        times = set(_TIME_COLS[kind])
        sel = []
        for name, t in COLUMNS[kind]:
            if name in times:
                sel.append(f'epoch_ns("{name}") AS "{name}"')
            elif t == "json":
                sel.append(f'CAST("{name}" AS VARCHAR) AS "{name}"')
            else:
                sel.append(f'"{name}"')
        q = f"SELECT {', '.join(sel)} FROM {view} WHERE {where}" + (f" ORDER BY {order}" if order else "")
        table = self.arrow(q, params)
        from sinks.parquet import ns_to_seconds

        cols = {}
        for name, t in COLUMNS[kind]:
            c = table[name]
            if name in times:
                cols[name] = ns_to_seconds(c.cast("timestamp[ns]")).to_pylist()
            elif t == "labels":
                cols[name] = [dict(v) or None if v is not None else None for v in c.to_pylist()]
            elif t == "json":
                cols[name] = [None if v is None else orjson.loads(v) for v in c.to_pylist()]
            else:
                cols[name] = c.to_pylist()
        names = [n for n, _ in COLUMNS[kind]]
        return [dict(zip(names, vals)) for vals in zip(*(cols[n] for n in names))]

    def close(self) -> None:
        self.con.close()

    def __enter__(self) -> StoreQuery:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def write_result(table: Any, fmt: str, output: Path | None, *, max_rows: int = DEFAULT_TABLE_ROWS) -> str | None:
    """Write a result table as ``table`` (rich), ``csv``, ``json`` (one array of objects) or ``parquet``.

    Returns text for standard output when ``output`` is None (Parquet needs a file).
    """
    import pyarrow as pa

    if fmt not in OUTPUT_FORMATS:
        raise QueryError(f"output format {fmt!r} is unknown; expected one of {', '.join(OUTPUT_FORMATS)}")
    if fmt == "parquet":
        if output is None:
            raise QueryError("--format parquet needs --output FILE")
        import pyarrow.parquet as pq

        pq.write_table(table, output, compression="zstd")
        return None
    if fmt == "csv":
        import pyarrow.csv as pacsv

        out = pa.BufferOutputStream()
        pacsv.write_csv(_plain(table), out)
        text = out.getvalue().to_pybytes().decode()
    elif fmt == "json":
        import orjson

        text = orjson.dumps(_json_rows(table), option=orjson.OPT_INDENT_2).decode() + "\n"
    else:
        text = _rich_table(table, max_rows)
    if output is None:
        return text
    output.write_text(text, encoding="utf-8")
    return None


def _plain(table: Any) -> Any:
    """Maps and lists as JSON text, so CSV can hold them."""
    import orjson
    import pyarrow as pa

    cols = []
    for c in table.columns:
        if pa.types.is_map(c.type) or pa.types.is_nested(c.type):
            vals = [None if v is None else orjson.dumps(dict(v) if pa.types.is_map(c.type) else v, default=str).decode() for v in c.to_pylist()]
            c = pa.array(vals, pa.string())
        cols.append(c)
    return pa.Table.from_arrays(cols, names=table.column_names)


def _json_rows(table: Any) -> list[dict[str, Any]]:
    import datetime as dt

    import pyarrow as pa

    out_cols: dict[str, list[Any]] = {}
    for name, c in zip(table.column_names, table.columns):
        if pa.types.is_timestamp(c.type):
            out_cols[name] = [None if v is None else _iso(v) for v in c.cast(pa.int64()).to_pylist()] if c.type.unit == "ns" else [
                None if v is None else v.isoformat() for v in c.to_pylist()]
        elif pa.types.is_map(c.type):
            out_cols[name] = [None if v is None else dict(v) for v in c.to_pylist()]
        else:
            vals = c.to_pylist()
            out_cols[name] = [v.isoformat() if isinstance(v, (dt.datetime, dt.date)) else v for v in vals]
    names = table.column_names
    return [dict(zip(names, vals)) for vals in zip(*(out_cols[n] for n in names))] if names else []


def _iso(ns: int) -> str:
    import datetime as dt

    secs, rem = divmod(ns, 1_000_000_000)
    return dt.datetime.fromtimestamp(secs, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S") + f".{rem:09d}Z"


def _rich_table(table: Any, max_rows: int) -> str:
    import io

    import pyarrow as pa
    from rich.console import Console
    from rich.table import Table

    t = Table(show_lines=False, header_style="bold")
    for name, typ in zip(table.column_names, table.schema.types):
        t.add_column(name, justify="right" if pa.types.is_integer(typ) or pa.types.is_floating(typ) else "left")
    rows = _json_rows(table.slice(0, max_rows))
    for r in rows:
        t.add_row(*("" if v is None else str(v) for v in r.values()))
    buf = io.StringIO()
    widths = [max([len(n), *(len("" if r[n] is None else str(r[n])) for r in rows)]) for n in table.column_names]
    Console(file=buf, width=max(80, min(400, sum(w + 3 for w in widths) + 1)), force_terminal=False, no_color=True).print(t)
    more = table.num_rows - len(rows)
    return buf.getvalue() + (f"({table.num_rows} rows, {len(rows)} shown; use --format csv/json/parquet -o FILE for all)\n" if more > 0 else f"({table.num_rows} rows)\n")
