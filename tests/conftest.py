"""Shared fixtures: a real nats-server on 127.0.0.1, a random port and a temporary store."""
from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from swarmwatch.server import EmbeddedServer


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[EmbeddedServer]:
    """A fresh JetStream-enabled nats-server for one test."""
    srv = EmbeddedServer(tmp_path / "nats", port=0)
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture
async def nc(nats_server: EmbeddedServer) -> AsyncIterator[object]:
    """A connected nats-py client to ``nats_server``."""
    import nats

    client = await nats.connect(nats_server.url, max_reconnect_attempts=5, connect_timeout=5)
    try:
        yield client
    finally:
        await client.close()
