"""API under a simulated fleet: backfill speed, /api/nodes and /metrics latency, sizes.

Starts an embedded nats-server, stores ``--minutes`` of 10 s aggregates, trust,
health and alerts for ``--nodes`` nodes in DERIVED, starts the ApiServer (which
backfills from DERIVED), then times the endpoints. Prints JSON.

    python bench/api_fleet.py --nodes 500 --minutes 10
    python bench/api_fleet.py --nodes 500 --serve-s 600 --port 8686   # keep serving (dashboard screenshots)
"""
from __future__ import annotations

import argparse
import asyncio
import json
import math
import random
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx
import nats

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from schemas import Alert, AlertKind, AlertStatus, HealthScore, SeriesStats, Severity, TrustScore, WindowAggregate, encode, subjects  # noqa: E402
from sinks.api import ApiServer  # noqa: E402
from swarmwatch.server import EmbeddedServer  # noqa: E402
from swarmwatch.streams import ensure_streams  # noqa: E402

WINDOW_S = 10.0


def _stats(metric: str, v: float, rng: random.Random, labels: dict[str, str] | None = None, unit: str | None = None) -> SeriesStats:
    spread = abs(v) * 0.15 + 0.5
    lo, hi = max(0.0, v - spread * rng.random()), v + spread * rng.random()
    return SeriesStats(metric=metric, count=10, min=lo, max=hi, mean=v, sum=v * 10, p50=v, p95=v + (hi - v) * 0.8, p99=hi, last=v, labels=labels, unit=unit)


class SimNode:
    """Smooth per-node signals: a baseline, a slow wave and noise."""

    def __init__(self, cluster: str, node: str, rng: random.Random, hot: float = 0.0, gpu: bool = False) -> None:
        self.cluster, self.node, self.rng, self.gpu = cluster, node, rng, gpu
        self.base = {"cpu": rng.uniform(10, 55) + hot, "mem": rng.uniform(25, 70) + hot * 0.5, "disk": rng.uniform(20, 75), "lat": rng.uniform(8, 60)}
        self.phase = rng.uniform(0, 2 * math.pi)

    def agg(self, end: float) -> WindowAggregate:
        r, w = self.rng, math.sin(end / 300.0 + self.phase)
        clamp = lambda x: max(0.0, min(100.0, x))  # noqa: E731
        cpu = clamp(self.base["cpu"] + 12 * w + r.gauss(0, 3))
        series = [
            _stats("cpu.percent", cpu, r, unit="%"),
            _stats("cpu.iowait_percent", clamp(2 + 2 * w + r.random()), r, unit="%"),
            _stats("mem.percent", clamp(self.base["mem"] + 4 * w + r.gauss(0, 1)), r, unit="%"),
            _stats("disk.percent", clamp(self.base["disk"] + end % 3600 / 3600), r, {"mount": "/"}, "%"),
            _stats("disk.percent", clamp(self.base["disk"] * 0.6), r, {"mount": "/data"}, "%"),
            _stats("disk.busy_percent", clamp(15 + 10 * w + r.gauss(0, 4)), r, unit="%"),
            _stats("net.bytes_recv_per_s", max(0.0, 4e6 + 3e6 * w + r.gauss(0, 5e5)), r, unit="B/s"),
            _stats("net.bytes_sent_per_s", max(0.0, 2e6 - 1e6 * w + r.gauss(0, 4e5)), r, unit="B/s"),
            _stats("net.avg_latency_ms", max(1.0, self.base["lat"] + 10 * w + r.gauss(0, 3)), r, unit="ms"),
            _stats("disk.read_latency_ms", max(0.1, 2 + w + r.random()), r, unit="ms"),
        ]
        if self.gpu:
            series.append(_stats("gpu.utilization_percent", clamp(70 + 25 * w + r.gauss(0, 5)), r, {"gpu": "0"}, "%"))
            series.append(_stats("gpu.memory_percent", clamp(60 + 10 * w), r, {"gpu": "0"}, "%"))
        return WindowAggregate(cluster=self.cluster, node=self.node, window_s=WINDOW_S, start=end - WINDOW_S, end=end, series=series)


def make_fleet(n: int, seed: int = 7) -> list[SimNode]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        cluster = "train-eu" if i < n * 0.7 else "infer-us"
        hot = 40.0 if rng.random() < 0.04 else 0.0
        out.append(SimNode(cluster, f"node-{i:04d}", rng, hot=hot, gpu=cluster == "train-eu"))
    return out


def make_alert(n: SimNode, rule: str, sev: Severity, kind: AlertKind, started: float, summary: str, metric: str | None = None, value: float | None = None) -> Alert:
    return Alert(
        id=f"{rule}-{n.cluster}-{n.node}", status=AlertStatus.FIRING, severity=sev, kind=kind, rule=rule,
        cluster=n.cluster, node=n.node, started_at=started, summary=summary, metric=metric, value=value,
    )


async def seed(nc: nats.NATS, fleet: list[SimNode], minutes: float, now: float) -> int:
    """Publish history into DERIVED (core publishes; the stream stores them)."""
    count = 0
    end0 = math.floor(now / WINDOW_S) * WINDOW_S
    steps = int(minutes * 60 / WINDOW_S)
    for k in range(steps, 0, -1):
        end = end0 - (k - 1) * WINDOW_S
        for n in fleet:
            await nc.publish(subjects.agg(WINDOW_S, n.cluster, n.node), encode(n.agg(end)))
            count += 1
        for cl in sorted({n.cluster for n in fleet}):
            members = [n for n in fleet if n.cluster == cl]
            rng = members[0].rng
            hs = HealthScore(
                cluster=cl, ts=end, overall_health=max(0.0, min(100.0, 86 + 6 * math.sin(end / 500) + rng.gauss(0, 1.5))),
                peer_count=len(members) - 2, expected_peers=len(members), connection_success_rate=0.97, avg_latency=35.0,
                components={"peers": 99.0, "success": 97.0, "latency": 80.0},
                nodes={n.node: {"status": "connected", "quality": round(60 + 40 * n.rng.random(), 1)} for n in members} if k == 1 else {},
            )
            await nc.publish(subjects.health(cl), encode(hs))
        if k % 30 == 0:
            await nc.flush()
    for i, n in enumerate(fleet):
        trust = 0.35 if i % 97 == 13 else 0.8 + 0.2 * n.rng.random()
        await nc.publish(subjects.trust(n.cluster, n.node), encode(TrustScore(cluster=n.cluster, node=n.node, ts=now, round=42, trust=trust)))
    hot = [n for n in fleet if n.base["cpu"] > 50]
    alerts = [make_alert(n, "cpu_high", Severity.WARNING, AlertKind.THRESHOLD, now - 120, f"cpu.percent {n.base['cpu']:.0f}% > 85%", "cpu.percent", n.base["cpu"]) for n in hot[:12]]
    alerts += [make_alert(n, "disk_full", Severity.CRITICAL, AlertKind.THRESHOLD, now - 600, "disk.percent{mount=/} 96% > 95%") for n in fleet[5:8]]
    alerts += [make_alert(n, "node_unresponsive", Severity.CRITICAL, AlertKind.LIVENESS, now - 90, "no data for 90 s (deadline 60 s)") for n in fleet[-2:]]
    for a in alerts:
        await nc.publish(subjects.alerts(a.severity.value, a.cluster, a.node, a.rule), encode(a))
    await nc.flush()
    return count


async def ws_alert_latency(nc: nats.NATS, url: str, node: SimNode, n: int = 200) -> dict[str, float]:
    """Publish ``n`` alerts on NATS and time their arrival on the WebSocket: median and p99 in ms."""
    from websockets.asyncio.client import connect

    lat: list[float] = []
    async with connect(url.replace("http", "ws", 1) + "/ws", max_size=None) as ws:
        await ws.recv()  # hello
        await ws.send(json.dumps({"subscribe": {"types": ["alert"]}}))
        await ws.recv()  # subscribed
        for i in range(n):
            a = make_alert(node, f"bench_{i}", Severity.INFO, AlertKind.CUSTOM, time.time(), "latency probe")
            t0 = time.perf_counter()
            await nc.publish(subjects.alerts("info", node.cluster, node.node, a.rule), encode(a))
            await nc.flush()
            while json.loads(await ws.recv())["type"] != "alert":
                pass
            lat.append((time.perf_counter() - t0) * 1000)
            await asyncio.sleep(0.005)
    lat.sort()
    return {"median": round(statistics.median(lat), 2), "p99": round(lat[int(0.99 * (n - 1))], 2)}


def _time(client: httpx.Client, path: str, n: int = 5) -> tuple[float, int]:
    ts, size = [], 0
    for _ in range(n):
        t0 = time.perf_counter()
        r = client.get(path)
        ts.append((time.perf_counter() - t0) * 1000)
        r.raise_for_status()
        size = len(r.content)
    return statistics.median(ts), size


async def run(args: argparse.Namespace) -> dict[str, object]:
    with tempfile.TemporaryDirectory() as tmp, EmbeddedServer(Path(tmp) / "nats", port=0) as srv:
        nc = await nats.connect(srv.url)
        await ensure_streams(nc.jetstream())
        fleet = make_fleet(args.nodes)
        now = time.time()
        seeded = await seed(nc, fleet, args.minutes, now)
        await asyncio.sleep(0.5)
        api = ApiServer(nc, host="127.0.0.1", port=args.port)
        t0 = time.perf_counter()
        await api.start()
        assert api.feed is not None
        await asyncio.wait_for(api.feed.backfill_done.wait(), 600)
        backfill_s = time.perf_counter() - t0
        out: dict[str, object] = {
            "nodes": args.nodes,
            "aggregates_stored": seeded,
            "backfilled_messages": api.state.backfilled,
            "backfill_s": round(backfill_s, 2),
            "backfill_msgs_per_s": round(api.state.backfilled / backfill_s),
        }

        def measure() -> None:
            with httpx.Client(base_url=api.url, timeout=30) as c:
                out["api_nodes_ms"], out["api_nodes_bytes"] = _time(c, "/api/nodes")
                out["metrics_ms"], out["metrics_bytes"] = _time(c, "/metrics")
                out["node_detail_ms"], _ = _time(c, f"/api/nodes/{fleet[0].cluster}/{fleet[0].node}")
                q = "&".join(f"metric={m}" for m in ("cpu.percent", "mem.percent", "disk.percent", "net.bytes_recv_per_s"))
                out["history_ms"], _ = _time(c, f"/api/nodes/{fleet[0].cluster}/{fleet[0].node}/history?since=1h&{q}")

        await asyncio.to_thread(measure)
        out["ws_alert_latency_ms"] = await ws_alert_latency(nc, api.url, fleet[0])
        for k in ("api_nodes_ms", "metrics_ms", "node_detail_ms", "history_ms"):
            out[k] = round(float(out[k]), 1)  # type: ignore[arg-type]
        if args.serve_s > 0:
            print(json.dumps({"serving": api.url}), flush=True)
            end = time.time() + args.serve_s
            while time.time() < end:  # keep the charts moving
                await asyncio.sleep(WINDOW_S)
                t = math.floor(time.time() / WINDOW_S) * WINDOW_S
                for n in fleet:
                    await nc.publish(subjects.agg(WINDOW_S, n.cluster, n.node), encode(n.agg(t)))
        await api.stop()
        await nc.close()
        return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--nodes", type=int, default=500)
    p.add_argument("--minutes", type=float, default=10.0, help="history stored before the API starts")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--serve-s", type=float, default=0.0, help="keep serving this long after measuring")
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # SIGTERM unwinds like Ctrl-C: the nats-server child stops too
    print(json.dumps(asyncio.run(run(p.parse_args()))))


if __name__ == "__main__":
    main()
