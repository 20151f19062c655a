"""Fixtures for the example's tests: a real nats-server from swarmwatch's embedded binary."""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from swarmwatch.server import EmbeddedServer


@pytest.fixture
def nats_url(tmp_path: Path) -> Iterator[str]:
    srv = EmbeddedServer(tmp_path / "nats", port=0)
    srv.start()
    try:
        yield srv.url
    finally:
        srv.stop()
