"""Closing a NATS connection ends within its bound, even when the server reads nothing.

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

from swarmwatch.cancellation import close_connection, close_now
from swarmwatch.server import EmbeddedServer
from tests.support import frozen

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
