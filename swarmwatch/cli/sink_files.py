"""``swarmwatch sink json`` and ``swarmwatch sink parquet``: one file sink alone against any NATS URL."""
from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Optional

import typer

from swarmwatch.cli import sink_app
from swarmwatch.cli.common import (
    CONFIG_OPTION,
    CONNECT_TIMEOUT_HELP,
    NATS_CREDS_OPTION,
    NATS_TOKEN_OPTION,
    NATS_URL_OPTION,
    config_or_exit,
    fail,
    nats_overrides,
    parse_connect_timeout,
    renamed,
    run_async,
    start_service,
    stop_service,
)

STREAM_WAIT_LOG_S = 10.0


def _run_sink(
    fmt: str,
    nats: str,
    nats_creds: str | None,
    nats_token: str | None,
    connect_timeout: str | None,
    store: Path | None,
    config: Path | None,
    flush_interval: float | None,
    max_records: int | None,
    retention_days: float | None,
    log_json: bool,
) -> None:
    cfg = config_or_exit(
        config,
        {
            "sinks.out": str(store) if store else None,
            "sinks.flush_interval": flush_interval,
            "sinks.retention_days": retention_days,
            "log_json": log_json or None,
            **nats_overrides(nats_creds, nats_token),
        },
    )
    connect_timeout_s = parse_connect_timeout(connect_timeout)
    root = Path(cfg.sinks.out) if cfg.sinks.out else Path(cfg.data_dir) / "store"

    from sinks.files import DEFAULT_MAX_RECORDS, FileSink, FileSinkSettings, SinkError

    try:
        settings = FileSinkSettings(
            flush_interval_s=cfg.sinks.flush_interval_s,
            max_records=max_records if max_records is not None else DEFAULT_MAX_RECORDS,
            retention_days=cfg.sinks.retention_days if cfg.sinks.retention_days > 0 else None,
        )
        settings.check()
    except ValueError as exc:
        fail(str(exc))

    async def main() -> int:
        from swarmwatch.cancellation import close_connection

        from nats.errors import Error as NatsError

        from swarmwatch.connect import redact_url

        nc, stop = await start_service(nats, cfg.nats, f"swarmwatch-sink-{fmt}", cfg.log_level, cfg.log_json, connect_timeout_s)
        sink = FileSink(nc, root, fmt, settings)
        waited = -STREAM_WAIT_LOG_S
        while not stop.is_set():
            try:
                await sink.start()
                break
            except (SinkError, NatsError, TimeoutError, OSError) as exc:  # no stream yet, or the broker went away meanwhile
                if waited <= -STREAM_WAIT_LOG_S or waited >= STREAM_WAIT_LOG_S:
                    typer.echo(f"waiting: {str(exc) or type(exc).__name__}", err=True)
                    waited = 0.0
                await asyncio.sleep(1.0)
                waited += 1.0
        else:
            await close_connection(nc)
            return 0
        typer.echo(f"{fmt} sink writing {root / fmt} from {redact_url(nats)}; Ctrl-C stops it cleanly", err=True)
        await stop.wait()
        return await stop_service(nc, (f"the {fmt} sink (flush, acks)", sink.stop))

    run_async(main)


_CTO = typer.Option(None, "--connect-timeout", help=CONNECT_TIMEOUT_HELP)
_STORE = typer.Option(None, "--store", help="Root directory of the stored files (default <data_dir>/store).")
_OLD_OUT = typer.Option(None, "--out", hidden=True)
_FLUSH = typer.Option(None, "--flush-interval", help="Seconds between flushes (a new segment per flush), default 2.")
_MAX = typer.Option(None, "--max-records", help="Rows per segment before an early flush (default 50000).")
_RET = typer.Option(None, "--retention-days", help="Delete date partitions older than this many days; 0 keeps all (default 30).")
_LOGJ = typer.Option(False, "--log-json", help="Structured JSON logs.")


@sink_app.command("json")
def sink_json(
    nats: str = NATS_URL_OPTION,
    nats_creds: Optional[str] = NATS_CREDS_OPTION,
    nats_token: Optional[str] = NATS_TOKEN_OPTION,
    connect_timeout: Optional[str] = _CTO,
    store: Optional[Path] = _STORE,
    config: Optional[Path] = CONFIG_OPTION,
    flush_interval: Optional[float] = _FLUSH,
    max_records: Optional[int] = _MAX,
    retention_days: Optional[float] = _RET,
    log_json: bool = _LOGJ,
    old_out: Optional[Path] = _OLD_OUT,
) -> None:
    """Store metrics, events, aggregates, alerts, trust and health as JSON lines under STORE/json."""
    store = renamed("--store", store, "--out", old_out)
    _run_sink("json", nats, nats_creds, nats_token, connect_timeout, store, config, flush_interval, max_records, retention_days, log_json)


@sink_app.command("parquet")
def sink_parquet(
    nats: str = NATS_URL_OPTION,
    nats_creds: Optional[str] = NATS_CREDS_OPTION,
    nats_token: Optional[str] = NATS_TOKEN_OPTION,
    connect_timeout: Optional[str] = _CTO,
    store: Optional[Path] = _STORE,
    config: Optional[Path] = CONFIG_OPTION,
    flush_interval: Optional[float] = _FLUSH,
    max_records: Optional[int] = _MAX,
    retention_days: Optional[float] = _RET,
    log_json: bool = _LOGJ,
    old_out: Optional[Path] = _OLD_OUT,
) -> None:
    """Store metrics, events, aggregates, alerts, trust and health as Parquet (zstd) under STORE/parquet."""
    store = renamed("--store", store, "--out", old_out)
    _run_sink("parquet", nats, nats_creds, nats_token, connect_timeout, store, config, flush_interval, max_records, retention_days, log_json)


@sink_app.command("compact")
def sink_compact(
    store: Optional[Path] = typer.Option(None, "--store", help="Root directory of the stored files (required)."),
    fmt: Optional[list[str]] = typer.Option(None, "--format", help="json or parquet (repeatable; default both)."),
    before: Optional[str] = typer.Option(None, "--before", help="Compact days before this date, YYYY-MM-DD (default today, UTC)."),
    max_records: Optional[int] = typer.Option(None, "--max-records", help="Rows per merged segment at most (default: 500M Parquet, 500k JSON lines)."),
    open_day: bool = typer.Option(False, "--open-day", help="Also compact today's partition, still being written (the sinks do this hourly)."),
    old_out: Optional[Path] = _OLD_OUT,
) -> None:
    """Merge small segments into large ones (safe while sinks and readers run); Parquet output is in the current layout."""
    store = renamed("--store", store, "--out", old_out)
    if store is None:
        fail("--store DIR is required: the root directory of the stored files")
    out = store
    import datetime as dt

    from sinks.compaction import DEFAULT_COMPACT_MAX_RECORDS, compact

    if max_records is None:
        max_records = DEFAULT_COMPACT_MAX_RECORDS

    if before is not None:
        try:
            dt.date.fromisoformat(before)
        except ValueError:
            fail(f"--before {before!r} is not a date; expected YYYY-MM-DD")
    formats = fmt or ["json", "parquet"]
    for f in formats:
        if f not in ("json", "parquet"):
            fail(f"--format {f!r} is unknown; expected 'json' or 'parquet'")
    if max_records < 1:
        fail(f"--max-records must be >= 1, got {max_records}")
    if not out.is_dir():
        fail(f"--store {str(out)!r} is not a directory")
    for f in formats:
        n = compact(out, f, before_date=before, max_records=max_records, open_day=open_day)
        typer.echo(f"{f}: merged away {n} segments")
