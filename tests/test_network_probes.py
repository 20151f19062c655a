"""Peer probes and discovery against a real nats-server, in one process."""
from __future__ import annotations

import asyncio
from typing import Any

import nats
import pytest

from schemas import Event, MetricBatch, codec

from producers.discovery import PeerTable
from tests.support import ends_within, wait_for
from producers.probes import JitterEstimator, PeerProber, ProbeResponder, ProbeWindow, ProbeResult, parse_target, probe_subject

pytestmark = pytest.mark.timeout(60)


def test_rfc3550_jitter_moves_one_sixteenth_towards_each_rtt_difference() -> None:
    j = JitterEstimator()
    assert j.update(10.0) == 0.0
    assert j.update(26.0) == pytest.approx(1.0)  # |26-10| / 16
    assert j.update(26.0) == pytest.approx(1.0 - 1.0 / 16)  # D = 0 pulls it down by J/16


def test_probe_window_slides_and_accounts_loss_and_success() -> None:
    w = ProbeWindow(size=4)
    for ok in (False, False, True, True, True, True):
        w.add(ProbeResult(ok, 5.0 if ok else None, 0.0))
    assert w.count == 4
    assert w.loss_percent == 0.0 and w.success_rate == 1.0  # the two early losses slid out
    w.add(ProbeResult(False, None, 0.0))
    assert w.loss_percent == 25.0
    assert w.consecutive_failures == 1
    assert w.mean_rtt_ms == 5.0
    assert w.failures_total == 3


@pytest.mark.parametrize("bad", ["nohost", "h:0", "h:70000", ":80", "h:x"])
def test_bad_tcp_target_is_refused_naming_it(bad: str) -> None:
    with pytest.raises(ValueError, match=repr(bad)):
        parse_target(bad)


def test_static_peer_list_and_table_bounds() -> None:
    t = PeerTable("n1", ["n1", "n2", "n3"], max_peers=3)
    assert t.active() == ["n2", "n3"]
    for name in ("n4", "n5"):
        t.observe(Event(cluster="c", node=name, ts=1_700_000_000.0, kind="peer.join"))
    assert t.active() == ["n2", "n3", "n4"]
    assert t.refused == 1
    # A static peer that leaves is not probed until it is heard from again.
    t.observe(Event(cluster="c", node="n2", ts=1_700_000_001.0, kind="peer.leave"))
    assert t.active() == ["n3", "n4"]
    t.observe(Event(cluster="c", node="n2", ts=1_700_000_002.0, kind="heartbeat"))
    assert t.active() == ["n2", "n3", "n4"]


def test_discovered_peer_is_forgotten_after_silence() -> None:
    t = PeerTable("n1", ["n9"], forget_after_s=10)
    t.observe(Event(cluster="c", node="n2", ts=1_700_000_000.0, kind="heartbeat"), now=100.0)
    assert t.active(now=105.0) == ["n2", "n9"]
    assert t.active(now=111.0) == ["n9"]  # static peers stay
    assert t.forgotten == 1


async def test_probe_measures_round_trip_and_injected_delay(nc: Any) -> None:
    fast = ProbeResponder(nc, "c1", "fast")
    slow = ProbeResponder(nc, "c1", "slow", delay_ms=150)
    await fast.start()
    await slow.start()
    p = PeerProber(nc, "c1", "n1", static_peers=["fast", "slow"], discover=False, publish=False, timeout_s=2.0)
    await p.start()
    for _ in range(3):
        results = dict(await p.probe_once())
    assert results["fast"].ok and results["slow"].ok
    assert results["slow"].rtt_ms is not None and results["slow"].rtt_ms >= 150
    assert results["fast"].rtt_ms is not None and results["fast"].rtt_ms < results["slow"].rtt_ms
    assert slow.answered == 3
    samples = {(s.name, (s.labels or {}).get("peer")): s.value for s in p.samples()}
    assert samples[("peer.loss_percent", "slow")] == 0.0
    assert samples[("peer.latency_ms", "slow")] >= 150
    assert samples[("net.peer_count", None)] == 2
    assert samples[("net.connection_success_rate", None)] == 1.0
    await p.stop()
    await fast.stop()
    await slow.stop()


async def test_probe_to_absent_peer_counts_as_loss(nc: Any) -> None:
    p = PeerProber(nc, "c1", "n1", static_peers=["ghost"], discover=False, publish=False, timeout_s=0.5)
    await p.start()
    for _ in range(4):
        ((_, r),) = await p.probe_once()
        assert not r.ok and r.error in ("no_responders", "timeout")
    samples = {(s.name, (s.labels or {}).get("peer")): s.value for s in p.samples()}
    assert samples[("peer.loss_percent", "ghost")] == 100.0
    assert samples[("peer.consecutive_failures", "ghost")] == 4
    assert samples[("net.connection_success_rate", None)] == 0.0
    assert ("peer.latency_ms", "ghost") not in samples
    await p.stop()


async def test_slow_responder_beyond_timeout_is_loss(nc: Any) -> None:
    r = ProbeResponder(nc, "c1", "late", delay_ms=800)
    await r.start()
    p = PeerProber(nc, "c1", "n1", static_peers=["late"], discover=False, publish=False, timeout_s=0.2)
    await p.start()
    ((_, res),) = await p.probe_once()
    assert not res.ok and res.error == "timeout"
    await p.stop()
    await r.stop()


async def test_tcp_connect_probe_succeeds_on_listening_port_and_fails_on_closed(nc: Any) -> None:
    server = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    from swarmwatch.server import free_port

    closed = free_port()
    p = PeerProber(
        nc, "c1", "n1", tcp_targets=[f"127.0.0.1:{port}", f"127.0.0.1:{closed}"], discover=False, publish=False, timeout_s=1.0
    )
    await p.start()
    results = dict(await p.probe_once())
    assert results[f"127.0.0.1:{port}"].ok
    assert not results[f"127.0.0.1:{closed}"].ok
    vias = {(s.labels or {}).get("via") for s in p.samples() if s.name.startswith("peer.")}
    assert vias == {"tcp"}
    await p.stop()
    server.close()
    await server.wait_closed()




async def test_producers_discover_each_other_and_clean_leave_removes_the_peer(nats_server: Any) -> None:
    events: list[Event] = []
    watcher = await nats.connect(nats_server.url)

    async def collect(msg: Any) -> None:
        events.append(codec.decode(msg.data, Event))

    await watcher.subscribe("sw.events.c1.>", cb=collect)
    conns = [await nats.connect(nats_server.url) for _ in range(3)]
    probers = [
        PeerProber(c, "c1", f"n{i}", publish=False, heartbeat_s=0.3, interval_s=0.2) for i, c in enumerate(conns, 1)
    ]
    for p in probers:
        await p.start()
    await wait_for(lambda: all(len(p.table.active()) == 2 for p in probers))
    assert probers[0].table.active() == ["n2", "n3"]
    results = dict(await probers[0].probe_once())
    assert results["n2"].ok and results["n3"].ok

    await probers[2].stop(clean=True)
    await wait_for(lambda: probers[0].table.active() == ["n2"] and probers[1].table.active() == ["n1"])
    results = dict(await probers[0].probe_once())
    assert set(results) == {"n2"}
    assert "n3" not in probers[0].windows

    await wait_for(lambda: ("n1", "heartbeat") in {(e.node, e.kind) for e in events})
    kinds = {(e.node, e.kind) for e in events}
    assert {("n1", "peer.join"), ("n3", "peer.join"), ("n3", "peer.leave")} <= kinds
    for p in probers[:2]:
        await p.stop()
    for c in [*conns, watcher]:
        await c.close()


async def test_prober_publishes_its_figures_as_a_metric_batch(nc: Any) -> None:
    got: asyncio.Queue[MetricBatch] = asyncio.Queue()

    async def on(msg: Any) -> None:
        await got.put(codec.decode(msg.data, MetricBatch))

    await nc.subscribe("sw.metrics.c1.n1", cb=on)
    peer = ProbeResponder(nc, "c1", "n2")
    await peer.start()
    stop = asyncio.Event()
    p = PeerProber(nc, "c1", "n1", static_peers=["n2"], discover=False, interval_s=0.1)
    task = asyncio.create_task(p.run(stop))
    batch = await asyncio.wait_for(got.get(), 10)
    stop.set()
    await ends_within(task, 20, "the prober's run after its stop was set")
    await p.stop()
    await peer.stop()
    assert (batch.cluster, batch.node) == ("c1", "n1")
    names = {s.series() for s in batch.samples}
    assert "peer.latency_ms{peer=n2,via=nats}" in names
    assert {"net.peer_count", "net.connection_success_rate", "net.avg_latency_ms"} <= names


def test_probe_subject_refuses_bad_names() -> None:
    assert probe_subject("c1", "n1") == "sw.probe.c1.n1"
    with pytest.raises(ValueError, match="'a.b'"):
        probe_subject("c1", "a.b")
    with pytest.raises(ValueError, match="-5"):
        ProbeResponder(None, "c1", "n1", delay_ms=-5)


async def test_sidecar_wiring_probes_through_the_publisher_and_leaves_cleanly(nats_server: Any) -> None:
    """How the sidecar runs probes: no client at build time, samples polled, events via Publisher."""
    from producers.publisher import Publisher
    from swarmwatch.streams import ensure_streams

    nc = await nats.connect(nats_server.url)
    await ensure_streams(nc.jetstream())
    events: list[Event] = []

    async def collect(msg: Any) -> None:
        events.append(codec.decode(msg.data, Event))

    await nc.subscribe("sw.events.c1.n1.>", cb=collect)
    peer = ProbeResponder(nc, "c1", "n2")
    await peer.start()

    publisher = Publisher(nats_server.url)
    prober = PeerProber(None, "c1", "n1", static_peers=["n2"], interval_s=0.1, publish=False, publish_fn=publisher.publish)
    assert prober.samples() == []  # nothing before the first round: no made-up success rate
    stop = asyncio.Event()
    await publisher.start()
    task = asyncio.create_task(prober.run_with_publisher(publisher, stop))
    await wait_for(lambda: prober.rounds >= 2)
    series = {s.series(): s.value for s in prober.samples()}
    assert series["peer.loss_percent{peer=n2,via=nats}"] == 0.0
    stop.set()
    await asyncio.wait_for(task, 10)
    await publisher.close()
    await wait_for(lambda: any(e.kind == "peer.leave" for e in events))
    assert [e.kind for e in events][0] == "peer.join"
    assert peer.answered >= 2
    await peer.stop()
    await nc.close()


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--node", "bad.name"], "'bad.name'"),
        (["--node", "n1", "--tcp", "host-without-port"], "'host-without-port'"),
        (["--node", "n1", "--probe-delay-ms", "-3"], "-3"),
    ],
)
def test_probe_entry_point_refuses_bad_options_before_connecting(args: list[str], named: str) -> None:
    import subprocess
    import sys

    from swarmwatch.server import free_port

    url = f"nats://127.0.0.1:{free_port()}"  # nothing listens: validation must come first
    r = subprocess.run(
        [sys.executable, "-m", "producers.probes", "--url", url, "--cluster", "c1", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 2
    assert r.stderr.startswith("error: ") and named in r.stderr
    assert "Traceback" not in r.stderr
