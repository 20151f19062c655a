"""``swarmwatch process``: the processor role alone against any NATS URL."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import click
import typer
from typer.core import TyperCommand

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


class _ProcessCommand(TyperCommand):
    """Lists the installed custom operators at the end of ``--help`` (looked up only when help is shown)."""

    def format_help(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        from swarmwatch.plugins import describe_installed

        self.epilog = f"Installed custom operators (run by default; --no-plugins skips them): {describe_installed()}"
        super().format_help(ctx, formatter)


@app.command(cls=_ProcessCommand)
def process(
    nats: str = NATS_URL_OPTION,
    nats_creds: Optional[str] = NATS_CREDS_OPTION,
    nats_token: Optional[str] = NATS_TOKEN_OPTION,
    connect_timeout: Optional[str] = typer.Option(None, "--connect-timeout", help=CONNECT_TIMEOUT_HELP),
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="swarmwatch YAML/TOML config."),
    rules: Optional[Path] = typer.Option(None, "--rules", help="Threshold rules file (YAML/TOML)."),
    name: Optional[str] = typer.Option(None, "--name", help="Processor name: durable consumer and checkpoint key."),
    filter_: Optional[list[str]] = typer.Option(None, "--filter", help="Input subjects (default: all of TELEMETRY), e.g. 'sw.*.eu-1.>' for one cluster; one wildcard filter is far faster than several."),
    operators: Optional[str] = typer.Option(
        None, "--operators", help="Comma-separated subset of rules,windows,liveness,network,byzantine,anomaly (default: all)."
    ),
    checkpoint_interval: Optional[str] = typer.Option(None, "--checkpoint-interval", help="How often state is checkpointed and inputs acked, e.g. 2s."),
    partition: Optional[str] = typer.Option(None, "--partition", help="I/N: take the nodes with crc32(cluster.node) % N == I (each instance needs its own --name)."),
    operator: Optional[list[str]] = typer.Option(
        None, "--operator", help="A custom operator to run as well, pkg.module:attr (an Operator, a subclass, an @operator function or a factory); repeatable."
    ),
    no_plugins: bool = typer.Option(False, "--no-plugins", help="Do not run the operators installed under the entry-point group swarmwatch.operators."),
    fresh: bool = typer.Option(False, "--fresh", help="Ignore the checkpoint and start from the beginning of the stream."),
    log_json: bool = typer.Option(False, "--log-json", help="Structured JSON logs."),
) -> None:
    """Window, aggregate and evaluate rules on the TELEMETRY stream; publish to DERIVED."""
    cfg = config_or_exit(
        config,
        {
            "processor.rules": str(rules) if rules else None,
            "processor.name": name,
            "processor.filter": filter_ or None,
            "processor.operators": operators,
            "processor.partition": partition,
            "processor.checkpoint_interval": checkpoint_interval,
            "log_json": log_json or None,
            **nats_overrides(nats_creds, nats_token),
        },
    )
    connect_timeout_s = parse_connect_timeout(connect_timeout)

    from swarmwatch.plugins import PluginError, load_operators

    try:
        custom = load_operators(operator or (), include_installed=not no_plugins)
    except PluginError as exc:
        fail(str(exc))

    async def main() -> int:
        from swarmwatch.connect import redact_url
        from swarmwatch.pipeline import export_watches, make_runtime
        from swarmwatch.streams import ensure_streams

        nc, stop = await start_service(nats, cfg.nats, f"swarmwatch-{cfg.processor.name}", cfg.log_level, cfg.log_json, connect_timeout_s)
        r = cfg.retention
        await ensure_streams(nc.jetstream(), *r.limits())
        try:
            rt = make_runtime(nc, cfg, custom, fresh=fresh, plugins=False)
        except ValueError as exc:  # e.g. a custom operator named like a built-in one
            fail(str(exc))
        await rt.start()
        await export_watches(nc, rt.operators, cfg.processor.name)
        typer.echo(f"processor {cfg.processor.name} running on {redact_url(nats)}; Ctrl-C stops it cleanly", err=True)
        await stop.wait()
        return await stop_service(nc, ("the processor (checkpoint, acks)", rt.stop))

    run_async(main)
