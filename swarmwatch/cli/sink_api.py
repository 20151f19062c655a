"""``swarmwatch sink api``: the HTTP API, WebSocket, dashboard and /metrics on their own."""
from __future__ import annotations

import asyncio
import signal

import typer

from swarmwatch.cli import sink_app


async def _serve(nats_url: str, host: str, port: int, token: str | None, backfill_s: float, alert_backfill_s: float) -> None:
    import nats
    from nats.errors import NoServersError

    from sinks.api import ApiServer

    server_args = dict(host=host, port=port, token=token, backfill_s=backfill_s, alert_backfill_s=alert_backfill_s)
    try:
        nc = await nats.connect(nats_url, name="swarmwatch-api", max_reconnect_attempts=-1, connect_timeout=5)
    except (NoServersError, OSError, asyncio.TimeoutError) as exc:
        raise typer.BadParameter(f"cannot connect to NATS at {nats_url!r}: {exc or type(exc).__name__}", param_hint="--nats") from None
    api = ApiServer(nc, **server_args)  # type: ignore[arg-type]
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await api.start()
        typer.echo(f"swarmwatch API and dashboard on {api.url}/ (docs {api.url}/docs, metrics {api.url}/metrics)", err=True)
        await stop.wait()
    finally:
        await api.stop()
        await nc.close()


@sink_app.command("api")
def api(
    nats_url: str = typer.Option("nats://127.0.0.1:4222", "--nats", help="NATS server URL."),
    host: str = typer.Option("127.0.0.1", help="Address to bind; anything but loopback needs --token."),
    port: int = typer.Option(8686, help="TCP port (0 picks a free one)."),
    token: str | None = typer.Option(None, envvar="SWARMWATCH_API_TOKEN", help="Access token for /api, /ws and /metrics."),
    backfill: str = typer.Option("1h", help="Aggregates, trust and health to load from DERIVED at start (0 for none)."),
    alert_backfill: str = typer.Option("24h", help="Alerts to load from DERIVED at start (0 for none)."),
) -> None:
    """Serve the REST API, WebSocket stream, dashboard and Prometheus /metrics from live NATS data."""
    from sinks.api import TimeRangeError, check_bind, parse_duration

    try:
        backfill_s = 0.0 if backfill.strip() in ("0", "") else parse_duration(backfill)
        alert_backfill_s = 0.0 if alert_backfill.strip() in ("0", "") else parse_duration(alert_backfill)
    except TimeRangeError as exc:
        raise typer.BadParameter(str(exc)) from None
    try:
        check_bind(host, token)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--host") from None
    try:
        asyncio.run(_serve(nats_url, host, port, token, backfill_s, alert_backfill_s))
    except OSError as exc:
        raise typer.BadParameter(str(exc), param_hint="--port") from None
