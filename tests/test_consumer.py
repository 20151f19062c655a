"""The pull consumer over a real nats-server: a request nobody answers is asked again, soon."""
from __future__ import annotations

import asyncio

import nats
from nats.aio.msg import Msg

from processors.consumer import JetStreamPuller
from schemas import subjects
from swarmwatch.streams import TELEMETRY, ensure_streams
from tests.support import wait_for


async def test_a_puller_started_before_its_consumer_exists_delivers_once_the_consumer_is_there(nc: nats.NATS) -> None:
    """A consumer without a leader yet (just created, or re-electing after a server loss) answers "no responders".

    The puller asks again within a fraction of a second instead of waiting for its
    watchdog (2 x 5 s before), so a processor repositioned after losing a server
    resumes at once.
    """
    js = nc.jetstream()
    await ensure_streams(js)
    got: list[bytes] = []

    async def handle(msg: Msg) -> None:
        got.append(msg.data)

    puller = JetStreamPuller(nc, TELEMETRY, "early", [], handle)
    await puller.start()  # the consumer does not exist yet: the first requests go unanswered
    try:
        await js.publish(subjects.metrics("c1", "n1"), b"first")
        await asyncio.sleep(0.5)
        assert got == []
        await puller.ensure()
        await wait_for(lambda: got == [b"first"], 5.0, "delivery within a second of the consumer existing")
    finally:
        await puller.stop()
