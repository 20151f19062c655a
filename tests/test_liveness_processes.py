"""End to end with a real nats-server and several producer processes.

Each producer is ``python -m producers.probes`` (answers probes, probes its
peers found by discovery, publishes its figures and heartbeats). The liveness
and network operators run in the processor runtime against JetStream. The
liveness deadline is shortened to 3 s.
"""
from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nats
import pytest

from schemas import Alert, AlertStatus, HealthScore, codec

from processors.liveness import RULE as UNRESPONSIVE
from processors.liveness import LivenessOperator
from processors.network import DEGRADED, DISCONNECTED, SUCCESS_RULE, NetworkHealthOperator
from processors.runtime import Runtime
from swarmwatch.server import EmbeddedServer
from swarmwatch.streams import ensure_streams

pytestmark = pytest.mark.timeout(110)

CLUSTER = "lan"
DEADLINE_S = 3.0
REPO = Path(__file__).resolve().parent.parent


@dataclass
class Seen:
    """What the processors published, as it arrived (wall-clock arrival times)."""

    alerts: list[tuple[float, Alert]] = field(default_factory=list)
    health: list[HealthScore] = field(default_factory=list)

    def firing(self, rule: str, node: str) -> list[tuple[float, Alert]]:
        return [(t, a) for t, a in self.alerts if a.rule == rule and a.node == node and a.status is AlertStatus.FIRING]


def start_producer(url: str, node: str, *extra: str) -> subprocess.Popen[bytes]:
    args = [
        sys.executable, "-m", "producers.probes",
        "--url", url, "--cluster", CLUSTER, "--node", node,
        "--interval-s", "0.5", "--timeout-s", "1.5", "--window", "10", "--heartbeat-s", "1",
        *extra,
    ]  # fmt: skip
    return subprocess.Popen(args, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=dict(os.environ))


@pytest.fixture
def producers() -> Iterator[dict[str, subprocess.Popen[bytes]]]:
    procs: dict[str, subprocess.Popen[bytes]] = {}
    yield procs
    for p in procs.values():
        if p.poll() is None:
            p.kill()
            p.wait()


@pytest.fixture
async def pipeline(nats_server: EmbeddedServer) -> AsyncIterator[Seen]:
    """Streams, the liveness + network operators in a Runtime, and a listener on their outputs."""
    nc = await nats.connect(nats_server.url)
    await ensure_streams(nc.jetstream())
    seen = Seen()

    async def on_alert(msg: Any) -> None:
        seen.alerts.append((time.monotonic(), codec.decode(msg.data, Alert)))

    async def on_health(msg: Any) -> None:
        seen.health.append(codec.decode(msg.data, HealthScore))

    await nc.subscribe("sw.alerts.>", cb=on_alert)
    await nc.subscribe(f"sw.health.{CLUSTER}", cb=on_health)
    ops = [
        LivenessOperator(deadline_s=DEADLINE_S, tick_interval_s=0.2),
        NetworkHealthOperator(emit_interval_s=1.0, stale_after_s=DEADLINE_S),
    ]
    rt = Runtime(nc, ops, name="nettest", fresh=True, checkpoint_interval_s=0.5)
    await rt.start()
    try:
        yield seen
    finally:
        await rt.stop()
        await nc.close()


async def until(cond: Callable[[], Any], timeout_s: float, what: str, seen: Seen | None = None) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        got = cond()
        if got:
            return got
        if time.monotonic() > deadline:
            state = ""
            if seen is not None:
                state = f"; alerts {[(a.rule, a.node, a.status.value) for _, a in seen.alerts]}"
                state += f"; last health {seen.health[-1].nodes if seen.health else None}"
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}{state}")
        await asyncio.sleep(0.05)


def latest_with_all(seen: Seen, nodes: set[str]) -> HealthScore | None:
    """The newest HealthScore in which every node in ``nodes`` is live and probes all the others."""
    for hs in reversed(seen.health):
        if (
            hs.peer_count == len(nodes)
            and nodes <= set(hs.nodes)
            and all(nodes - {n} <= set(hs.nodes[n].get("peers", {})) for n in nodes)
        ):
            return hs
    return None


async def start_cluster(url: str, producers: dict[str, subprocess.Popen[bytes]], seen: Seen, slow: dict[str, float] | None = None) -> None:
    for n in ("n1", "n2", "n3"):
        extra = ("--probe-delay-ms", str(slow[n])) if slow and n in slow else ()
        producers[n] = start_producer(url, n, *extra)
    await until(lambda: latest_with_all(seen, {"n1", "n2", "n3"}), 40, "all three producers in the health score")


async def test_killed_producer_raises_node_unresponsive_within_deadline_plus_5s(
    nats_server: EmbeddedServer, producers: dict[str, subprocess.Popen[bytes]], pipeline: Seen
) -> None:
    seen = pipeline
    await start_cluster(nats_server.url, producers, seen)
    assert seen.firing(UNRESPONSIVE, "n3") == []

    producers["n3"].send_signal(signal.SIGKILL)
    producers["n3"].wait()
    killed_at = time.monotonic()
    fired = await until(lambda: seen.firing(UNRESPONSIVE, "n3"), DEADLINE_S + 5, "node_unresponsive for n3")
    detected_s = fired[0][0] - killed_at
    print(f"node_unresponsive detected {detected_s:.2f} s after SIGKILL (deadline {DEADLINE_S} s)")
    alert = fired[0][1]
    assert alert.severity.value == "critical" and alert.kind.value == "liveness"
    assert alert.cluster == CLUSTER
    assert detected_s <= DEADLINE_S + 5
    # Only the dead node is unresponsive.
    assert seen.firing(UNRESPONSIVE, "n1") == [] and seen.firing(UNRESPONSIVE, "n2") == []

    # The survivors' probes to n3 fail: their connection success drops under 80 %
    # and the health score shows n3 disconnected and one peer short.
    await until(lambda: seen.firing(SUCCESS_RULE, "n1"), 20, "connection_success_low on n1", seen)
    hs = await until(
        lambda: next(
            (h for h in reversed(seen.health) if h.nodes.get("n3", {}).get("status") == DISCONNECTED and h.peer_count == 2),
            None,
        ),
        10,
        "n3 disconnected and not counted as a live peer in the health score",
    )
    assert hs.expected_peers == 3  # a crash does not lower the expected count
    assert hs.overall_health < 100

    # n3 comes back: the alert resolves with the same id.
    producers["n3"] = start_producer(nats_server.url, "n3")
    await until(
        lambda: [a for _, a in seen.alerts if a.rule == UNRESPONSIVE and a.node == "n3" and a.status is AlertStatus.RESOLVED],
        30,
        "node_unresponsive resolved for n3",
    )
    resolved = next(a for _, a in seen.alerts if a.rule == UNRESPONSIVE and a.status is AlertStatus.RESOLVED)
    assert resolved.id == alert.id


async def test_slow_peer_has_lower_quality_and_degraded_status(
    nats_server: EmbeddedServer, producers: dict[str, subprocess.Popen[bytes]], pipeline: Seen
) -> None:
    seen = pipeline
    await start_cluster(nats_server.url, producers, seen, slow={"n3": 700.0})

    def slow_visible() -> HealthScore | None:
        hs = latest_with_all(seen, {"n1", "n2", "n3"})
        if hs is None:
            return None
        return hs if hs.nodes["n1"]["peers"]["n3"].get("latency_ms", 0) >= 700 else None

    hs = await until(slow_visible, 30, "n1's probes of n3 to show the injected delay")
    n = hs.nodes
    print({k: (v["quality"], v["status"]) for k, v in n.items()})
    assert n["n3"]["status"] == DEGRADED
    assert n["n3"]["quality"] < min(n["n1"]["quality"], n["n2"]["quality"]) - 20
    assert n["n1"]["peers"]["n3"]["status"] == DEGRADED
    assert n["n1"]["peers"]["n3"]["quality"] < n["n1"]["peers"]["n2"]["quality"]
    # Slow answers are still answers: no outage, no connection alert.
    assert seen.firing(UNRESPONSIVE, "n3") == []
    assert [a for _, a in seen.alerts if a.rule == SUCCESS_RULE] == []


async def test_clean_stop_is_not_an_outage(
    nats_server: EmbeddedServer, producers: dict[str, subprocess.Popen[bytes]], pipeline: Seen
) -> None:
    seen = pipeline
    await start_cluster(nats_server.url, producers, seen)
    producers["n3"].send_signal(signal.SIGTERM)
    assert producers["n3"].wait(timeout=15) == 0
    stopped_at = time.monotonic()

    hs = await until(
        lambda: next((h for h in reversed(seen.health) if "n3" not in h.nodes and h.peer_count == 2), None),
        15,
        "a health score without n3",
    )
    assert hs.expected_peers == 2  # a clean leave lowers the expected count
    assert hs.components["peers"] == 100.0
    # Wait well past the deadline: nothing fires for n3, nor for the peers that probed it.
    await asyncio.sleep(max(0.0, stopped_at + DEADLINE_S + 3 - time.monotonic()))
    assert seen.firing(UNRESPONSIVE, "n3") == []
    assert [a for _, a in seen.alerts if a.rule == SUCCESS_RULE] == []
    assert [a for _, a in seen.alerts if a.status is AlertStatus.FIRING] == []
