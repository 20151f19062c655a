"""Edge-triggered sampling: watched thresholds go from the processor to producers, a crossing is published at once."""
from __future__ import annotations

import asyncio
import os
import time
from typing import Any, Callable

import pytest

from processors import Runtime, ThresholdRules
from processors.rules import Rule
from producers.collectors import SystemCollector
from producers.edges import EdgeSampler
from producers.sdk import Registry
from producers.sidecar import run_producer
from schemas import Alert, AlertStatus, MetricBatch, subjects
from schemas.codec import decode
from schemas.models import Sample
from schemas.watches import Watch, decode_watches, encode_watches
from swarmwatch.pipeline import export_watches
from swarmwatch.streams import ensure_streams
from tests.support import stored, wait_for

GAUGE = "app.queue_fill"


def test_rules_export_their_thresholds_and_the_record_round_trips() -> None:
    rules = ThresholdRules()
    ws = decode_watches(encode_watches(rules.watches()))
    cpu = next(w for w in ws if w.rule == "cpu_usage_critical")
    assert (cpu.metric, cpu.op, cpu.threshold, cpu.hysteresis, cpu.labels) == ("cpu.percent", ">", 95.0, 5.0, {})
    disk = next(w for w in ws if w.rule == "disk_usage_warning")
    assert disk.labels is None  # every mount


def test_a_record_with_an_unknown_operator_is_refused_with_its_name() -> None:
    with pytest.raises(ValueError, match="'=='"):
        decode_watches(b'{"watches": [{"metric": "x", "op": "==", "threshold": 1}]}')


def test_a_crossing_is_seen_either_way_and_hysteresis_keeps_noise_from_crossing_back() -> None:
    edges = EdgeSampler()
    edges.set_watches([Watch("mem.percent", ">", 90.0, hysteresis=5.0, labels={})])
    seen = [edges.crossed([Sample("mem.percent", v)]) for v in (50.0, 95.0, 88.0, 91.0, 84.0, 86.0)]
    # 50 is clear; 95 crosses up; 88 and 91 stay inside the hysteresis; 84 crosses back; 86 stays clear
    assert seen == [False, True, False, False, True, False]
    assert edges.crossings == 2
    edges.set_watches([Watch("mem.percent", ">", 90.0, hysteresis=5.0)])  # any series
    assert edges.crossed([Sample("mem.percent", 97.0, labels={"numa": "1"})])  # a new series already past it


def test_label_rules_of_the_watch_apply_and_series_are_tracked_separately() -> None:
    edges = EdgeSampler()
    edges.set_watches([Watch("cpu.percent", ">", 90.0, labels={})])  # total only, not per core
    assert not edges.crossed([Sample("cpu.percent", 10.0, labels={"core": "0"}), Sample("cpu.percent", 10.0)])
    assert not edges.crossed([Sample("cpu.percent", 99.0, labels={"core": "0"})])
    assert edges.crossed([Sample("cpu.percent", 99.0)])


def _sample_until(edges: EdgeSampler, done: Callable[[set[str]], bool], key: Callable[[Sample], str], limit_s: float = 5.0) -> set[str]:
    """What fast samples show (``key`` of each) until ``done``: a tickless idle core's counters only move when it wakes,
    so a core is reported once the kernel has advanced them (the sampler keeps its baseline until then)."""
    got: set[str] = set()
    deadline = time.monotonic() + limit_s
    while not done(got) and time.monotonic() < deadline:
        spin_until = time.monotonic() + 0.03  # a little work so this core's counters advance
        while time.monotonic() < spin_until:
            pass
        time.sleep(0.02)  # and a wake-up so the idle ones are accounted
        got |= {key(s) for s in edges.sample()}
    return got


def test_the_sampler_reads_only_what_is_watched_and_hands_its_cpu_baseline_to_the_regular_sample() -> None:
    import psutil

    system = SystemCollector(per_core=False)
    edges = EdgeSampler(system, per_core=False)
    assert not edges.active and edges.sample() == []
    edges.set_watches([Watch("mem.*", ">", 99.9), Watch("disk.percent", ">", 95.0)])  # disk is not a fast source
    names = {s.name for s in edges.sample()}
    assert names == {"mem.percent", "mem.available_bytes", "mem.used_bytes"}
    edges.set_watches([Watch("cpu.percent", ">", 95.0, labels={})])
    got = _sample_until(edges, lambda got: bool(got), key=lambda s: s.name)
    assert got == {"cpu.percent"}  # total only: iowait is not watched
    edges.rebase_system_cpu()  # total only: the cores are read for the regular sample's baseline
    assert system._last_cpu is not None and len(system._last_cpu) == psutil.cpu_count()
    edges.close()
    system = SystemCollector(per_core=True)
    edges = EdgeSampler(system, per_core=True)
    edges.set_watches([Watch("cpu.percent", ">", 95.0)])  # any series: per core too
    every = {"None", *(str({"core": str(i)}) for i in range(psutil.cpu_count()))}
    got = _sample_until(edges, lambda got: got >= every, key=lambda s: str(s.labels))
    assert got == every
    edges.rebase_system_cpu(edges._last_cpu)
    assert system._last_cpu == edges._last_cpu
    edges.close()


def test_the_sampler_thread_reports_a_crossing_and_stops() -> None:
    import threading

    edges = EdgeSampler(per_core=False)
    got: list[list[Sample]] = []
    seen = threading.Event()
    edges.set_watches([Watch("mem.percent", ">", -1.0)])  # always past it: the first fast sample is a crossing
    edges.start(50.0, lambda samples, reading: (got.append(samples), seen.set()))
    try:
        assert seen.wait(10)
    finally:
        edges.close()
    assert [s.name for s in got[0]] == ["mem.percent"] and edges.crossings >= 1
    assert edges._thread is None


def test_the_rate_limit_leaves_extra_crossings_to_the_regular_tick() -> None:
    edges = EdgeSampler(max_batches_per_s=2.0)
    assert [edges.admit(100.0) for _ in range(3)] == [True, True, False]
    assert edges.suppressed == 1
    assert edges.admit(100.6)  # refilled at 2 per second


async def _collect(nc: Any, subject: str, into: list[Any], kind: type) -> Any:
    async def on_msg(msg: Any) -> None:
        into.append(decode(msg.data, kind))

    return await nc.subscribe(subject, cb=on_msg)


async def test_sdk_gauge_crossing_is_published_before_the_next_tick_and_edge_plus_regular_make_one_alert(
    nats_server: Any, nc: Any
) -> None:
    js = nc.jetstream()
    await ensure_streams(js)
    rule = Rule(name="queue_full", metric=GAUGE, op=">", threshold=90.0, severity="critical", labels={})
    rules = ThresholdRules([rule])
    runtime = Runtime(nc, [rules], name="processor")
    await runtime.start()
    assert await export_watches(nc, runtime.operators, "processor") == 1
    batches: list[MetricBatch] = []
    sub = await _collect(nc, subjects.metrics("c1", "n1"), batches, MetricBatch)
    reg = Registry()
    gauge = reg.gauge(GAUGE)
    gauge.set(50.0)
    stop = asyncio.Event()
    task = asyncio.create_task(run_producer(nats_server.url, "c1", "n1", "1s", registry=reg, gpu=False, stop=stop))
    try:
        # the producer learns the watch from the bucket (its own metric says so), then a set() crossing it publishes at once
        await wait_for(lambda: any(s.name == "swarmwatch.producer.watches" and s.value == 1 for b in batches for s in b.samples),
                       20, "a regular batch reporting the watch")
        regular_before = len(batches)
        gauge.set(97.0)
        await wait_for(lambda: len(batches) >= regular_before + 2, 20, "the edge batch and the next regular batch")
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)
        await sub.unsubscribe()
    after = batches[regular_before:]
    edge, regular = after[0], after[1]
    assert [s.name for s in edge.samples] == [GAUGE] and edge.samples[0].value == 97.0  # out of band: just the crossing
    assert len(regular.samples) > 1 and any(s.name == GAUGE and s.value == 97.0 for s in regular.samples)
    assert edge.seq < regular.seq and edge.ts <= regular.ts  # the edge batch came before the next regular tick
    try:  # the live processor saw both batches and raised one alert, not two
        await wait_for(lambda: runtime.stats.processed >= len(batches), 20, "the processor reading every batch")
        alerts = [decode(d, Alert) for d in await stored(js, "sw.alerts.>")]
    finally:
        await runtime.stop()
    assert [(a.rule, a.status) for a in alerts] == [("queue_full", AlertStatus.FIRING)]
    assert alerts[0].value == 97.0 and alerts[0].started_at == edge.ts  # raised by the edge sample


async def test_a_gauge_that_is_not_watched_waits_for_the_tick_and_sdk_events_publish_at_once(
    nats_server: Any, nc: Any
) -> None:
    from schemas.models import Event

    js = nc.jetstream()
    await ensure_streams(js)
    await export_watches(nc, [ThresholdRules([Rule(name="other", metric="app.other", threshold=1.0)])], "processor")
    batches: list[MetricBatch] = []
    events: list[Event] = []
    sub = await _collect(nc, subjects.metrics("c1", "n2"), batches, MetricBatch)
    esub = await _collect(nc, "sw.events.c1.n2.>", events, Event)
    reg = Registry()
    gauge = reg.gauge(GAUGE)
    stop = asyncio.Event()
    task = asyncio.create_task(run_producer(nats_server.url, "c1", "n2", "30s", registry=reg, gpu=False, stop=stop))
    try:
        await wait_for(lambda: len(batches) >= 1, 20, "the first regular batch")
        await asyncio.sleep(0.3)
        gauge.set(97.0)
        reg.event("chain.reorg", {"depth": 3})
        await wait_for(lambda: len(events) >= 1, 20, "the SDK event")
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)
        await sub.unsubscribe()
        await esub.unsubscribe()
    assert (events[0].cluster, events[0].node, events[0].kind, events[0].payload) == ("c1", "n2", "chain.reorg", {"depth": 3})
    assert len(batches) == 1  # with a 30 s tick, the unwatched gauge change published nothing by itself


@pytest.mark.skipif(not os.path.exists("/proc/stat"), reason="Linux /proc only")
def test_proc_readers_agree_with_psutil() -> None:
    import psutil

    from producers.edges import parse_meminfo, parse_proc_stat

    with open("/proc/stat", "rb") as f:
        ours = parse_proc_stat(f.read())
    theirs = psutil.cpu_times(percpu=True)
    assert len(ours) == len(theirs)
    for (total, busy, iowait), t in zip(ours, theirs):
        t_total = sum(t) - getattr(t, "guest", 0.0) - getattr(t, "guest_nice", 0.0)
        assert abs(total - t_total) < 1.0 and abs(iowait - getattr(t, "iowait", 0.0)) < 1.0
        assert 0.0 <= busy <= total
    with open("/proc/meminfo", "rb") as f:
        m = parse_meminfo(f.read(256))
    assert m["MemTotal"] == psutil.virtual_memory().total and 0 < m["MemAvailable"] <= m["MemTotal"]


@pytest.mark.skipif(not os.path.exists("/proc/meminfo"), reason="Linux /proc only")
def test_the_lean_tick_builds_samples_only_when_a_value_moves_past_a_limit_and_sees_that_at_once() -> None:
    s = EdgeSampler()
    mem = s.sample()  # nothing watched yet: empty
    assert mem == []
    s.set_watches([Watch("mem.percent", ">", 0.0, rule="low")])
    assert s._bounds == {"mem.percent": (0.0,)}
    first = s._lean()  # first sight of the series: built and checked in full (already past: a crossing)
    assert [x.name for x in first] == ["mem.percent"] and s._crossed(first)
    assert s._lean() == []  # same side of every limit: nothing built, no crossing possible
    value = first[0].value
    # the memory value now sits past a new limit: seen on the very next tick, as by the full path
    s.set_watches([Watch("mem.percent", ">", 0.0, rule="low"), Watch("mem.percent", "<", value + 50.0, rule="high")])
    again = s._lean()
    assert [x.name for x in again] == ["mem.percent"] and s._crossed(again)
    assert s.crossings == 2
    # per-core CPU, swap, load or a negative hysteresis keep the full path
    s.set_watches([Watch("cpu.percent", ">", 90.0, labels=None)])
    assert s._bounds is None
    s.close()


async def test_a_producer_follows_changes_to_the_watched_thresholds(nats_server: Any, nc: Any) -> None:
    from producers.edges import follow_watches
    from producers.publisher import Publisher

    await ensure_streams(nc.jetstream())
    await export_watches(nc, [ThresholdRules([Rule(name="a", metric="mem.percent", threshold=90.0)])], "p1")
    seen: list[list[str]] = []
    pub = Publisher(nats_server.url)
    await pub.start()
    stop = asyncio.Event()
    task = asyncio.create_task(follow_watches(pub, lambda ws: seen.append(sorted(w.rule for w in ws)), stop, retry_s=0.5))
    try:
        await wait_for(lambda: seen and seen[-1] == ["a"], 20, "the first record")
        await export_watches(nc, [ThresholdRules([Rule(name="b", metric="load.1m", threshold=8.0)])], "p2")
        await wait_for(lambda: seen[-1] == ["a", "b"], 20, "a second processor's record, merged")
        await export_watches(nc, [ThresholdRules([])], "p1")  # p1 now runs no threshold rules: its record goes
        await wait_for(lambda: seen[-1] == ["b"], 20, "the deleted record dropped")
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)
        await pub.close(2)


async def test_a_watched_system_metric_already_past_its_threshold_is_published_from_the_fast_sampler(
    nats_server: Any, nc: Any
) -> None:
    await ensure_streams(nc.jetstream())
    rule = Rule(name="cpu_any", metric="cpu.percent", op=">", threshold=-1.0, labels={})  # always past it
    await export_watches(nc, [ThresholdRules([rule])], "processor")
    batches: list[MetricBatch] = []
    sub = await _collect(nc, subjects.metrics("c1", "n3"), batches, MetricBatch)
    stop = asyncio.Event()
    task = asyncio.create_task(run_producer(nats_server.url, "c1", "n3", "30s", registry=None, gpu=False, stop=stop))
    try:  # with a 30 s tick, a second batch can only be the fast sampler's
        await wait_for(lambda: len(batches) >= 2, 20, "the regular batch and an edge batch")
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)
        await sub.unsubscribe()
    edge = batches[1]
    assert [s.name for s in edge.samples] == ["cpu.percent"] and edge.samples[0].labels is None
    assert edge.seq == batches[0].seq + 1
