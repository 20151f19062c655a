"""The producer against a real nats-server: batches stored in JetStream, outages ridden out."""
from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import nats
import pytest

from producers.publisher import Publisher
from producers.sdk import Registry
from producers.sidecar import Producer, run_producer
from producers.spool import SPOOL_FILE_NAME, Spool
from schemas.codec import decode_batch
from schemas.models import MetricBatch
from schemas.subjects import SubjectError
from swarmwatch.server import EmbeddedServer, free_port


async def _make_stream(url: str) -> None:
    nc = await nats.connect(url)
    try:
        from swarmwatch.streams import ensure_streams

        await ensure_streams(nc.jetstream())
    finally:
        await nc.close()


async def _stored(url: str) -> list[tuple[str, dict[str, str], MetricBatch]]:
    """Every metrics message in TELEMETRY: (subject, headers, decoded batch)."""
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        info = await js.stream_info("TELEMETRY")
        out: list[tuple[str, dict[str, str], MetricBatch]] = []
        if info.state.messages == 0:
            return out
        for seq in range(info.state.first_seq, info.state.last_seq + 1):
            msg = await js.get_msg("TELEMETRY", seq)
            if msg.subject.startswith("sw.metrics."):
                out.append((msg.subject, dict(msg.headers or {}), decode_batch(msg.data)))
        return out
    finally:
        await nc.close()


async def _eventually(check: Callable[[], Awaitable[bool]], timeout_s: float, what: str) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        if await check():
            return
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        await asyncio.sleep(0.2)


def _counter(batch: MetricBatch, name: str) -> float:
    return next(s.value for s in batch.samples if s.name == f"swarmwatch.producer.{name}")


def _seqs(stored: list[tuple[str, dict[str, str], MetricBatch]]) -> list[int]:
    return sorted(b.seq for _, _, b in stored)


async def test_producer_batches_are_stored_in_jetstream_and_decode(nats_server: EmbeddedServer) -> None:
    await _make_stream(nats_server.url)
    reg = Registry()
    reg.gauge("app.queue_depth", unit="jobs").set(5)
    result = await asyncio.wait_for(
        run_producer(nats_server.url, "c1", "node-a", "200ms", registry=reg, max_batches=3, gpu=False), 30
    )
    assert result["sent"] == 3 and result["failed"] == 0 and result["batches"] == 3
    stored = await _stored(nats_server.url)
    assert _seqs(stored) == [1, 2, 3]
    subject, headers, batch = stored[-1]
    assert subject == "sw.metrics.c1.node-a"
    assert (batch.cluster, batch.node) == ("c1", "node-a")
    node, boot, seq = headers["Nats-Msg-Id"].split(":")
    assert node == "node-a" and len(boot) == 8 and int(seq) == batch.seq
    values = {s.series(): s.value for s in batch.samples}
    cpu = [s.value for _, _, b in stored for s in b.samples if s.series() == "cpu.percent"]
    assert cpu and all(0 <= v <= 100 for v in cpu)  # CPU % is in the batches once the kernel's counters moved
    assert 0 <= values["mem.percent"] <= 100
    assert values["app.queue_depth"] == 5.0
    assert values["swarmwatch.producer.sent"] >= 1  # its own counters ride along
    assert values["swarmwatch.producer.failed"] == 0


async def test_invalid_node_name_is_refused_before_anything_is_published(nats_server: EmbeddedServer) -> None:
    await _make_stream(nats_server.url)
    with pytest.raises(SubjectError, match=r"node 'bad\.node' is not a valid name"):
        await run_producer(nats_server.url, "c1", "bad.node", 1.0, max_batches=1)
    with pytest.raises(SubjectError, match="cluster 'a b'"):
        await run_producer(nats_server.url, "a b", "n1", 1.0, max_batches=1)
    with pytest.raises(ValueError, match="interval '0ms' is too short"):
        await run_producer(nats_server.url, "c1", "n1", "0ms", max_batches=1)
    assert await _stored(nats_server.url) == []


async def test_broker_restart_mid_run_producer_keeps_running_and_nothing_is_lost(
    nats_server: EmbeddedServer,
) -> None:
    await _make_stream(nats_server.url)
    url, data_dir, port = nats_server.url, nats_server.data_dir, nats_server.port
    stop = asyncio.Event()
    task = asyncio.create_task(
        run_producer(url, "c1", "n1", "200ms", stop=stop, gpu=False, registry=None, ack_timeout_s=2.0)
    )

    async def some_stored() -> bool:
        return len(await _stored(url)) >= 3

    await _eventually(some_stored, 15, "the first batches")
    nats_server.stop()
    await asyncio.sleep(2.0)  # ~10 batches are made while the broker is down
    assert not task.done(), "the producer must survive the outage"
    restarted = EmbeddedServer(data_dir, port=port).start()
    try:
        async def caught_up() -> bool:
            # A batch made after the reconnect is stored (its own counters say it reconnected).
            return any(_counter(b, "reconnects") >= 1 for _, _, b in await _stored(url))

        await _eventually(caught_up, 40, "batches after the restart")
        stop.set()
        result = await asyncio.wait_for(task, 30)
        stored = await _stored(url)
    finally:
        restarted.stop()
    seqs = _seqs(stored)
    assert seqs == list(range(1, max(seqs) + 1)), "every batch stored exactly once, the outage's included"
    assert result["reconnects"] >= 1 and result["disconnects"] >= 1
    assert result["spooled"] >= 5  # made during the outage
    assert result["replayed"] >= 5
    assert result["dropped"] == 0 and result["spool_items"] == 0
    outage = [b for _, _, b in stored if _counter(b, "connected") == 0 and b.seq > 1]
    assert len(outage) >= 5, "batches made while the broker was down were replayed"
    latest = max((b for _, _, b in stored), key=lambda b: b.seq)
    assert _counter(latest, "reconnects") >= 1
    assert _counter(latest, "spooled") >= 5


async def test_batches_made_before_the_broker_exists_arrive_once_it_starts(tmp_path: Path) -> None:
    port = free_port()
    url = f"nats://127.0.0.1:{port}"
    stop = asyncio.Event()
    task = asyncio.create_task(run_producer(url, "c1", "early", "200ms", stop=stop, gpu=False, registry=None))
    await asyncio.sleep(1.2)
    assert not task.done()
    srv = EmbeddedServer(tmp_path / "nats", port=port).start()
    try:
        await _make_stream(url)

        async def first_ones_arrived() -> bool:
            seqs = _seqs(await _stored(url))
            return seqs[:5] == [1, 2, 3, 4, 5]

        await _eventually(first_ones_arrived, 40, "the batches spooled before the broker started")
        stop.set()
        result = await asyncio.wait_for(task, 30)
        seqs = _seqs(await _stored(url))
    finally:
        srv.stop()
    assert seqs == list(range(1, max(seqs) + 1))
    assert result["spooled"] >= 5


async def test_messages_jetstream_refuses_are_counted_then_replayed_when_the_stream_appears(
    nats_server: EmbeddedServer,
) -> None:
    publisher = Publisher(nats_server.url, ack_timeout_s=2.0)
    await publisher.start()
    try:
        assert await publisher.wait_connected(10)
        producer = Producer(publisher, "c1", "n1", gpu=False, registry=None)
        for _ in range(3):
            await producer.tick()

        async def refused() -> bool:
            return publisher.failed >= 3

        await _eventually(refused, 10, "JetStream to refuse (no stream yet)")
        assert publisher.sent == 0 and len(publisher.spool) == 3
        await _make_stream(nats_server.url)

        async def replayed() -> bool:
            return publisher.sent == 3

        await _eventually(replayed, 20, "the spooled batches to be replayed")
    finally:
        await publisher.close(5)
    assert _seqs(await _stored(nats_server.url)) == [1, 2, 3]
    assert publisher.replayed >= 3


async def test_spool_file_outlives_the_producer_and_is_replayed_by_the_next_run(tmp_path: Path) -> None:
    port = free_port()
    url = f"nats://127.0.0.1:{port}"
    spool_dir = tmp_path / "spool"
    first: dict[str, Any] = await asyncio.wait_for(
        run_producer(url, "c1", "n1", "100ms", spool_dir=spool_dir, gpu=False, registry=None,
                     max_batches=3, close_timeout_s=0.5),
        30,
    )
    assert first["sent"] == 0 and first["spooled"] == 3
    assert (spool_dir / SPOOL_FILE_NAME).exists()
    assert len(Spool(directory=spool_dir)) == 3
    srv = EmbeddedServer(tmp_path / "nats", port=port).start()
    try:
        await _make_stream(url)
        second = await asyncio.wait_for(
            run_producer(url, "c1", "n1", "100ms", spool_dir=spool_dir, gpu=False, registry=None, max_batches=1),
            30,
        )
        stored = await _stored(url)
    finally:
        srv.stop()
    assert second["sent"] == 4 and second["replayed"] == 3
    boots = {h["Nats-Msg-Id"].split(":")[1] for _, h, _ in stored}
    assert len(stored) == 4 and len(boots) == 2
    assert not (spool_dir / SPOOL_FILE_NAME).exists()


async def test_app_embeds_the_producer_in_a_thread_and_its_sdk_metrics_ride_in_the_batches(
    nats_server: EmbeddedServer,
) -> None:
    from producers.sidecar import BackgroundProducer

    await _make_stream(nats_server.url)
    reg = Registry()

    @reg.timed("rpc.validate")
    def validate(ok: bool) -> None:
        if not ok:
            raise ValueError("rejected")

    bg = BackgroundProducer(nats_server.url, "c1", "app-node", "200ms", registry=reg, gpu=False).start()
    try:
        for ok in (True, True, False):
            try:
                validate(ok)
            except ValueError:
                pass

        async def seen() -> bool:
            return any(
                s.name == "rpc.validate.errors_total" and s.value == 1
                for _, _, b in await _stored(nats_server.url) for s in b.samples
            )

        await _eventually(seen, 20, "the app's timed-function samples")
    finally:
        result = await asyncio.to_thread(bg.stop, 20.0)
    assert bg.error is None
    assert result is not None and result["failed"] == 0


async def test_side_tasks_share_the_producers_publisher_and_stop_with_it(nats_server: EmbeddedServer) -> None:
    await _make_stream(nats_server.url)
    publisher = Publisher(nats_server.url)
    seen: list[str] = []

    async def side(pub: Publisher, stop: asyncio.Event) -> None:
        assert pub is publisher
        await pub.wait_connected(10)
        await pub.publish("sw.events.c1.n1.peer.join", b"{}", "n1:join")
        seen.append("published")
        await stop.wait()
        seen.append("stopped")

    result = await asyncio.wait_for(
        run_producer(nats_server.url, "c1", "n1", "100ms", publisher=publisher, tasks=[side], gpu=False,
                     registry=None, max_batches=3),
        30,
    )
    assert seen == ["published", "stopped"]
    assert result["sent"] == 4  # three batches and the side task's message
