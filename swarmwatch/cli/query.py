"""``swarmwatch query "SQL"``: DuckDB SQL over the file sinks' store (views samples, events, aggregates, alerts, health, trust)."""
from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Optional

import typer

from swarmwatch.cli import app
from swarmwatch.cli.common import config_or_exit, fail

VIEW_HELP = (
    "Views: samples(ts, cluster, node, metric, labels, labels_key, series, value, unit), "
    "aggregates(window_s, start, end, cluster, node, metric, labels, labels_key, series, unit, count, min, max, mean, sum, p50, p95, p99, last, ...), "
    "alerts(ts, id, status, severity, kind, rule, cluster, node, started_at, ended_at, summary, metric, value, threshold, details), "
    "health(ts, cluster, overall_health, peer_count, ...), trust(ts, cluster, node, round, trust, suspicion, evidence), "
    "events(ts, cluster, node, kind, payload). Times are TIMESTAMPTZ_NS shown in UTC (compare with '2026-12-04 10:00'); labels a MAP, empty when none."
)


def store_or_default(store: Path | None, config: Path | None) -> Path:
    """``--store``, else the configured store (``sinks.out`` or ``<data_dir>/store``); exits if it is not a directory."""
    if store is None:
        cfg = config_or_exit(config, {})
        store = Path(cfg.sinks.out) if cfg.sinks.out else Path(cfg.data_dir) / "store"
    if not store.is_dir():
        fail(f"--store {str(store)!r} is not a directory (the file sinks' root, holding parquet/ and/or json/)")
    return store


@app.command("query", help="Run DuckDB SQL over the stored files. " + VIEW_HELP)
def query(
    sql: str = typer.Argument(..., help="SQL, e.g. \"SELECT node, quantile_cont(value, 0.95) FROM samples WHERE metric = 'cpu.percent' GROUP BY node\""),
    store: Optional[Path] = typer.Option(None, "--store", help="The file sinks' root directory (default <data_dir>/store)."),
    fmt: str = typer.Option("table", "--format", "-f", help="table, csv, json or parquet."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="File to write (default: standard output; parquet needs one)."),
    since: Optional[str] = typer.Option(None, "--since", help="Only read date partitions from this time on (UNIX s, ISO 8601, 'now' or '1h' ago); filter ts in SQL for the exact range."),
    until: Optional[str] = typer.Option(None, "--until", help="Only read date partitions up to this time."),
    max_rows: int = typer.Option(1000, "--max-rows", help="Rows printed by --format table."),
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="swarmwatch YAML/TOML config (for the default store)."),
) -> None:
    """DuckDB SQL over the store; duplicates removed, ts a real timestamp."""
    from sinks.api.timerange import TimeRangeError, parse_time
    from sinks.query import OUTPUT_FORMATS, QueryError, StoreQuery, write_result

    if fmt not in OUTPUT_FORMATS:
        fail(f"--format {fmt!r} is unknown; expected one of {', '.join(OUTPUT_FORMATS)}")
    if fmt == "parquet" and output is None:
        fail("--format parquet needs --output FILE")
    root = store_or_default(store, config)
    now = time.time()
    try:
        t0 = parse_time(since, now, "--since") if since else None
        t1 = parse_time(until, now, "--until") if until else None
    except TimeRangeError as exc:
        fail(str(exc))
    try:
        with StoreQuery(root, since=t0, until=t1) as q:
            table = q.arrow(sql)
            text = write_result(table, fmt, output, max_rows=max_rows)
    except QueryError as exc:
        fail(str(exc))
    if text is not None:
        sys.stdout.write(text)
    else:
        typer.echo(f"wrote {table.num_rows} rows as {fmt} to {output}", err=True)
