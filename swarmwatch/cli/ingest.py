"""``swarmwatch ingest otlp``: receive OpenTelemetry metrics (OTLP/HTTP) and publish them as MetricBatches."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from swarmwatch.cli import app
from swarmwatch.cli.common import (
    CONNECT_TIMEOUT_HELP,
    NATS_CREDS_OPTION,
    NATS_TOKEN_OPTION,
    NATS_URL_OPTION,
    config_or_exit,
    fail,
    nats_overrides,
    parse_connect_timeout,
    run_async,
    start_service,
    stop_service,
)

ingest_app = typer.Typer(help="Receive metrics from other systems and publish them as swarmwatch batches.",
                         no_args_is_help=True)
app.add_typer(ingest_app, name="ingest")


@ingest_app.command("otlp")
def otlp(
    nats: str = NATS_URL_OPTION,
    nats_creds: Optional[str] = NATS_CREDS_OPTION,
    nats_token: Optional[str] = NATS_TOKEN_OPTION,
    connect_timeout: Optional[str] = typer.Option(None, "--connect-timeout", help=CONNECT_TIMEOUT_HELP),
    api_host: str = typer.Option("127.0.0.1", "--api-host", help="Address to bind; anything but loopback needs --api-token."),
    api_port: int = typer.Option(4318, "--api-port", help="TCP port for OTLP/HTTP (4318, the SDKs' default; 0 picks a free one)."),
    api_token: Optional[str] = typer.Option(None, "--api-token", envvar="SWARMWATCH_API_TOKEN",
                                            help="Required as 'Authorization: Bearer <token>' on every export."),
    cluster: str = typer.Option("default", "--cluster", help="Cluster when no mapped resource attribute is present."),
    node: str = typer.Option("otlp", "--node", help="Node when no mapped resource attribute is present."),
    cluster_from: Optional[list[str]] = typer.Option(
        None, "--cluster-from", help="Resource attribute naming the cluster (repeatable, first present wins; "
        "default: swarmwatch.cluster, service.namespace)."),
    node_from: Optional[list[str]] = typer.Option(
        None, "--node-from", help="Resource attribute naming the node (repeatable, first present wins; "
        "default: swarmwatch.node, host.name, service.instance.id)."),
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="swarmwatch YAML/TOML config (nats, logging)."),
    log_json: bool = typer.Option(False, "--log-json", help="Structured JSON logs."),
) -> None:
    """Serve POST /v1/metrics (OTLP/HTTP, protobuf or JSON) and publish to sw.metrics.<cluster>.<node>."""
    from producers.otlp import DEFAULT_CLUSTER_ATTRS, DEFAULT_NODE_ATTRS, OtlpReceiver, ResourceMapping

    cfg = config_or_exit(config, {"log_json": log_json or None, **nats_overrides(nats_creds, nats_token)})
    connect_timeout_s = parse_connect_timeout(connect_timeout)
    try:
        mapping = ResourceMapping(cluster, node, tuple(cluster_from or DEFAULT_CLUSTER_ATTRS),
                                  tuple(node_from or DEFAULT_NODE_ATTRS))
        OtlpReceiver(None, api_host, api_port, mapping, api_token)  # checks port and bind before connecting
    except ValueError as exc:
        fail(str(exc))

    async def main() -> int:
        from swarmwatch.cancellation import close_connection

        nc, stop = await start_service(nats, cfg.nats, "swarmwatch-ingest-otlp", cfg.log_level, cfg.log_json,
                                       connect_timeout_s)
        receiver = OtlpReceiver(nc, api_host, api_port, mapping, api_token)
        try:
            await receiver.start()
        except (OSError, RuntimeError) as exc:
            await close_connection(nc)
            fail(str(exc))
        typer.echo(f"receiving OTLP/HTTP metrics on {receiver.url}/v1/metrics "
                   f"(cluster from {list(mapping.cluster_attrs)}, node from {list(mapping.node_attrs)}); Ctrl-C stops it",
                   err=True)
        await stop.wait()
        code = await stop_service(nc, ("the OTLP receiver", receiver.stop))
        s = receiver.stats
        typer.echo(f"stopped: requests={s.requests} points={s.points} samples={s.samples} batches={s.batches} "
                   f"dropped={s.dropped} rejected={s.rejected} failed={s.failed}", err=True)
        return code

    run_async(main)
