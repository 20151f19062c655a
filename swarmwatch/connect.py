"""Connecting to NATS with swarmwatch's defaults: reconnect forever, auth and TLS from config."""
from __future__ import annotations

import asyncio
import logging
import re
import socket
import ssl
from typing import Any
from urllib.parse import urlsplit

import nats
from nats.aio.client import Client as NATS

from producers.options import inbox_prefix
from swarmwatch.config import NatsConfig

log = logging.getLogger(__name__)

RECONNECT_WAIT_S = 1.0
CONNECT_TIMEOUT_S = 5.0


def redact_url(url: str) -> str:
    """``nats://user:secret@host:4222`` -> ``nats://user:***@host:4222`` (each URL of a comma list)."""
    return ",".join(re.sub(r"(//[^:/@]*):[^@]*@", r"\1:***@", re.sub(r"//[^:/@]+@", "//***@", u)) for u in url.split(","))


def connect_options(cfg: NatsConfig | None = None, name: str = "swarmwatch") -> dict[str, Any]:
    """Keyword arguments for ``nats.connect`` built from a NatsConfig."""
    cfg = cfg or NatsConfig()
    opts: dict[str, Any] = {
        "name": name,
        "max_reconnect_attempts": -1,
        "reconnect_time_wait": RECONNECT_WAIT_S,
        "connect_timeout": CONNECT_TIMEOUT_S,
        "allow_reconnect": True,
        "pending_size": 64 * 1024 * 1024,
    }
    if cfg.token:
        opts["token"] = cfg.token
    if cfg.user:
        opts["user"] = cfg.user
        opts["password"] = cfg.password or ""
        opts["inbox_prefix"] = inbox_prefix(cfg.user)
    if cfg.creds:
        opts["user_credentials"] = cfg.creds
    if cfg.tls_ca or cfg.tls_cert:
        ctx = ssl.create_default_context(cafile=cfg.tls_ca) if cfg.tls_ca else ssl.create_default_context()
        if cfg.tls_cert:
            ctx.load_cert_chain(cfg.tls_cert, cfg.tls_key)
        opts["tls"] = ctx

    async def _disconnected() -> None:
        log.info("disconnected from NATS (reconnecting unless closing)")

    async def _reconnected() -> None:
        log.info("reconnected to NATS")

    async def _error(exc: Exception) -> None:
        log.warning("NATS error: %s", exc)

    async def _closed() -> None:
        log.debug("NATS connection closed")

    opts["closed_cb"] = _closed
    opts["disconnected_cb"] = _disconnected
    opts["reconnected_cb"] = _reconnected
    opts["error_cb"] = _error
    return opts


async def connect(url: str, cfg: NatsConfig | None = None, name: str = "swarmwatch", *, wait: bool = True) -> NATS:
    """Connect to ``url`` (comma-separated for a cluster); reconnect forever once connected.

    ``wait=True`` (services) keeps trying until a server answers; ``wait=False``
    (one-shot commands) raises ConnectionError at once when no server is reachable.
    """
    servers = [u.strip() for u in url.split(",") if u.strip()]
    if not wait and not any([await asyncio.to_thread(_reachable, u) for u in servers]):
        raise ConnectionError(f"no NATS server reachable at {redact_url(url)}")
    return await nats.connect(servers=servers, **connect_options(cfg, name))


def _reachable(url: str, timeout_s: float = CONNECT_TIMEOUT_S) -> bool:
    """Whether a TCP connection to the URL's host and port opens (default port 4222)."""
    parts = urlsplit(url if "://" in url else f"nats://{url}")
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 4222), timeout=timeout_s):
            return True
    except OSError:
        return False
