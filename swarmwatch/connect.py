"""Connecting to NATS with swarmwatch's defaults: reconnect forever, auth and TLS from config.

The first connection is made here, not inside nats-py: nats-py would retry it
every second forever, warn on each try and never look at a stop request.
``connect`` retries with a doubling backoff, logs at tries 1, 2, 4, 8, ...,
returns early when ``stop`` is set and gives up after ``timeout_s``.
Once connected, nats-py reconnects forever on its own.
"""
from __future__ import annotations

import asyncio
import logging
import re
import socket
import ssl
import time
from typing import Any
from urllib.parse import urlsplit

from nats import errors
from nats.aio.client import Client as NATS

from producers.options import inbox_prefix
from swarmwatch.config import NatsConfig

log = logging.getLogger(__name__)

RECONNECT_WAIT_S = 1.0
CONNECT_TIMEOUT_S = 5.0
FIRST_RETRY_S = 0.5  # wait after the first failed try; doubles each try
MAX_RETRY_S = 30.0  # the longest wait between two tries
# A publish that finds the outbound buffer full waits for it to be written out; without a bound
# that wait lasts for ever when the server reads nothing (and swallows the cancel meant to end it).
FLUSH_TIMEOUT_S = 10.0


class ConnectError(ConnectionError):
    """No connection could be made (unreachable within the timeout, or refused credentials)."""


class ConnectStopped(Exception):
    """A stop was requested while still waiting for the first connection."""


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
        "flush_timeout": FLUSH_TIMEOUT_S,
    }
    if cfg.token:
        opts["token"] = cfg.token
    if cfg.user:
        opts["user"] = cfg.user
        opts["password"] = cfg.password or ""
        opts["inbox_prefix"] = inbox_prefix(cfg.user)
    if cfg.creds:
        from producers.options import creds_options

        try:
            opts.update(creds_options(cfg.creds))
        except ValueError as exc:
            raise ConnectError(str(exc)) from None
    if cfg.tls_ca or cfg.tls_cert:
        ctx = ssl.create_default_context(cafile=cfg.tls_ca) if cfg.tls_ca else ssl.create_default_context()
        if cfg.tls_cert:
            ctx.load_cert_chain(cfg.tls_cert, cfg.tls_key)
        opts["tls"] = ctx

    errors_since_connected = [0]  # a reconnect loop fails every RECONNECT_WAIT_S: log tries 1, 2, 4, 8, ...

    async def _disconnected() -> None:
        log.info("disconnected from NATS (reconnecting unless closing)")

    async def _reconnected() -> None:
        n, errors_since_connected[0] = errors_since_connected[0], 0
        log.info("reconnected to NATS%s", f" after {n} failed tries" if n else "")

    async def _error(exc: Exception) -> None:
        errors_since_connected[0] += 1
        n = errors_since_connected[0]
        if n & (n - 1) == 0:
            log.warning("NATS error: %s%s", exc, f" ({n} since the last connection; fewer lines from now)" if n > 1 else "")

    async def _closed() -> None:
        log.debug("NATS connection closed")

    opts["closed_cb"] = _closed
    opts["disconnected_cb"] = _disconnected
    opts["reconnected_cb"] = _reconnected
    opts["error_cb"] = _error
    return opts


async def connect(
    url: str,
    cfg: NatsConfig | None = None,
    name: str = "swarmwatch",
    *,
    wait: bool = True,
    timeout_s: float | None = None,
    stop: asyncio.Event | None = None,
) -> NATS:
    """Connect to ``url`` (comma-separated for a cluster); reconnect forever once connected.

    ``wait=True`` (services) retries with backoff until a server answers, ``timeout_s``
    passes (then ConnectError) or ``stop`` is set (then ConnectStopped).
    ``wait=False`` (one-shot commands) raises ConnectError at once when no server is reachable.
    Refused credentials raise ConnectError at once: retrying cannot fix them.
    """
    servers = [u.strip() for u in url.split(",") if u.strip()]
    if not servers:
        raise ConnectError("no NATS URL given")
    if not wait and not any([await asyncio.to_thread(_reachable, u) for u in servers]):
        raise ConnectError(f"no NATS server reachable at {redact_url(url)}")
    opts = connect_options(cfg, name)
    start = time.monotonic()
    delay_s = FIRST_RETRY_S
    tries = 0
    while True:
        tries += 1
        try:
            return await _until_stopped(_connect_once(servers, opts), stop)
        except ConnectStopped:
            raise
        except Exception as exc:  # noqa: BLE001 - any failed try: retry or report
            if _refused(exc):
                raise ConnectError(
                    f"NATS at {redact_url(url)} refused our credentials ({exc}); check --nats-creds / --nats-token"
                ) from exc
            reason = _describe(exc)
            if not wait:
                raise ConnectError(f"cannot connect to NATS at {redact_url(url)}: {reason}") from exc
            left_s = None if timeout_s is None else timeout_s - (time.monotonic() - start)
            if left_s is not None and left_s <= 0:
                raise ConnectError(
                    f"no NATS server answered at {redact_url(url)} within {timeout_s:g} s ({tries} tries; last: {reason})"
                ) from exc
            if tries & (tries - 1) == 0:  # 1, 2, 4, 8, ...: fewer lines the longer it lasts
                log.warning("NATS at %s not reachable (%s); retrying, next try in %.1f s (try %d)", redact_url(url), reason, delay_s, tries)
            await _until_stopped(asyncio.sleep(delay_s if left_s is None else min(delay_s, left_s)), stop)
            delay_s = min(delay_s * 2, MAX_RETRY_S)


async def _connect_once(servers: list[str], opts: dict[str, Any]) -> NATS:
    """One try at each server (nats-py's own retry loop switched off); reconnect forever once connected."""
    nc = NATS()
    connected = False
    seen: list[Exception] = []
    report, on_disconnect = opts["error_cb"], opts["disconnected_cb"]

    async def _error(exc: Exception) -> None:  # quiet until connected: connect() reports failed tries
        if connected:
            await report(exc)
        else:
            seen.append(exc)

    async def _disconnected() -> None:
        if connected:
            await on_disconnect()

    first = dict(opts, allow_reconnect=False, max_reconnect_attempts=1, reconnect_time_wait=0,
                 error_cb=_error, disconnected_cb=_disconnected)
    try:
        await nc.connect(servers=servers, **first)
    except errors.NoServersError as exc:
        await nc.close()
        if seen:  # the cause is more useful than "no servers"
            raise seen[-1] from exc
        raise
    except BaseException:
        await nc.close()
        raise
    connected = True
    # nats-py reads these options at each disconnect: from now on it reconnects forever
    nc.options["allow_reconnect"] = True
    nc.options["max_reconnect_attempts"] = opts["max_reconnect_attempts"]
    nc.options["reconnect_time_wait"] = opts["reconnect_time_wait"]
    return nc


async def _until_stopped(aw: Any, stop: asyncio.Event | None) -> Any:
    """Await ``aw`` unless ``stop`` is set first (then cancel it and raise ConnectStopped)."""
    if stop is None:
        return await aw
    if stop.is_set():
        if asyncio.iscoroutine(aw):
            aw.close()
        raise ConnectStopped()
    task = asyncio.ensure_future(aw)
    stopper = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopper.cancel()
    if task.done():
        return task.result()
    task.cancel()
    try:
        await task
    except BaseException:  # noqa: BLE001 - cancelled on purpose
        pass
    raise ConnectStopped()


def _refused(exc: BaseException) -> bool:
    """Whether the server turned our credentials down (retrying cannot help)."""
    return isinstance(exc, errors.AuthorizationError) or "authorization violation" in str(exc).lower()


def _describe(exc: BaseException) -> str:
    """A one-line reason for a failed try."""
    if isinstance(exc, errors.NoServersError):
        return "no server answered"
    if isinstance(exc, (asyncio.TimeoutError, TimeoutError)):
        return f"timed out after {CONNECT_TIMEOUT_S:g} s"
    return str(exc) or type(exc).__name__


def _reachable(url: str, timeout_s: float = CONNECT_TIMEOUT_S) -> bool:
    """Whether a TCP connection to the URL's host and port opens (default port 4222)."""
    parts = urlsplit(url if "://" in url else f"nats://{url}")
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 4222), timeout=timeout_s):
            return True
    except OSError:
        return False
