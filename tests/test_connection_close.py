"""Closing a NATS connection, and publishing on one, end within their bounds even when the server reads nothing.

nats-py's ``close()`` writes out what is still pending and waits for the socket
to close; against a server that stopped reading (a hung host, a half-open
connection across a network cut) that wait has no end, and a service's stop,
or a one-shot command's exit, waited with it.
"""
from __future__ import annotations

import asyncio
from typing import Any

import nats
import pytest

import swarmwatch.connect
from swarmwatch.cancellation import close_connection, close_now
from swarmwatch.connect import connect_options
from swarmwatch.server import EmbeddedServer
from tests.support import ends_within, frozen

PENDING_MB = 24  # more than the client's and the server's socket buffers hold together


async def _unsent_backlog(nc: Any) -> None:
    chunk = b"x" * (1024 * 1024)
    for _ in range(PENDING_MB):
        await nc.publish("sw.test.backlog", chunk)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("close", [close_connection, close_now], ids=["service-stop", "command-exit"])
async def test_closing_a_connection_to_a_server_that_reads_nothing_ends_within_its_bound(
    nats_server: EmbeddedServer, close: Any
) -> None:
    nc = await nats.connect(nats_server.url, max_reconnect_attempts=-1, pending_size=64 * 1024 * 1024)
    with frozen(nats_server):
        await _unsent_backlog(nc)
        await asyncio.wait_for(close(nc, 1.0), 20)  # the bound, the drain's and the cancels' grace; not for ever
        assert nc.is_closed


@pytest.mark.timeout(60)
async def test_a_publish_into_a_full_buffer_to_a_server_that_reads_nothing_returns(
    nats_server: EmbeddedServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past ``pending_size`` nats-py flushes before returning; with no ``flush_timeout`` that waited for ever
    (swallowing the cancel meant to end it). swarmwatch's connections set one."""
    monkeypatch.setattr(swarmwatch.connect, "FLUSH_TIMEOUT_S", 1.0)  # swarmwatch's 10 s, shortened for the spec
    opts = connect_options()
    opts["pending_size"] = 2 * 1024 * 1024  # reached soon
    flush_timeouts: list[Exception] = []

    async def on_error(exc: Exception) -> None:
        if isinstance(exc, nats.errors.FlushTimeoutError):
            flush_timeouts.append(exc)

    opts["error_cb"] = on_error
    nc = await nats.connect(nats_server.url, **opts)
    chunk = b"x" * (512 * 1024)

    async def publish_past_the_buffer() -> None:
        while not flush_timeouts:  # once the sockets are full, a publish past the limit waits for a flush
            await nc.publish("sw.test.backlog", chunk)

    try:
        with frozen(nats_server):
            await ends_within(publish_past_the_buffer(), 20, "a publish past the outbound buffer")
    finally:
        await close_now(nc, 5.0)
