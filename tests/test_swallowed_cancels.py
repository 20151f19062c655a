"""A producer's parts stop within their bound even when one swallowed a cancel.

On Python 3.11 ``asyncio.wait_for`` (inside nats-py's requests and JetStream
publishes) swallows a cancel that arrives in the loop turn its inner future
completes (CPython gh-86296). A task cancelled once and then awaited carried
on, and its ``stop`` waited on it for ever. The stand-ins below swallow the
first cancel they get, as such a ``wait_for`` does, and honour the next.
"""
from __future__ import annotations

import asyncio
from typing import Any

import nats
import pytest

from producers.discovery import Discovery, PeerTable
from producers.publisher import Publisher
from producers.sidecar import run_producer
from swarmwatch.server import EmbeddedServer
from swarmwatch.streams import ensure_streams
from tests.support import ends_within


async def _swallow_one_cancel(blocked: asyncio.Event) -> None:
    blocked.set()
    try:
        await asyncio.sleep(3600)
    except asyncio.CancelledError:
        pass  # swallowed, as wait_for does when the reply lands in the cancel's loop turn
    await asyncio.sleep(3600)  # carries on; the next cancel is honoured


@pytest.mark.timeout(60)
async def test_stopping_discovery_ends_when_a_heartbeat_publish_swallowed_the_cancel(nc: Any) -> None:
    blocked = asyncio.Event()

    async def publish(subject: str, data: bytes, msg_id: str) -> None:
        if subject.endswith(".heartbeat"):
            await _swallow_one_cancel(blocked)

    d = Discovery(nc, "c1", "n1", PeerTable("n1"), heartbeat_s=0.05, publish_fn=publish)
    await d.start()
    await asyncio.wait_for(blocked.wait(), 10)
    await ends_within(d.stop(clean=False), 20, "discovery's stop (its heartbeat task)")


@pytest.mark.timeout(60)
async def test_a_producer_ends_when_a_side_task_swallowed_the_cancel(nats_server: EmbeddedServer) -> None:
    nc = await nats.connect(nats_server.url)
    try:
        await ensure_streams(nc.jetstream())
    finally:
        await nc.close()
    blocked = asyncio.Event()

    async def side(pub: Publisher, stop: asyncio.Event) -> None:
        await _swallow_one_cancel(blocked)  # ignores stop, swallows the first cancel

    result = await ends_within(
        run_producer(nats_server.url, "c1", "n1", "100ms", publisher=Publisher(nats_server.url), tasks=[side], gpu=False,
                     registry=None, max_batches=2, close_timeout_s=1.0),
        20, "the producer (its side task)",
    )
    assert blocked.is_set() and result["sent"] == 2
