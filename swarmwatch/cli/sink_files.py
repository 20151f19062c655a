"""``swarmwatch sink json`` and ``swarmwatch sink parquet``: one file sink alone against any NATS URL."""
from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Optional

import typer

from swarmwatch.cli import sink_app
from swarmwatch.cli.common import config_or_exit, fail, run_async, start_service

STREAM_WAIT_LOG_S = 10.0


def _run_sink(
    fmt: str,
    nats: str,
    out: Path | None,
    config: Path | None,
    flush_interval: float | None,
    max_records: int | None,
    retention_days: float | None,
    log_json: bool,
) -> None:
    cfg = config_or_exit(
        config,
        {
            "sinks.out": str(out) if out else None,
            "sinks.flush_interval": flush_interval,
            "sinks.retention_days": retention_days,
            "log_json": log_json or None,
        },
    )
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
        from swarmwatch.connect import redact_url

        nc, stop = await start_service(nats, cfg.nats, f"swarmwatch-sink-{fmt}", cfg.log_level, cfg.log_json)
        sink = FileSink(nc, root, fmt, settings)
        waited = -STREAM_WAIT_LOG_S
        while not stop.is_set():
            try:
                await sink.start()
                break
            except SinkError as exc:
                if waited <= -STREAM_WAIT_LOG_S or waited >= STREAM_WAIT_LOG_S:
                    typer.echo(f"waiting: {exc}", err=True)
                    waited = 0.0
                await asyncio.sleep(1.0)
                waited += 1.0
        else:
            await nc.close()
            return 0
        typer.echo(f"{fmt} sink writing {root / fmt} from {redact_url(nats)}; Ctrl-C stops it cleanly", err=True)
        await stop.wait()
        await sink.stop()
        await nc.drain()
        return 0

    run_async(main)


_NATS = typer.Option("nats://127.0.0.1:4222", "--nats", help="NATS URL(s), comma-separated.")
_OUT = typer.Option(None, "--out", help="Root directory of the stored files (default <data_dir>/store).")
_CONFIG = typer.Option(None, "--config", "-c", help="swarmwatch YAML/TOML config.")
_FLUSH = typer.Option(None, "--flush-interval", help="Seconds between flushes (a new segment per flush), default 2.")
_MAX = typer.Option(None, "--max-records", help="Rows per segment before an early flush (default 50000).")
_RET = typer.Option(None, "--retention-days", help="Delete date partitions older than this many days; 0 keeps all (default 30).")
_LOGJ = typer.Option(False, "--log-json", help="Structured JSON logs.")


@sink_app.command("json")
def sink_json(
    nats: str = _NATS,
    out: Optional[Path] = _OUT,
    config: Optional[Path] = _CONFIG,
    flush_interval: Optional[float] = _FLUSH,
    max_records: Optional[int] = _MAX,
    retention_days: Optional[float] = _RET,
    log_json: bool = _LOGJ,
) -> None:
    """Store metrics, events, aggregates, alerts, trust and health as JSON lines under OUT/json."""
    _run_sink("json", nats, out, config, flush_interval, max_records, retention_days, log_json)


@sink_app.command("parquet")
def sink_parquet(
    nats: str = _NATS,
    out: Optional[Path] = _OUT,
    config: Optional[Path] = _CONFIG,
    flush_interval: Optional[float] = _FLUSH,
    max_records: Optional[int] = _MAX,
    retention_days: Optional[float] = _RET,
    log_json: bool = _LOGJ,
) -> None:
    """Store metrics, events, aggregates, alerts, trust and health as Parquet (zstd) under OUT/parquet."""
    _run_sink("parquet", nats, out, config, flush_interval, max_records, retention_days, log_json)


@sink_app.command("compact")
def sink_compact(
    out: Path = typer.Option(..., "--out", help="Root directory of the stored files."),
    fmt: Optional[list[str]] = typer.Option(None, "--format", help="json or parquet (repeatable; default both)."),
    before: Optional[str] = typer.Option(None, "--before", help="Compact days before this date, YYYY-MM-DD (default today, UTC)."),
    max_records: int = typer.Option(500_000, "--max-records", help="Rows per merged segment at most."),
) -> None:
    """Merge the small segments of closed days into large ones (safe while sinks and readers run)."""
    import datetime as dt

    from sinks.compaction import compact

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
        fail(f"--out {str(out)!r} is not a directory")
    for f in formats:
        n = compact(out, f, before_date=before, max_records=max_records)
        typer.echo(f"{f}: merged away {n} segments")
