"""``swarmwatch report``: summary statistics per node and metric over a time range, with plots."""
from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Optional

import typer

from swarmwatch.cli import app
from swarmwatch.cli.common import config_or_exit, fail, run_async


async def _quiet(exc: Exception) -> None:
    """Connection errors are reported once, by the command."""


@app.command("report")
def report(
    since: str = typer.Option("1h", "--since", help="Start: UNIX s, ISO 8601 (2026-11-23T14:00:00Z) or a duration ago (24h)."),
    until: str = typer.Option("now", "--until", help="End: UNIX s, ISO 8601, 'now' or a duration ago."),
    fmt: str = typer.Option("html", "--format", "-f", help="html (self-contained, plots embedded), json or csv."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="File to write (default: standard output)."),
    data: Optional[Path] = typer.Option(None, "--data", help="Read the file sinks' store here instead of NATS (<data_dir>/store)."),
    nats: Optional[str] = typer.Option(None, "--nats", help="Read the DERIVED stream at this NATS URL (default when --data is absent)."),
    cluster: Optional[str] = typer.Option(None, "--cluster", help="Only this cluster."),
    metric: Optional[list[str]] = typer.Option(None, "--metric", "-m", help="Only metrics with this name or prefix (repeatable)."),
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="swarmwatch YAML/TOML config."),
) -> None:
    """Summarise stored aggregates per node and metric (mean, min, max, p95, last, trend) between --since and --until."""
    from schemas import check_token
    from sinks.api.timerange import TimeRangeError, parse_range
    from sinks.report import REPORT_FORMATS, ReportError, render, report_from_files, report_from_stream

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
    if data is not None and nats is not None:
        fail("give either --data (stored files) or --nats (the DERIVED stream), not both")
    cfg = config_or_exit(config, {})
    metrics = tuple(metric or ())

    try:
        if data is not None:
            if not data.is_dir():
                fail(f"--data {str(data)!r} is not a directory")
            rep = report_from_files(str(data), t0, t1, cluster=cluster, metrics=metrics)
        else:
            url = nats or cfg.nats.url or f"nats://127.0.0.1:{cfg.nats.port}"

            async def main() -> int:
                nonlocal rep_holder
                import nats as nats_client

                from swarmwatch.connect import connect_options

                opts = connect_options(cfg.nats, name="swarmwatch-report")
                opts.update(allow_reconnect=False, max_reconnect_attempts=1, reconnect_time_wait=0.2, error_cb=_quiet)
                try:
                    nc = await nats_client.connect(servers=[u.strip() for u in url.split(",") if u.strip()], **opts)
                except Exception as exc:
                    fail(f"cannot connect to NATS at {url!r}: {exc}")
                try:
                    rep_holder = await report_from_stream(nc, t0, t1, cluster=cluster, metrics=metrics)
                finally:
                    await nc.close()
                return 0

            rep_holder = None
            run_async(main)
            rep = rep_holder
    except ReportError as exc:
        fail(str(exc))
    assert rep is not None
    text = render(rep, fmt)
    if output is None:
        sys.stdout.write(text)
    else:
        output.write_text(text, encoding="utf-8")
        typer.echo(f"wrote {fmt} report of {len(rep.nodes())} nodes, {len(rep.series)} series to {output}", err=True)
