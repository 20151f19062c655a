"""The runtime over a real nats-server: alerts, exactly-once effect across restarts and crashes, DLQ."""
from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterable
from pathlib import Path

import nats
import pytest

from processors import Emit, Operator, Rule, Runtime, ThresholdRules, TumblingWindows, operator
from schemas import Alert, AlertStatus, DeadLetter, MetricBatch, Sample, decode, encode, subjects
from swarmwatch.server import EmbeddedServer
from swarmwatch.streams import ensure_streams
from tests.support import collect_alerts, stored, wait_for


# [10, 95, 10] at t0 and [10, 97, 10] at t0 + 10: one episode each, as (status, start - t0)
TWO_EPISODES = [(AlertStatus.FIRING, 1.0), (AlertStatus.RESOLVED, 1.0), (AlertStatus.FIRING, 11.0), (AlertStatus.RESOLVED, 11.0)]


def mem_rule() -> Rule:
    return Rule.model_validate({"name": "mem_high", "metric": "mem.percent", "threshold": 90, "severity": "critical"})


async def publish_series(js: object, values: list[float], t0: float, node: str = "n1") -> None:
    for i, v in enumerate(values):
        b = MetricBatch("c1", node, t0 + i, [Sample("mem.percent", v), Sample("cpu.percent", 3.0)], seq=i)
        await js.publish(subjects.metrics("c1", node), encode(b), headers={"Nats-Msg-Id": f"{node}:{t0 + i}"})  # type: ignore[attr-defined]






async def test_threshold_crossing_reaches_a_subscriber_once(nc: nats.NATS) -> None:
    js = nc.jetstream()
    await ensure_streams(js)
    seen = await collect_alerts(nc)
    rt = Runtime(nc, [TumblingWindows(), ThresholdRules([mem_rule()])], name="p1", checkpoint_interval_s=0.2)
    await rt.start()
    await publish_series(js, [10, 10, 95, 97, 99, 20, 20], time.time() - 30)
    await wait_for(lambda: len(seen) == 2)
    await asyncio.sleep(0.5)
    await rt.stop()
    assert [a.status for a in seen] == [AlertStatus.FIRING, AlertStatus.RESOLVED]
    assert seen[0].id == seen[1].id and seen[0].value == 95
    assert len(await stored(js, "sw.alerts.>")) == 2


async def test_restart_mid_stream_emits_no_duplicate_alert_or_aggregate(nc: nats.NATS) -> None:
    js = nc.jetstream()
    await ensure_streams(js)
    t0 = time.time() - 200
    t0 -= t0 % 60
    values = [10.0] * 20 + [95.0] * 30 + [10.0] * 30 + [96.0] * 20 + [10.0] * 20

    def ops() -> list[Operator]:
        return [TumblingWindows([10, 60], allowed_lateness_s=1), ThresholdRules([mem_rule()])]

    rt = Runtime(nc, ops(), name="p2", checkpoint_interval_s=0.1)
    await rt.start()
    await publish_series(js, values[:35], t0)
    await wait_for(lambda: rt.stats.processed >= 35)
    await rt.stop()
    rt = Runtime(nc, ops(), name="p2", checkpoint_interval_s=0.1)
    await rt.start()
    await publish_series(js, values[35:100], t0 + 35)
    await wait_for(lambda: rt.stats.processed >= 65)
    await rt.stop()
    rt = Runtime(nc, ops(), name="p2", checkpoint_interval_s=0.1)
    await rt.start()
    await publish_series(js, values[100:], t0 + 100)
    await wait_for(lambda: rt.stats.processed >= 20)
    await asyncio.sleep(0.3)
    await rt.stop()

    alerts = [decode(d, Alert) for d in await stored(js, "sw.alerts.>")]
    assert [(a.status, a.started_at - t0) for a in alerts] == [
        (AlertStatus.FIRING, 20.0),
        (AlertStatus.RESOLVED, 20.0),
        (AlertStatus.FIRING, 80.0),
        (AlertStatus.RESOLVED, 80.0),
    ]
    from schemas import WindowAggregate

    aggs = [decode(d, WindowAggregate) for d in await stored(js, "sw.agg.10s.>")]
    starts = [a.start - t0 for a in aggs]
    assert len(starts) == len(set(starts))  # no window emitted twice
    assert sum(s.count for a in aggs for s in a.series if s.metric == "mem.percent") == sum(
        1 for i in range(len(values)) if (t0 + i) < aggs[-1].end
    )
    minutes = [decode(d, WindowAggregate) for d in await stored(js, "sw.agg.1m.>")]
    assert [(m.start - t0, m.series[0].count) for m in minutes] == [(0.0, 60)]  # [60, 120) is still open: its end is past the watermark
    assert rt.stats.replayed > 0  # open windows were rebuilt by replay


def _spawn_processor(url: str, rules: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "swarmwatch", "process", "--nats", url, "--rules", str(rules), "--name", "crashy"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


async def test_processor_killed_mid_stream_resumes_without_duplicates(nats_server: EmbeddedServer, tmp_path: Path) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text("defaults: false\nrules:\n  - {name: mem_high, metric: mem.percent, threshold: 90, severity: critical}\n")
    env = dict(os.environ)
    nc = await nats.connect(nats_server.url)
    js = nc.jetstream()
    await ensure_streams(js)
    seen = await collect_alerts(nc)
    t0 = time.time() - 300
    values = [10.0] * 40 + [95.0] * 40 + [10.0] * 40
    proc = _spawn_processor(nats_server.url, rules, env)
    try:
        await publish_series(js, values[:60], t0)
        await wait_for(lambda: len(seen) >= 1, 20)
        await asyncio.sleep(0.3)
        proc.send_signal(signal.SIGKILL)  # a crash: no final checkpoint
        proc.wait()
        await publish_series(js, values[60:], t0 + 60)
        proc = _spawn_processor(nats_server.url, rules, env)
        await wait_for(lambda: len(seen) >= 2, 20)
        await asyncio.sleep(1.0)
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
    alerts = [decode(d, Alert) for d in await stored(js, "sw.alerts.>")]
    await nc.close()
    assert [a.status for a in alerts] == [AlertStatus.FIRING, AlertStatus.RESOLVED]
    assert alerts[0].id == alerts[1].id


async def test_malformed_messages_land_in_the_dlq_and_the_worker_goes_on(nc: nats.NATS) -> None:
    js = nc.jetstream()
    await ensure_streams(js)
    rt = Runtime(nc, [ThresholdRules([mem_rule()])], name="p3", checkpoint_interval_s=0.2)
    await rt.start()
    bad = [
        (subjects.metrics("c1", "n1"), b"{not json"),
        (subjects.metrics("c1", "n1"), b'{"cluster":"c1","node":"n1","ts":1.7e9,"samples":[{"name":"x","value":1e999}]}'),
        (subjects.metrics("c1", "n2"), encode(MetricBatch("c1", "n1", time.time(), []))),  # spoofed node
        ("sw.events.c1.n1.training.update", b'{"cluster":"c1","node":"n1","ts":1,"kind":"training.update"}'),
    ]
    for subj, data in bad:
        await js.publish(subj, data)
    await publish_series(js, [95.0], time.time())
    await wait_for(lambda: rt.stats.processed + rt.stats.invalid >= 5)
    await asyncio.sleep(0.5)
    await rt.stop()
    dead = [decode(d, DeadLetter) for d in await stored(js, "sw.dlq.>")]
    assert rt.stats.invalid == 4 and len(dead) == 4
    assert [d.data for d in dead] == [data for _, data in bad]
    reasons = " | ".join(d.reason for d in dead)
    assert "malformed JSON" in reasons and "out of range" in reasons and "does not match payload" in reasons and "before 2000" in reasons
    assert len(await stored(js, "sw.alerts.>")) == 1  # the good message after them still fired


async def test_a_failing_custom_operator_is_counted_and_the_others_keep_working(nc: nats.NATS) -> None:
    js = nc.jetstream()
    await ensure_streams(js)

    class Broken(Operator):
        name = "broken"

        def on_metrics(self, batch: MetricBatch, now: float) -> Iterable[Emit]:
            raise RuntimeError("boom")

    @operator("node_count")
    def count_nodes(batch: MetricBatch, now: float) -> Iterable[Emit]:
        yield Emit(f"sw.health.{batch.cluster}", b"{}", f"nc:{batch.node}:{batch.ts}")

    rt = Runtime(nc, [Broken(), count_nodes, ThresholdRules([mem_rule()])], name="p4", checkpoint_interval_s=0.2)
    await rt.start()
    await publish_series(js, [95.0, 96.0], time.time())
    await wait_for(lambda: rt.stats.processed >= 2)
    await asyncio.sleep(0.5)
    await rt.stop()
    assert rt.stats.operator_errors == 2
    assert len(await stored(js, "sw.alerts.>")) == 1
    assert len(await stored(js, "sw.health.>")) == 2
    dead = [decode(d, DeadLetter) for d in await stored(js, "sw.dlq.>")]
    assert all("operator broken failed" in d.reason for d in dead) and len(dead) == 2


@pytest.mark.parametrize("batch", [1, 7])
async def test_small_pull_batches_still_deliver_everything_in_order(nc: nats.NATS, batch: int) -> None:
    js = nc.jetstream()
    await ensure_streams(js)
    seen: list[float] = []

    @operator("recorder")
    def rec(b: MetricBatch, now: float) -> Iterable[Emit]:
        seen.append(b.ts)
        return ()

    rt = Runtime(nc, [rec], name="p5", batch=batch, checkpoint_interval_s=0.2)
    await rt.start()
    t0 = time.time() - 100
    await publish_series(js, [1.0] * 50, t0)
    await wait_for(lambda: len(seen) >= 50)
    await rt.stop()
    assert seen == [t0 + i for i in range(50)]


async def test_partitioned_instances_split_the_nodes_between_them(nc: nats.NATS) -> None:
    js = nc.jetstream()
    await ensure_streams(js)
    seen: dict[str, list[str]] = {"a": [], "b": []}

    def recorder(tag: str) -> Operator:
        @operator(f"rec_{tag}")
        def rec(b: MetricBatch, now: float) -> Iterable[Emit]:
            seen[tag].append(b.node)
            return ()

        return rec

    a = Runtime(nc, [recorder("a")], name="part-a", partition=(0, 2))
    b = Runtime(nc, [recorder("b")], name="part-b", partition=(1, 2))
    await a.start()
    await b.start()
    t0 = time.time() - 50
    for n in range(20):
        await publish_series(js, [1.0, 2.0], t0, node=f"n{n}")
    await wait_for(lambda: len(seen["a"]) + len(seen["b"]) >= 40)
    await a.stop()
    await b.stop()
    assert sorted(seen["a"] + seen["b"]) == sorted([f"n{n}" for n in range(20)] * 2)
    assert not set(seen["a"]) & set(seen["b"])  # every node belongs to exactly one instance
    assert seen["a"] and seen["b"]
    assert a.stats.other_partitions == len(seen["b"])


@pytest.mark.timeout(60)
async def test_a_rewind_whose_checkpoint_read_hangs_is_retried_and_alerting_goes_on(nc: nats.NATS) -> None:
    """Reading the checkpoint can hang when its store just lost its leader: that attempt is abandoned and retried."""
    js = nc.jetstream()
    await ensure_streams(js)
    seen = await collect_alerts(nc)
    rt = Runtime(nc, [ThresholdRules([mem_rule()])], name="hang", checkpoint_interval_s=0.2, rewind_timeout_s=0.5)
    await rt.start()
    t0 = time.time() - 100
    try:
        await publish_series(js, [10.0, 95.0, 10.0], t0)
        await wait_for(lambda: len(seen) == 2 and rt.stats.checkpoints > 0)
        real_get, hung = rt._store.get, []

        async def hangs_once(name: str) -> object:
            if not hung:
                hung.append(name)
                await asyncio.Event().wait()  # never set: the reply that never comes
            return await real_get(name)

        rt._store.get = hangs_once
        # a failed checkpoint and a delivery gap at once: one rewind runs, the other is covered by it
        await asyncio.gather(rt._rewind(), rt._rewind())
        assert hung == ["hang"] and rt.stats.rewinds == 1
        await publish_series(js, [10.0, 97.0, 10.0], t0 + 10)
        await wait_for(lambda: len(seen) == 4, 20, "alerting after the rewind")
        await asyncio.sleep(0.5)
        assert [(a.status, a.started_at - t0) for a in seen] == TWO_EPISODES
    finally:
        await rt.stop()


@pytest.mark.timeout(60)
async def test_a_start_whose_checkpoint_read_hangs_is_retried_and_resumes_from_the_checkpoint(
    nc: nats.NATS, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A read of the checkpoint that never answers (it raced a newer checkpoint) does not hang the start."""
    from nats.js.object_store import ObjectStore

    js = nc.jetstream()
    await ensure_streams(js)
    seen = await collect_alerts(nc)
    first = Runtime(nc, [ThresholdRules([mem_rule()])], name="restart", checkpoint_interval_s=0.2)
    await first.start()
    t0 = time.time() - 100
    await publish_series(js, [10.0, 95.0], t0)
    await wait_for(lambda: len(seen) == 1)
    await first.stop()
    real_get, hung = ObjectStore.get, []

    async def hangs_once(self: ObjectStore, name: str, *args: object, **kwargs: object) -> object:
        if not hung:
            hung.append(name)
            await asyncio.Event().wait()  # never set: the chunks that never come
        return await real_get(self, name, *args, **kwargs)

    monkeypatch.setattr(ObjectStore, "get", hangs_once)
    second = Runtime(nc, [ThresholdRules([mem_rule()])], name="restart", checkpoint_interval_s=0.2, rewind_timeout_s=0.5)
    await second.start()
    try:
        assert hung == ["restart"]
        await publish_series(js, [10.0], t0 + 2)
        await wait_for(lambda: len(seen) == 2, 20, "the resolve, from the restored firing state")
        await asyncio.sleep(0.5)
        assert [a.status for a in seen] == [AlertStatus.FIRING, AlertStatus.RESOLVED]
    finally:
        await second.stop()


def test_a_bad_partition_is_refused() -> None:
    with pytest.raises(ValueError, match="partition 2/2 is invalid"):
        Runtime(None, [], partition=(2, 2))  # type: ignore[arg-type]


async def test_processor_rides_out_a_broker_restart_and_keeps_alerting(tmp_path: Path) -> None:
    """The nats-server restarts mid-stream: the runtime reconnects, re-pulls and alerts once per episode."""
    from swarmwatch.server import free_port

    port = free_port()
    srv = EmbeddedServer(tmp_path / "nats", port=port).start()
    nc = await nats.connect(srv.url, max_reconnect_attempts=-1, reconnect_time_wait=0.2)
    js = nc.jetstream()
    await ensure_streams(js)
    rt = Runtime(nc, [ThresholdRules([mem_rule()])], name="outage", checkpoint_interval_s=0.3)
    await rt.start()
    t0 = time.time() - 100
    try:
        await publish_series(js, [10.0, 95.0, 96.0, 10.0], t0)
        await wait_for(lambda: rt.stats.processed >= 4)
        await asyncio.sleep(0.6)  # checkpointed
        srv.stop()
        await asyncio.sleep(1.0)  # the broker is away; the runtime must not die
        srv = EmbeddedServer(tmp_path / "nats", port=port).start()
        await wait_for(lambda: nc.is_connected, 20, "reconnected")
        await publish_series(js, [10.0, 97.0, 10.0], t0 + 10)
        await wait_for(lambda: rt.stats.processed >= 7, 30, "processing after the restart")
        await asyncio.sleep(0.6)
        alerts = [decode(d, Alert) for d in await stored(js, "sw.alerts.>")]
        assert [(a.status, a.started_at - t0) for a in alerts] == TWO_EPISODES
    finally:
        await rt.stop()
        await nc.close()
        srv.stop()
