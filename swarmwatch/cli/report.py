"""``swarmwatch report``: summary statistics per node and metric over a time range, with plots."""
from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import typer

from swarmwatch.cli import app
from swarmwatch.cli.common import NATS_CREDS_OPTION, NATS_TOKEN_OPTION, config_or_exit, fail, nats_overrides, renamed

if TYPE_CHECKING:
    from sinks.report import Report


async def _quiet(exc: Exception) -> None:
    """Connection errors are reported once, by the command."""


async def _from_stream(
    url: str, cfg: Config, since: float, until: float, cluster: str | None, metrics: tuple[str, ...], window_s: float | None
) -> Report:
    """Connect once (no endless reconnects: this is a one-shot command) and read DERIVED."""
    import nats as nats_client

    from sinks.report import report_from_stream
    from swarmwatch.cancellation import close_now
    from swarmwatch.connect import connect_options, redact_url

    opts = connect_options(cfg.nats, name="swarmwatch-report")
    opts.update(allow_reconnect=False, max_reconnect_attempts=1, reconnect_time_wait=0.2, error_cb=_quiet)
    try:
        nc = await nats_client.connect(servers=[u.strip() for u in url.split(",") if u.strip()], **opts)
    except Exception as exc:
        fail(f"cannot connect to NATS at {redact_url(url)!r}: {exc}")
    try:
        return await report_from_stream(nc, since, until, cluster=cluster, metrics=metrics, window_s=window_s)
    finally:
        await close_now(nc)


@app.command("report")
def report(
    since: str = typer.Option("1h", "--since", help="Start: UNIX s, ISO 8601 (2026-11-23T14:00:00Z) or a duration ago (24h)."),
    until: str = typer.Option("now", "--until", help="End: UNIX s, ISO 8601, 'now' or a duration ago."),
    fmt: str = typer.Option("html", "--format", "-f", help="html (self-contained, plots embedded), json or csv."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="File to write (default: standard output)."),
    store: Optional[Path] = typer.Option(None, "--store", help="Read the file sinks' store here instead of NATS (<data_dir>/store)."),
    nats: Optional[str] = typer.Option(None, "--nats", help="Read the DERIVED stream at this NATS URL (default when --store is absent)."),
    nats_creds: Optional[str] = NATS_CREDS_OPTION,
    nats_token: Optional[str] = NATS_TOKEN_OPTION,
    old_data: Optional[Path] = typer.Option(None, "--data", hidden=True),
    cluster: Optional[str] = typer.Option(None, "--cluster", help="Only this cluster."),
    metric: Optional[list[str]] = typer.Option(None, "--metric", "-m", help="Only metrics with this name or prefix (repeatable)."),
    window: Optional[str] = typer.Option(None, "--window", "-w", help="Use only aggregates of this window (10s, 1m); default each node's finest."),
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="swarmwatch YAML/TOML config."),
) -> None:
    """Summarise stored aggregates per node and metric (mean, min, max, p95, last, trend) between --since and --until."""
    from schemas import check_token
    from sinks.api.timerange import TimeRangeError, parse_range
    from sinks.report import REPORT_FORMATS, ReportError, render, report_from_files

    if fmt not in REPORT_FORMATS:
        fail(f"--format {fmt!r} is unknown; expected one of {', '.join(REPORT_FORMATS)}")
    try:
        t0, t1 = parse_range(since, until, time.time())
    except TimeRangeError as exc:
        fail(str(exc))
    if cluster is not None:
        try:
            check_token(cluster, "cluster")
        except ValueError as exc:
            fail(str(exc))
    data = renamed("--store", store, "--data", old_data)
    if data is not None and nats is not None:
        fail("give either --store (stored files) or --nats (the DERIVED stream), not both")
    cfg = config_or_exit(config, nats_overrides(nats_creds, nats_token))
    metrics = tuple(metric or ())
    window_s = None
    if window is not None:
        from sinks.api.timerange import parse_duration

        try:
            window_s = parse_duration(window)
        except TimeRangeError as exc:
            fail(f"--window: {exc}")
        if window_s != int(window_s) or window_s <= 0:
            fail(f"--window {window!r} must be a whole number of seconds, e.g. 10s or 1m")

    try:
        if data is not None:
            if not data.is_dir():
                fail(f"--store {str(data)!r} is not a directory")
            rep = report_from_files(str(data), t0, t1, cluster=cluster, metrics=metrics, window_s=window_s)
        else:
            url = nats or cfg.nats.url or f"nats://127.0.0.1:{cfg.nats.port}"
            rep = asyncio.run(_from_stream(url, cfg, t0, t1, cluster, metrics, window_s))
    except ReportError as exc:
        fail(str(exc))
    text = render(rep, fmt)
    if output is None:
        sys.stdout.write(text)
    else:
        output.write_text(text, encoding="utf-8")
        typer.echo(f"wrote {fmt} report of {len(rep.nodes())} nodes, {len(rep.series)} series to {output}", err=True)
