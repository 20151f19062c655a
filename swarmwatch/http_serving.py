"""uvicorn inside the caller's event loop: the port bound up front, started, stopped.

Shared by the API sink (``sinks.api.server``) and the OTLP receiver (``producers.otlp``).
"""
from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Generator

import uvicorn

STOP_TIMEOUT_S = 10.0  # how long in-flight requests get to finish before the server task is cancelled


class InProcessServer(uvicorn.Server):
    """uvicorn that leaves signal handling to the host process."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


def bind_tcp(host: str, port: int, doing: str, hint: str) -> socket.socket:
    """A TCP socket bound to ``host:port`` (IPv6 when ``host`` has a colon; ``[::1]`` accepted).

    Bound here, so a taken port is a clear ``OSError`` ("cannot <doing> on host:port: reason;
    <hint>") rather than uvicorn's exit.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY on accepted sockets only then (else keep-alive answers wait ~40 ms)
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host.strip("[]"), port))
    except OSError as exc:
        sock.close()
        raise OSError(f"cannot {doing} on {host}:{port}: {exc.strerror or exc}; {hint}") from None
    return sock


async def wait_started(server: uvicorn.Server, task: asyncio.Task[None], timeout_s: float) -> bool:
    """True once ``server`` listens (polled every 20 ms); False as soon as ``task`` ends or ``timeout_s`` passes."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not server.started:
        if task.done() or loop.time() > deadline:
            return False
        await asyncio.sleep(0.02)
    return True


async def stop_serving(server: uvicorn.Server, task: asyncio.Task[None], timeout_s: float = STOP_TIMEOUT_S) -> None:
    """Ask ``server`` to exit (in-flight requests finish) and wait up to ``timeout_s``; then cancel ``task``."""
    server.should_exit = True
    try:
        await asyncio.wait_for(task, timeout=timeout_s)
    except (asyncio.TimeoutError, asyncio.CancelledError, SystemExit):
        task.cancel()
