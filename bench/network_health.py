"""Network health costs: probe round trip on a local nats-server and operator throughput.

    python bench/network_health.py [--nodes 100] [--peers 10] [--probes 300]

Prints one JSON object. Short by design (a few seconds on a 2-core box).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time

from schemas import MetricBatch, Sample

from processors.liveness import LivenessOperator
from processors.network import NetworkHealthOperator


def _batch(node: int, peers: int, nodes: int, ts: float) -> MetricBatch:
    samples: list[Sample] = []
    for k in range(1, peers + 1):
        lab = {"peer": f"n{(node + k) % nodes}", "via": "nats"}
        samples += [
            Sample("peer.latency_ms", 5.0 + k, "ms", lab),
            Sample("peer.jitter_ms", 1.0, "ms", lab),
            Sample("peer.loss_percent", 0.0, "%", lab),
            Sample("peer.success_rate", 1.0, None, lab),
            Sample("peer.consecutive_failures", 0.0, None, lab),
        ]
    samples += [
        Sample("net.peer_count", float(peers)),
        Sample("net.connection_success_rate", 1.0),
        Sample("net.avg_latency_ms", 8.0, "ms"),
        Sample("net.bandwidth_mbps", 1.5),
    ]
    return MetricBatch("bench", f"n{node}", ts, samples)


def bench_operators(nodes: int, peers: int, rounds: int = 20) -> dict[str, float]:
    op = NetworkHealthOperator(emit_interval_s=1.0)
    live = LivenessOperator(deadline_s=60.0)
    batches = [_batch(i, peers, nodes, 1_700_000_000.0) for i in range(nodes)]
    t0 = time.perf_counter()
    n = 0
    for r in range(rounds):
        now = 1_700_000_000.0 + r
        for b in batches:
            op.on_metrics(b, now)
            live.on_metrics(b, now)
            n += 1
    dt = time.perf_counter() - t0
    t1 = time.perf_counter()
    reps = 20
    for r in range(reps):
        op.health("bench", 1_700_000_000.0 + rounds)
    health_ms = (time.perf_counter() - t1) * 1000 / reps
    hs = op.health("bench", 1_700_000_000.0 + rounds)
    from schemas import codec

    health_bytes = len(codec.encode(hs)) if hs is not None else 0
    t2 = time.perf_counter()
    for r in range(reps):
        live.on_tick(1_700_000_000.0 + rounds)
    tick_ms = (time.perf_counter() - t2) * 1000 / reps
    return {
        "batches_per_s_network_plus_liveness": round(n / dt),
        "samples_per_batch": len(batches[0].samples),
        "health_score_ms": round(health_ms, 2),
        "health_score_bytes": health_bytes,
        "liveness_tick_ms": round(tick_ms, 3),
    }


async def bench_probes(probes: int) -> dict[str, float]:
    import nats

    from producers.probes import PeerProber, ProbeResponder
    from swarmwatch.server import EmbeddedServer

    with tempfile.TemporaryDirectory() as d, EmbeddedServer(d, port=0) as srv:
        a = await nats.connect(srv.url)
        b = await nats.connect(srv.url)
        responder = ProbeResponder(b, "bench", "peer")
        await responder.start()
        prober = PeerProber(a, "bench", "me", static_peers=["peer"], discover=False, publish=False, window=probes)
        await prober.start()
        rtts: list[float] = []
        t0 = time.perf_counter()
        for _ in range(probes):
            ((_, r),) = await prober.probe_once()
            if r.ok and r.rtt_ms is not None:
                rtts.append(r.rtt_ms)
        dt = time.perf_counter() - t0
        await prober.stop(clean=False)
        await responder.stop()
        await a.close()
        await b.close()
    rtts.sort()
    return {
        "probes": probes,
        "probe_ok": len(rtts),
        "probe_rtt_median_ms": round(statistics.median(rtts), 3),
        "probe_rtt_p95_ms": round(rtts[int(0.95 * (len(rtts) - 1))], 3),
        "sequential_probes_per_s": round(probes / dt),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--nodes", type=int, default=100)
    ap.add_argument("--peers", type=int, default=10)
    ap.add_argument("--probes", type=int, default=300)
    args = ap.parse_args()
    out: dict[str, object] = {"bench": "network_health", "nodes": args.nodes, "peers_per_node": args.peers}
    out.update(bench_operators(args.nodes, args.peers))
    out.update(asyncio.run(bench_probes(args.probes)))
    print(json.dumps(out))


if __name__ == "__main__":
    main()
