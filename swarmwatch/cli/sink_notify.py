"""``swarmwatch sink notify``: the notification sink alone against any NATS URL."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer

from swarmwatch.cli import sink_app
from swarmwatch.cli.common import (
    CONNECT_TIMEOUT_HELP,
    NATS_CREDS_OPTION,
    NATS_TOKEN_OPTION,
    NATS_URL_OPTION,
    fail,
    parse_connect_timeout,
    run_async,
    start_service,
    stop_service,
)


@sink_app.command("notify")
def sink_notify(
    config: Path = typer.Option(..., "--config", "-c", help="YAML/TOML/JSON file with a 'notify:' section (docs/notify.md)."),
    nats: str = NATS_URL_OPTION,
    nats_creds: Optional[str] = NATS_CREDS_OPTION,
    nats_token: Optional[str] = NATS_TOKEN_OPTION,
    connect_timeout: Optional[str] = typer.Option(None, "--connect-timeout", help=CONNECT_TIMEOUT_HELP),
    log_level: str = typer.Option("INFO", "--log-level", help="DEBUG, INFO, WARNING or ERROR."),
    log_json: bool = typer.Option(False, "--log-json", help="Structured JSON log lines."),
) -> None:
    """Send alerts from sw.alerts.> to people (e-mail, Slack, Telegram, SMS, webhooks via Apprise)."""
    from sinks.notify import ConfigError, NotifySink, load_config

    try:
        cfg = load_config(config)
    except ConfigError as exc:
        fail(str(exc))
    nats_cfg = _nats_section(config)
    nats_cfg = nats_cfg.model_copy(update={k: v for k, v in (("creds", nats_creds), ("token", nats_token)) if v})
    connect_timeout_s = parse_connect_timeout(connect_timeout)

    async def main() -> int:
        from swarmwatch.cancellation import close_connection

        from swarmwatch.connect import redact_url
        from swarmwatch.streams import wait_for_streams

        nc, stop = await start_service(nats, nats_cfg, "swarmwatch-sink-notify", log_level, log_json, connect_timeout_s)
        if not await wait_for_streams(nc.jetstream(), ("DERIVED",), stop):
            await close_connection(nc)
            return 0
        sink = NotifySink(nc, cfg)
        await sink.start()
        names = ", ".join(ch.redacted for ch in cfg.channels) or "(none: log only)"
        typer.echo(f"notify sink on {redact_url(nats)}: channels {names}; Ctrl-C stops it cleanly", err=True)
        await stop.wait()
        return await stop_service(nc, ("the notify sink", sink.stop))

    run_async(main)


def _nats_section(path: Path) -> Any:
    """Connection settings (auth, TLS) from the same file's ``nats:`` section, if it has one."""
    from pydantic import ValidationError

    from processors.configfile import ConfigError, format_validation_error, read_config_file
    from swarmwatch.config import NatsConfig

    try:
        raw = read_config_file(path, "notify")
    except ConfigError as exc:
        fail(str(exc))
    section = raw.get("nats") if isinstance(raw, dict) else None
    try:
        return NatsConfig.model_validate(section or {})
    except ValidationError as exc:
        fail(format_validation_error(f"{path}: nats", exc))
