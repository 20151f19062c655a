"""Helpers shared by the CLI commands: config loading with clean errors, signals, asyncio."""
from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import typer

if TYPE_CHECKING:
    from swarmwatch.config import Config


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


def install_stop_signals(stop: asyncio.Event) -> None:
    """SIGINT/SIGTERM set ``stop`` so the command shuts down cleanly."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):
            pass


def run_async(main: Callable[[], Awaitable[int | None]]) -> None:
    """Run ``main`` in a fresh event loop; its int result is the exit code."""
    from processors.configfile import ConfigError

    try:
        code = asyncio.run(main())
    except ConfigError as exc:
        fail(str(exc))
    except KeyboardInterrupt:
        code = 130
    if code:
        sys.exit(code)


async def start_service(nats_url: str, nats_cfg: Any, name: str, log_level: str = "INFO", log_json: bool = False) -> tuple[Any, asyncio.Event]:
    """A long-running role's start: logging, Ctrl-C/SIGTERM to a stop event, a NATS connection.

    Returns ``(nc, stop)``; a bad log level or an unreachable URL exits with a one-line error.
    """
    from swarmwatch.connect import connect, redact_url
    from swarmwatch.logs import setup_logging

    try:
        setup_logging(log_level, log_json)
    except ValueError as exc:
        fail(str(exc))
    stop = asyncio.Event()
    install_stop_signals(stop)
    try:
        nc = await connect(nats_url, nats_cfg, name=name)
    except Exception as exc:
        fail(f"cannot connect to NATS at {redact_url(nats_url)!r}: {exc}")
    return nc, stop
