"""Load generator: N simulated nodes publishing ~40-metric snapshots to JetStream at a fixed interval.

Library use::

    from bench.loadgen import run_loadgen
    result = await run_loadgen("nats://127.0.0.1:4222", nodes=100, interval_s=1.0, duration_s=30)

Script use (prints JSON: sent, failed, achieved rate)::

    python bench/loadgen.py --url nats://127.0.0.1:4222 --nodes 100 --interval 1s --duration 30 --ensure-stream

Every node publishes a MetricBatch to ``sw.metrics.<cluster>.<node>`` with a
``Nats-Msg-Id`` of ``<node>:<run>:<seq>``; publishing is pipelined
(``js.publish_async``) with at most ``max_inflight`` unacknowledged messages,
and a message counts as sent only when JetStream acknowledges it. Values are
seeded random walks; ``hot_nodes`` of them run at ~97 % CPU so threshold rules
have something to find.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from schemas.codec import encode  # noqa: E402
from schemas.models import MetricBatch, Sample  # noqa: E402
from schemas.subjects import check_token, metrics as metrics_subject  # noqa: E402

CORES = 8
DEFAULT_MAX_INFLIGHT = 4000
ACK_TIMEOUT_S = 10.0
SPREAD_SLOTS = 50  # with spread, nodes publish in this many evenly spaced groups per interval

# (name, unit, labels, low, high): the simulated snapshot, 40 samples per node
_SHAPE: list[tuple[str, str | None, dict[str, str] | None, float, float]] = (
    [("cpu.percent", "%", None, 0.0, 100.0)]
    + [("cpu.percent", "%", {"core": str(i)}, 0.0, 100.0) for i in range(CORES)]
    + [
        ("cpu.iowait_percent", "%", None, 0.0, 20.0),
        ("load.1m", None, None, 0.0, 16.0),
        ("load.5m", None, None, 0.0, 16.0),
        ("load.15m", None, None, 0.0, 16.0),
        ("cpu.freq_mhz", "MHz", None, 1200.0, 3600.0),
        ("cpu.temperature_c", "C", None, 30.0, 90.0),
        ("mem.percent", "%", None, 5.0, 100.0),
        ("mem.available_bytes", "B", None, 1e8, 6.4e10),
        ("swap.percent", "%", None, 0.0, 100.0),
        ("disk.percent", "%", {"mount": "/"}, 5.0, 100.0),
        ("disk.percent", "%", {"mount": "/data"}, 5.0, 100.0),
        ("disk.read_ops_per_s", "ops/s", None, 0.0, 5000.0),
        ("disk.write_ops_per_s", "ops/s", None, 0.0, 5000.0),
        ("disk.read_bytes_per_s", "B/s", None, 0.0, 5e8),
        ("disk.write_bytes_per_s", "B/s", None, 0.0, 5e8),
        ("disk.busy_percent", "%", None, 0.0, 100.0),
        ("net.bytes_sent_per_s", "B/s", None, 0.0, 1.25e9),
        ("net.bytes_recv_per_s", "B/s", None, 0.0, 1.25e9),
        ("net.packets_sent_per_s", "packets/s", None, 0.0, 1e6),
        ("net.packets_recv_per_s", "packets/s", None, 0.0, 1e6),
        ("net.errors_in_per_s", "errors/s", None, 0.0, 5.0),
        ("net.drops_in_per_s", "drops/s", None, 0.0, 5.0),
        ("proc.count", "processes", None, 100.0, 800.0),
        ("gpu.utilization_percent", "%", {"gpu": "0"}, 0.0, 100.0),
        ("gpu.memory_used_bytes", "B", {"gpu": "0"}, 1e9, 8e10),
        ("gpu.temperature_c", "C", {"gpu": "0"}, 30.0, 90.0),
        ("gpu.power_w", "W", {"gpu": "0"}, 50.0, 700.0),
        ("app.requests_per_s", "req/s", None, 0.0, 2000.0),
        ("app.latency_p95_ms", "ms", None, 5.0, 500.0),
        ("uptime_s", "s", None, 0.0, 1e7),
    ]
)
METRICS_PER_NODE = len(_SHAPE)


class _SimNode:
    """One simulated node: a batch whose sample values take a bounded random walk each tick."""

    def __init__(self, cluster: str, node: str, rng: random.Random, hot: bool) -> None:
        self.node = node
        self.subject = metrics_subject(cluster, node)
        self.rng = rng
        self.hot = hot
        self.samples = [Sample(n, rng.uniform(lo, lo + (hi - lo) * 0.5), u, lab) for n, u, lab, lo, hi in _SHAPE]
        self.batch = MetricBatch(cluster, node, time.time(), self.samples, 0)

    def next_payload(self, seq: int) -> bytes:
        rng = self.rng
        for s, (name, _, _, lo, hi) in zip(self.samples, _SHAPE):
            if name == "uptime_s":
                s.value += 1.0
                continue
            v = s.value + rng.gauss(0.0, (hi - lo) * 0.02)
            if self.hot and name == "cpu.percent":
                v = rng.uniform(95.5, 99.5)
            s.value = min(hi, max(lo, v))
        self.batch.ts = time.time()
        self.batch.seq = seq
        return encode(self.batch)


async def run_loadgen(
    url: str,
    nodes: int,
    interval_s: float,
    duration_s: float,
    *,
    cluster: str = "load",
    node_prefix: str = "sim",
    hot_nodes: int = 0,
    seed: int = 1,
    max_inflight: int = DEFAULT_MAX_INFLIGHT,
    ensure_stream: bool = False,
    connect_options: dict[str, Any] | None = None,
    spread: bool = False,
) -> dict[str, Any]:
    """Publish ``nodes`` snapshots every ``interval_s`` for ``duration_s``; returns counts and the achieved rate.

    ``failed`` counts publishes JetStream refused or did not acknowledge within
    ACK_TIMEOUT_S; ``behind_s`` is how far the last tick started after its
    schedule (the generator could not keep up when it grows).
    """
    import nats

    if nodes < 1:
        raise ValueError(f"nodes {nodes!r} must be >= 1")
    if interval_s <= 0 or duration_s <= 0:
        raise ValueError(f"interval {interval_s!r} and duration {duration_s!r} must be > 0 seconds")
    check_token(cluster, "cluster")
    check_token(f"{node_prefix}-{nodes - 1}", "node")
    rng = random.Random(seed)
    sims = [_SimNode(cluster, f"{node_prefix}-{i}", random.Random(rng.random()), i < hot_nodes) for i in range(nodes)]
    run_id = os.urandom(3).hex()

    nc = await nats.connect(url, name="swarmwatch-loadgen", **(connect_options or {}))
    js = nc.jetstream(publish_async_max_pending=max_inflight)
    if ensure_stream:
        await _ensure_stream(js)
    sent = failed = attempted = 0
    errors: dict[str, int] = {}
    pending: set[asyncio.Future[Any]] = set()

    def done(fut: asyncio.Future[Any]) -> None:
        nonlocal sent, failed
        pending.discard(fut)
        if fut.cancelled():
            failed += 1
            errors["cancelled"] = errors.get("cancelled", 0) + 1
        elif fut.exception() is not None:
            failed += 1
            name = type(fut.exception()).__name__
            errors[name] = errors.get(name, 0) + 1
        else:
            sent += 1

    slots = SPREAD_SLOTS if spread else 1
    groups = [sims[i::slots] for i in range(slots)]
    start = time.monotonic()
    end = start + duration_s
    tick = 0
    behind = 0.0
    try:
        while True:
            due = start + tick * interval_s
            now = time.monotonic()
            if due >= end:
                break
            if due > now:
                await asyncio.sleep(due - now)
            else:
                behind = now - due
            tick += 1
            for slot, group in enumerate(groups):
                if spread and slot:  # independent nodes: their ticks fall all over the interval
                    wait = due + slot * interval_s / len(groups) - time.monotonic()
                    if wait > 0:
                        await asyncio.sleep(wait)
                for sim in group:
                    attempted += 1
                    try:
                        fut = await js.publish_async(
                            sim.subject, sim.next_payload(tick), wait_stall=ACK_TIMEOUT_S,
                            headers={"Nats-Msg-Id": f"{sim.node}:{run_id}:{tick}"},
                        )
                    except Exception as exc:  # noqa: BLE001 - counted, the run goes on
                        failed += 1
                        errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1
                        continue
                    pending.add(fut)
                    fut.add_done_callback(done)
        publish_end = time.monotonic()
        if pending:
            _, late = await asyncio.wait(set(pending), timeout=ACK_TIMEOUT_S)
            for fut in late:
                fut.cancel()
        acked_end = time.monotonic()
    finally:
        await nc.close()
    elapsed = max(duration_s, acked_end - start)
    return {
        "bench": "loadgen",
        "nodes": nodes,
        "metrics_per_node": METRICS_PER_NODE,
        "interval_s": interval_s,
        "duration_s": round(elapsed, 3),
        "ticks": tick,
        "attempted": attempted,
        "sent": sent,
        "failed": failed,
        "errors": errors,
        "target_rate_per_s": round(nodes / interval_s, 1),
        "achieved_rate_per_s": round(sent / elapsed, 1) if elapsed > 0 else 0.0,
        "publish_rate_per_s": round(attempted / (publish_end - start), 1) if publish_end > start else 0.0,
        "samples_per_s": round(sent * METRICS_PER_NODE / elapsed, 1) if elapsed > 0 else 0.0,
        "behind_s": round(behind, 3),
        "payload_bytes": len(sims[0].next_payload(tick)),
    }


async def _ensure_stream(js: Any) -> None:
    from swarmwatch.streams import ensure_streams

    await ensure_streams(js)


def _interval(text: str) -> float:
    from producers.options import parse_interval

    try:
        return parse_interval(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Simulate N nodes publishing ~40-metric snapshots; prints JSON.")
    ap.add_argument("--url", default="nats://127.0.0.1:4222")
    ap.add_argument("--nodes", type=int, default=100)
    ap.add_argument("--interval", type=_interval, default=1.0, help="'1s', '100ms', '2'")
    ap.add_argument("--duration", type=float, default=10.0, help="seconds")
    ap.add_argument("--cluster", default="load")
    ap.add_argument("--hot-nodes", type=int, default=0, help="nodes that run at ~97%% CPU")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--max-inflight", type=int, default=DEFAULT_MAX_INFLIGHT)
    ap.add_argument("--ensure-stream", action="store_true", help="create the TELEMETRY stream if missing")
    ap.add_argument("--embedded", action="store_true", help="start a throw-away local nats-server (ignores --url)")
    ap.add_argument("--spread", action="store_true", help="spread the nodes' publishes over the interval instead of all at once")
    a = ap.parse_args(argv)

    async def go(url: str) -> dict[str, Any]:
        return await run_loadgen(url, a.nodes, a.interval, a.duration, cluster=a.cluster, hot_nodes=a.hot_nodes,
                                 seed=a.seed, max_inflight=a.max_inflight, ensure_stream=a.ensure_stream or a.embedded,
                                 spread=a.spread)

    try:
        if a.embedded:
            import tempfile

            from swarmwatch.server import EmbeddedServer

            with tempfile.TemporaryDirectory() as d, EmbeddedServer(Path(d) / "nats", port=0) as srv:
                result = asyncio.run(go(srv.url))
        else:
            result = asyncio.run(go(a.url))
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
