"""ApiServer: the live feed plus uvicorn, in-process, in the caller's event loop.

    server = ApiServer(nc, host="127.0.0.1", port=8686, token=None)
    await server.start()      # subscribed, backfilling, listening
    ...
    await server.stop()

Binding anything but a loopback address needs a token; without one the
constructor refuses with a ValueError that names the address.
"""
from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
from collections.abc import Sequence
from pathlib import Path

import uvicorn
from nats.aio.client import Client as NATS

from sinks.api.app import create_app
from sinks.api.exposition import DEFAULT_STATS
from sinks.api.live import DEFAULT_ALERT_BACKFILL_S, DEFAULT_BACKFILL_S, Hub, LiveFeed
from sinks.api.security import check_token_strength, default_allowed_hosts
from sinks.api.state import FleetState
from swarmwatch.http_serving import InProcessServer, bind_tcp, stop_serving, wait_started

log = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8686
STARTUP_TIMEOUT_S = 15.0


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and ``localhost``."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_bind(host: str, token: str | None) -> None:
    """Refuse a non-loopback bind without a token, and any token shorter than 16 characters."""
    check_token_strength(token or None)
    if not is_loopback(host) and not token:
        raise ValueError(
            f"refusing to serve the API on {host!r} without an access token: anyone who can reach it could read "
            "the fleet's data. Pass --token (or SWARMWATCH_API_TOKEN), or bind 127.0.0.1"
        )


class ApiServer:
    """The HTTP API, WebSocket, dashboard and /metrics over a live NATS connection.

    ``nc`` may be None to serve a ``state`` fed by someone else (tests, reports).
    ``port=0`` picks a free port; ``url`` tells which once started. ``store_root``
    (the file sinks' directory) serves history older than the in-memory ring.
    ``Host`` headers answered: loopback names for a loopback bind, any otherwise
    (a token is required there), plus ``extra_allowed_hosts``; ``allowed_origins``:
    browser origins besides the API's own (config ``sinks.api_allowed_hosts`` and
    ``sinks.api_allowed_origins``).
    """

    def __init__(
        self,
        nc: NATS | None,
        *,
        host: str = DEFAULT_HOST,
        port: int = DEFAULT_PORT,
        token: str | None = None,
        state: FleetState | None = None,
        backfill_s: float = DEFAULT_BACKFILL_S,
        alert_backfill_s: float = DEFAULT_ALERT_BACKFILL_S,
        metric_stats: Sequence[str] = DEFAULT_STATS,
        store_root: str | Path | None = None,
        log_level: str = "warning",
        allowed_hosts: Sequence[str] | None = None,
        allowed_origins: Sequence[str] = (),
        extra_allowed_hosts: Sequence[str] = (),
    ) -> None:
        check_bind(host, token)
        if not 0 <= port <= 65535:
            raise ValueError(f"port {port!r} is out of range 0-65535")
        self.nc = nc
        self.host = host
        self.port = port
        self.token = token or None
        self.state = state or FleetState()
        self.hub = Hub(self.state)
        self.feed = None if nc is None else LiveFeed(nc, self.state, self.hub, backfill_s=backfill_s, alert_backfill_s=alert_backfill_s)
        self.app = create_app(
            self.state,
            self.token,
            self.hub,
            metric_stats=metric_stats,
            nats_connected=None if nc is None else (lambda: bool(nc.is_connected)),
            store_root=store_root,
            allowed_hosts=[*(default_allowed_hosts(host) if allowed_hosts is None else allowed_hosts), *extra_allowed_hosts],
            allowed_origins=allowed_origins,
        )
        config = uvicorn.Config(self.app, host=host, port=port, log_level=log_level, lifespan="off", access_log=False, ws="websockets-sansio")
        self._server = InProcessServer(config)
        self._task: asyncio.Task[None] | None = None
        self.bound_port: int | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.bound_port or self.port}"

    async def start(self) -> None:
        """Subscribe the live feed (backfill runs in the background) and start listening."""
        sock = self._bind()
        self.bound_port = int(sock.getsockname()[1])
        if self.feed is not None:
            await self.feed.start()
        self._task = asyncio.create_task(self._server.serve(sockets=[sock]), name="api-uvicorn")
        if not await wait_started(self._server, self._task, STARTUP_TIMEOUT_S):
            if self._task.done():
                exc = self._task.exception() if not self._task.cancelled() else None
                await self._stop_feed()
                raise RuntimeError(f"API server on {self.host}:{self.port} did not start: {exc or 'exited'}")
            await self.stop()
            raise RuntimeError(f"API server on {self.host}:{self.port} did not start within {STARTUP_TIMEOUT_S}s")
        log.info("API and dashboard on %s", self.url)

    def _bind(self) -> socket.socket:
        """Bind here, so a taken port is a clear error rather than uvicorn's exit."""
        sock = bind_tcp(self.host, self.port, "serve the API", "pick another with --api-port (sinks.api_port in a config file)")
        sock.set_inheritable(True)
        return sock

    async def stop(self) -> None:
        """Stop listening (closing WebSockets) and unsubscribe."""
        if self._task is not None:
            await stop_serving(self._server, self._task)
            self._task = None
        await self._stop_feed()

    async def _stop_feed(self) -> None:
        if self.feed is not None:
            await self.feed.stop()

    async def __aenter__(self) -> ApiServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
