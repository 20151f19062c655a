"""The sidecar probes the peers it discovers and publishes the figures in its own batches."""
from __future__ import annotations

import asyncio
import time

import nats

from producers.probes import ProbeSettings
from producers.sidecar import run_producer
from schemas import MetricBatch, decode
from swarmwatch.server import EmbeddedServer
from swarmwatch.streams import ensure_streams
from tests.support import ends_within


async def test_two_sidecars_find_and_probe_each_other(nats_server: EmbeddedServer) -> None:
    nc = await nats.connect(nats_server.url)
    await ensure_streams(nc.jetstream())
    latest: dict[str, MetricBatch] = {}
    names: dict[str, set[str]] = {}  # every metric each node has published

    async def on_batch(m: object) -> None:
        b = decode(m.data, MetricBatch)  # type: ignore[attr-defined]
        latest[b.node] = b
        names.setdefault(b.node, set()).update(s.name for s in b.samples)

    await nc.subscribe("sw.metrics.lan.>", cb=on_batch)
    stop = asyncio.Event()
    settings = ProbeSettings(interval_s=0.2)
    runs = [
        asyncio.create_task(run_producer(nats_server.url, "lan", name, 0.2, gpu=False, per_core=False, probes=settings, stop=stop))
        for name in ("peer-a", "peer-b")
    ]

    def probed(node: str, peer: str) -> bool:
        b = latest.get(node)
        return b is not None and any(
            s.name == "peer.latency_ms" and (s.labels or {}).get("peer") == peer for s in b.samples
        )

    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not (probed("peer-a", "peer-b") and probed("peer-b", "peer-a")):
        await asyncio.sleep(0.1)
    stop.set()
    await ends_within(asyncio.gather(*runs), 30, "both producers after their stop was set")
    await nc.close()
    assert probed("peer-a", "peer-b") and probed("peer-b", "peer-a")
    # in the node's own batches, beside its system metrics (CPU % comes once the kernel's counters moved)
    assert {"net.peer_count", "net.connection_success_rate", "peer.jitter_ms", "peer.loss_percent", "cpu.percent"} <= names["peer-a"]


def test_bad_probe_options_are_refused_before_starting() -> None:
    import subprocess
    import sys

    res = subprocess.run(
        [sys.executable, "-m", "swarmwatch", "produce", "--peers", "a.b", "--nats", "nats://127.0.0.1:1"],
        capture_output=True, text=True, timeout=60,
    )
    assert res.returncode == 2 and "peer 'a.b' is not a valid name" in res.stderr
