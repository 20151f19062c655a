"""``swarmwatch sink api``: the HTTP API, WebSocket, dashboard and /metrics on their own."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from swarmwatch.cli import sink_app
from swarmwatch.cli.common import (
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


@sink_app.command("api")
def api(
    nats: str = NATS_URL_OPTION,
    nats_creds: Optional[str] = NATS_CREDS_OPTION,
    nats_token: Optional[str] = NATS_TOKEN_OPTION,
    connect_timeout: Optional[str] = typer.Option(None, "--connect-timeout", help=CONNECT_TIMEOUT_HELP),
    api_host: Optional[str] = typer.Option(None, "--api-host", help="Address to bind (default 127.0.0.1); anything but loopback needs --api-token."),
    api_port: Optional[int] = typer.Option(None, "--api-port", help="TCP port (default 8686; 0 picks a free one)."),
    api_token: Optional[str] = typer.Option(None, "--api-token", envvar="SWARMWATCH_API_TOKEN", help="Access token for /api, /ws and /metrics."),
    old_host: Optional[str] = typer.Option(None, "--host", hidden=True),
    old_port: Optional[int] = typer.Option(None, "--port", hidden=True),
    old_token: Optional[str] = typer.Option(None, "--token", hidden=True),
    backfill: str = typer.Option("1h", help="Aggregates, trust and health to load from DERIVED at start (0 for none)."),
    alert_backfill: str = typer.Option("24h", help="Alerts to load from DERIVED at start (0 for none)."),
    store: Optional[Path] = typer.Option(None, "--store", help="The file sinks' directory: history older than memory is read from it."),
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="swarmwatch YAML/TOML config."),
    log_json: bool = typer.Option(False, "--log-json", help="Structured JSON logs."),
) -> None:
    """Serve the REST API, WebSocket stream, dashboard and Prometheus /metrics from live NATS data."""
    from sinks.api import TimeRangeError, check_bind, parse_duration

    cfg = config_or_exit(config, {"log_json": log_json or None, **nats_overrides(nats_creds, nats_token)})
    connect_timeout_s = parse_connect_timeout(connect_timeout)
    api_host = renamed("--api-host", api_host, "--host", old_host)
    api_port = renamed("--api-port", api_port, "--port", old_port)
    api_token = renamed("--api-token", api_token, "--token", old_token)
    host = api_host or cfg.sinks.api_host
    port = cfg.sinks.api_port if api_port is None else api_port
    token = api_token or cfg.sinks.api_token
    try:
        backfill_s = 0.0 if backfill.strip() in ("0", "") else parse_duration(backfill)
        alert_backfill_s = 0.0 if alert_backfill.strip() in ("0", "") else parse_duration(alert_backfill)
    except TimeRangeError as exc:
        fail(str(exc))
    if store is not None and not store.is_dir():
        fail(f"--store {str(store)!r} is not a directory")
    if not 0 <= port <= 65535:
        fail(f"--api-port {port} is out of range 0-65535")
    try:
        check_bind(host, token)
    except ValueError as exc:
        fail(str(exc))

    async def main() -> int:
        from swarmwatch.cancellation import close_connection

        from sinks.api import ApiServer
        nc, stop = await start_service(nats, cfg.nats, "swarmwatch-api", cfg.log_level, cfg.log_json, connect_timeout_s)
        server = ApiServer(
            nc, host=host, port=port, token=token, backfill_s=backfill_s, alert_backfill_s=alert_backfill_s, store_root=store,
            extra_allowed_hosts=cfg.sinks.api_allowed_hosts, allowed_origins=cfg.sinks.api_allowed_origins,
        )
        try:
            await server.start()
        except OSError as exc:
            await close_connection(nc)
            fail(str(exc))
        typer.echo(f"swarmwatch dashboard on {server.url}/ (API docs {server.url}/docs, Prometheus {server.url}/metrics); Ctrl-C stops it", err=True)
        await stop.wait()
        return await stop_service(nc, ("the API", server.stop))

    run_async(main)
