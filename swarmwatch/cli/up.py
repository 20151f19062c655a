"""``swarmwatch up``: the whole pipeline in one process on an embedded nats-server."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from swarmwatch.cli import app
from swarmwatch.cli.common import CONNECT_TIMEOUT_HELP, config_or_exit, fail, parse_connect_timeout, renamed, run_async


@app.command()
def up(
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="swarmwatch YAML/TOML config (optional)."),
    data_dir: Optional[Path] = typer.Option(None, "--data-dir", help="Where streams and files go (default ./.swarmwatch)."),
    nats: Optional[str] = typer.Option(None, "--nats", help="Use this NATS instead of starting the embedded server."),
    nats_port: Optional[int] = typer.Option(None, "--nats-port", help="Embedded nats-server port (default 4222; 0 = any free)."),
    nats_creds: Optional[str] = typer.Option(None, "--nats-creds", envvar="SWARMWATCH_NATS_CREDS", help="Credentials for the --nats server (env SWARMWATCH_NATS_CREDS)."),
    nats_token: Optional[str] = typer.Option(None, "--nats-token", envvar="SWARMWATCH_NATS_TOKEN", help="Token for the --nats server (env SWARMWATCH_NATS_TOKEN)."),
    connect_timeout: Optional[str] = typer.Option(None, "--connect-timeout", help=CONNECT_TIMEOUT_HELP),
    old_port: Optional[int] = typer.Option(None, "--port", hidden=True),
    cluster: Optional[str] = typer.Option(None, "--cluster", help="This node's cluster name."),
    node: Optional[str] = typer.Option(None, "--node", help="This node's name (default: the hostname)."),
    interval: Optional[str] = typer.Option(None, "--interval", help="Producer interval, e.g. 1s."),
    rules: Optional[Path] = typer.Option(None, "--rules", help="Threshold rules file (YAML/TOML)."),
    notify: Optional[Path] = typer.Option(None, "--notify", help="Notification config (channels, routes)."),
    api_port: Optional[int] = typer.Option(None, "--api-port", help="HTTP API / dashboard port (default 8686)."),
    api_host: Optional[str] = typer.Option(None, "--api-host", help="Bind address of the API (default 127.0.0.1; others need a token)."),
    api_token: Optional[str] = typer.Option(None, "--api-token", envvar="SWARMWATCH_API_TOKEN", help="Access token for the API (or env SWARMWATCH_API_TOKEN)."),
    no_api: bool = typer.Option(False, "--no-api", help="Do not serve the API and dashboard."),
    scrape: Optional[list[str]] = typer.Option(None, "--scrape", help="Prometheus /metrics URL the producer scrapes (repeatable; producer.scrape in a config)."),
    http_check: Optional[list[str]] = typer.Option(None, "--http-check", help="URL the producer health-checks (repeatable; producer.checks in a config)."),
    log_json: bool = typer.Option(False, "--log-json", help="Structured JSON logs."),
) -> None:
    """Start nats-server (JetStream), provision streams, run producer, processors and sinks. Ctrl-C stops cleanly."""
    cfg = config_or_exit(
        config,
        {
            "data_dir": str(data_dir) if data_dir else None,
            "nats.url": nats,
            "nats.port": renamed("--nats-port", nats_port, "--port", old_port),
            "nats.creds": nats_creds,
            "nats.token": nats_token,
            "cluster": cluster,
            "node": node,
            "producer.interval": interval,
            "processor.rules": str(rules) if rules else None,
            "sinks.notify": str(notify) if notify else None,
            "sinks.api_port": api_port,
            "sinks.api_host": api_host,
            "sinks.api_token": api_token,
            "sinks.api": False if no_api else None,
            "log_json": log_json or None,
        },
    )

    connect_timeout_s = parse_connect_timeout(connect_timeout)
    if scrape or http_check:
        from producers.options import sources_from_entries

        cfg.producer.scrape = [*cfg.producer.scrape, *(scrape or [])]
        cfg.producer.checks = [*cfg.producer.checks, *(http_check or [])]
        try:
            sources_from_entries(cfg.producer.scrape, cfg.producer.checks)
        except ValueError as exc:
            fail(str(exc))

    async def main() -> int:
        from swarmwatch.stack import Stack

        return await Stack(cfg, connect_timeout_s=connect_timeout_s).run()

    run_async(main)
