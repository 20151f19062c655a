"""The processor outlives publish acks that never come, and its stop ends while the broker is away.

nats-py's ``publish_async`` takes one of 4,000 slots per publish and frees it
only when the ack's future is done; an ack lost with a connection or a stream
leader never comes, so its slot was held for ever, and once 4,000 were lost
every publish (and with it the processor, and its stop) waited for ever. The
acks are dropped here by a stand-in for nats-py's ack handler on the
processor's own JetStream context; the server and everything else are real.
"""
from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Iterator
from typing import Any

import nats
import pytest
from nats.js.client import JetStreamContext

from processors import Emit, Operator, Runtime
from schemas import MetricBatch, Sample, encode, subjects
from swarmwatch.server import EmbeddedServer
from swarmwatch.streams import ensure_streams
from tests.support import stored, wait_for

ACK_WINDOW = 4000  # nats-py's publish_async_max_pending default: the slots a processor's JetStream context has


class Echo(Operator):
    """One output per input batch, deduplicated by the batch's node and seq."""

    name = "echo"

    def on_metrics(self, batch: MetricBatch, now: float) -> Iterable[Emit]:
        return [Emit(subjects.health(batch.cluster), b"{}", f"echo:{batch.node}:{batch.seq}")]


@pytest.fixture
def lost_acks(monkeypatch: pytest.MonkeyPatch) -> Iterator[set[int]]:
    """Acks to the JetStream contexts whose id() is in the set are dropped (never delivered to their future)."""
    lost: set[int] = set()
    original = JetStreamContext._handle_async_reply

    async def handle(self: JetStreamContext, msg: Any) -> None:
        if id(self) not in lost:
            await original(self, msg)

    monkeypatch.setattr(JetStreamContext, "_handle_async_reply", handle)
    yield lost


async def _publish_inputs(js: Any, n: int) -> None:
    t0 = time.time() - 60
    acks = [await js.publish_async(subjects.metrics("c1", "n1"), encode(MetricBatch("c1", "n1", t0 + i, [Sample("x", 1.0)], seq=i)),
                                   headers={"Nats-Msg-Id": f"in:{i}"}) for i in range(n)]
    await asyncio.wait_for(asyncio.gather(*acks), 30)


@pytest.mark.timeout(60)
async def test_a_processor_whose_publish_acks_were_lost_goes_on_once_they_come_again(nc: Any, lost_acks: set[int]) -> None:
    js = nc.jetstream()
    await ensure_streams(js)
    rt = Runtime(nc, [Echo()], name="acks", checkpoint_interval_s=0.2, publish_timeout_s=0.3)
    lost_acks.add(id(rt.js))
    await rt.start()
    try:
        n = ACK_WINDOW + 100
        await _publish_inputs(js, n)
        await wait_for(lambda: rt.stats.published >= ACK_WINDOW and rt.stats.rewinds >= 1, 20,
                       "the processor publishing a window's worth of outputs whose acks are lost")
        lost_acks.clear()  # the broker acks again
        await wait_for(lambda: rt._ckpt_seq >= n, 20, "a checkpoint past every input once acks came again")
        assert len(await stored(js, "sw.health.c1")) == n  # every input's output, once
    finally:
        await asyncio.wait_for(rt.stop(), 15)


@pytest.mark.timeout(60)
async def test_a_stop_with_unacked_outputs_ends_while_the_broker_is_away(nats_server: EmbeddedServer, lost_acks: set[int]) -> None:
    nc = await nats.connect(nats_server.url, max_reconnect_attempts=-1, reconnect_time_wait=0.2)
    try:
        js = nc.jetstream()
        await ensure_streams(js)
        rt = Runtime(nc, [Echo()], name="away", checkpoint_interval_s=3600, publish_timeout_s=0.3, rewind_timeout_s=0.5)
        lost_acks.add(id(rt.js))
        await rt.start()
        await _publish_inputs(js, 20)
        await wait_for(lambda: rt.stats.processed == 20, 20, "the 20 inputs processed (their acks lost)")
        nats_server.kill()
        await asyncio.wait_for(rt.stop(), 20)  # not checkpointed past the unstored outputs, and not for ever
        assert rt._ckpt_seq == 0 and rt._puller._sub is None
    finally:
        await nc.close()
