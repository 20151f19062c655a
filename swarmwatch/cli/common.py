"""Helpers shared by the CLI commands: config loading with clean errors, signals, asyncio."""
from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import typer

if TYPE_CHECKING:
    from swarmwatch.config import Config, NatsConfig


def fail(message: str, code: int = 2) -> NoReturn:
    """Print a user error (no traceback) and exit."""
    typer.secho(f"error: {message}", err=True, fg=typer.colors.RED)
    raise typer.Exit(code)


def config_or_exit(path: Path | None, overrides: dict[str, Any]) -> Config:
    from processors.configfile import ConfigError
    from swarmwatch.config import load_config

    try:
        return load_config(path, overrides)
    except ConfigError as exc:
        fail(str(exc))


FORCED_EXIT_CODE = 130


def install_stop_signals(stop: asyncio.Event) -> None:
    """SIGINT/SIGTERM set ``stop`` so the command shuts down cleanly; a second one exits at once."""
    loop = asyncio.get_running_loop()

    def _on_signal(sig: signal.Signals) -> None:
        if stop.is_set():
            sys.stderr.write(f"{sig.name} again: exiting without a clean stop\n")
            sys.stderr.flush()
            os._exit(FORCED_EXIT_CODE)
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, _on_signal, sig)
        except (NotImplementedError, RuntimeError):
            pass


def run_async(main: Callable[[], Awaitable[int | None]]) -> None:
    """Run ``main`` in a fresh event loop; its int result is the exit code."""
    from nats.errors import Error as NatsError

    from processors.configfile import ConfigError

    try:
        code = asyncio.run(main())
    except ConfigError as exc:
        fail(str(exc))
    except (NatsError, TimeoutError, ConnectionError) as exc:  # the broker went away or refused a request
        fail(f"NATS: {str(exc) or type(exc).__name__} (is the server up and the user allowed? a supervisor restarts the service)", code=1)
    except KeyboardInterrupt:
        code = 130
    if code:
        sys.exit(code)


async def start_service(
    nats_url: str,
    nats_cfg: Any,
    name: str,
    log_level: str = "INFO",
    log_json: bool = False,
    connect_timeout_s: float | None = None,
) -> tuple[Any, asyncio.Event]:
    """A long-running role's start: logging, Ctrl-C/SIGTERM to a stop event, a NATS connection.

    Returns ``(nc, stop)``. Connecting retries with backoff until a server answers;
    a signal meanwhile exits cleanly (code 0), ``connect_timeout_s`` passing or
    refused credentials exit with a one-line error, as does a bad log level.
    """
    from swarmwatch.connect import ConnectError, ConnectStopped, connect

    setup_logging_or_exit(log_level, log_json)
    stop = asyncio.Event()
    install_stop_signals(stop)
    try:
        nc = await connect(nats_url, nats_cfg, name=name, timeout_s=connect_timeout_s, stop=stop)
    except ConnectStopped:
        typer.echo("stopped before a NATS server answered", err=True)
        raise typer.Exit(0)
    except ConnectError as exc:
        fail(str(exc), code=1)
    return nc, stop


STOP_STEP_S = 30.0  # the longest one part of a service may take to stop while the broker is there
STOP_STEP_AWAY_S = 5.0  # ... and while it is not (nothing can be flushed anyway)


async def stop_service(nc: Any, *steps: tuple[str, Callable[[], Awaitable[Any]]]) -> int:
    """Stop a service's parts in order, each within a bounded time, then drain or close ``nc``.

    A part that fails or overruns (typically: the broker went away) is logged in
    one line and left; the exit code stays 0, since what was not acked is
    delivered again at the next start.
    """
    from swarmwatch.cancellation import bounded, close_connection

    for what, fn in steps:
        await bounded(fn, STOP_STEP_S if nc.is_connected else STOP_STEP_AWAY_S, what)
    await close_connection(nc, STOP_STEP_S if nc.is_connected else STOP_STEP_AWAY_S)
    return 0


def setup_logging_or_exit(log_level: str, log_json: bool) -> None:
    """Configure logging; a bad level is a user error."""
    from swarmwatch.logs import setup_logging

    try:
        setup_logging(log_level, log_json)
    except ValueError as exc:
        fail(str(exc))


def parse_connect_timeout(value: str | None) -> float | None:
    """``--connect-timeout`` as seconds (None: retry forever); a bad value exits with an error."""
    if value is None or value.strip() in ("", "0", "forever"):
        return None
    from schemas.durations import DurationError, parse_duration

    try:
        return parse_duration(value)
    except DurationError as exc:
        fail(f"--connect-timeout: {exc}")


CONNECT_TIMEOUT_HELP = "Give up with an error if no NATS server answers within this long, e.g. 30s (default: keep retrying)."


# --- the shared flag vocabulary: --nats-* for the broker, --api-* for HTTP, --store for files, --output/-o for output files ---

NATS_URL_HELP = "NATS URL(s), comma-separated (env SWARMWATCH_NATS)."
NATS_CREDS_HELP = "NATS credentials file: a per-node .creds/.nk from `swarmwatch creds issue` (env SWARMWATCH_NATS_CREDS)."
NATS_TOKEN_HELP = "NATS auth token (env SWARMWATCH_NATS_TOKEN)."


# One definition of the broker options, shared by every command that talks to NATS
# (typer reads an Option's settings and never changes them, so one instance serves many commands).
NATS_URL_OPTION: Any = typer.Option("nats://127.0.0.1:4222", "--nats", envvar="SWARMWATCH_NATS", help=NATS_URL_HELP)
NATS_CREDS_OPTION: Any = typer.Option(None, "--nats-creds", envvar="SWARMWATCH_NATS_CREDS", help=NATS_CREDS_HELP)
NATS_TOKEN_OPTION: Any = typer.Option(None, "--nats-token", envvar="SWARMWATCH_NATS_TOKEN", help=NATS_TOKEN_HELP)
CONFIG_OPTION: Any = typer.Option(None, "--config", "-c", help="swarmwatch YAML/TOML config (nats: user/password, TLS, ...).")


def renamed(new_flag: str, new_value: Any, old_flag: str, old_value: Any) -> Any:
    """The value of a renamed flag: the new name wins; the old (hidden) name still works this release, with a warning."""
    if old_value is None or old_value is False:
        return new_value
    if new_value is not None and new_value is not False and new_value != old_value:
        fail(f"{old_flag} is the old name of {new_flag}; give only {new_flag}")
    typer.secho(f"warning: {old_flag} is deprecated and will be removed; use {new_flag}", err=True, fg=typer.colors.YELLOW)
    return old_value


def nats_overrides(creds: str | None, token: str | None) -> dict[str, Any]:
    """Config overrides for the broker flags shared by every service."""
    return {"nats.creds": creds, "nats.token": token}


def client_nats_config(config: Path | None, creds: str | None, token: str | None) -> NatsConfig:
    """The broker settings of a one-shot client command: ``--config``'s nats section with --nats-creds/--nats-token on top."""
    return config_or_exit(config, nats_overrides(creds, token)).nats
