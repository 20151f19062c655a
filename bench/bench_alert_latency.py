"""End-to-end alert latency under fleet load.

    python bench/bench_alert_latency.py --nodes 1000 --duration 40

Starts a nats-server, the processor (``swarmwatch process`` in its own
process, windows + default rules + one probe rule) and a load generator
(another process: ``--nodes`` simulated nodes, one snapshot each per second).
Then a probe node publishes a sample that crosses a threshold every
``--probe-every`` seconds; the time from just before its publish to the alert
arriving at a subscriber is one latency sample. Prints JSON (p50/p99/max ms).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import nats  # noqa: E402

from schemas import Alert, AlertStatus, MetricBatch, Sample, decode, encode, subjects  # noqa: E402
from swarmwatch.server import EmbeddedServer  # noqa: E402
from swarmwatch.streams import ensure_streams  # noqa: E402

RULES = """defaults: true
rules:
  - {name: probe_high, metric: probe.value, op: ">", threshold: 50, severity: critical}
"""


def pct(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(round(q * (len(s) - 1))))]


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--nodes", type=int, default=1000)
    ap.add_argument("--duration", type=float, default=40.0, help="seconds of probing under load")
    ap.add_argument("--warmup", type=float, default=8.0)
    ap.add_argument("--probe-every", type=float, default=0.25)
    ap.add_argument("--operators", default="rules,windows,liveness,network",
                    help="processor operators (anomaly and byzantine run as their own consumers in production)")
    ap.add_argument("--spread", action="store_true", help="nodes publish spread over the second instead of all at once")
    ap.add_argument("--companion", default="",
                    help="operators for a second processor process running beside it, e.g. windows,network")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d, EmbeddedServer(Path(d) / "nats", port=0) as srv:
        nc = await nats.connect(srv.url)
        js = nc.jetstream()
        await ensure_streams(js)
        rules = Path(d) / "rules.yaml"
        rules.write_text(RULES)
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        proc = subprocess.Popen(
            [sys.executable, "-m", "swarmwatch", "process", "--nats", srv.url, "--rules", str(rules), "--name", "bench",
             "--operators", args.operators],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        companion = None
        if args.companion:
            companion = subprocess.Popen(
                [sys.executable, "-m", "swarmwatch", "process", "--nats", srv.url, "--name", "bench-companion",
                 "--operators", args.companion],
                env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )
        load = subprocess.Popen(
            [sys.executable, str(ROOT / "bench" / "loadgen.py"), "--url", srv.url, "--nodes", str(args.nodes),
             "--interval", "1s", "--duration", str(args.duration + args.warmup + 5)] + (["--spread"] if args.spread else []),
            env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
        )
        sent: dict[float, float] = {}  # probe sample ts -> wall time just before publish
        lat: list[float] = []

        async def on_alert(m: object) -> None:
            now = time.time()
            a = decode(m.data, Alert)  # type: ignore[attr-defined]
            if a.status is AlertStatus.FIRING and a.started_at in sent:
                lat.append((now - sent[a.started_at]) * 1000)

        await nc.subscribe("sw.alerts.critical.bench.probe.probe_high", cb=on_alert)
        await asyncio.sleep(args.warmup)
        subject = subjects.metrics("bench", "probe")
        t_end = time.time() + args.duration
        high = True
        seq = 0
        while time.time() < t_end:
            ts = time.time()
            value = 99.0 if high else 1.0
            data = encode(MetricBatch("bench", "probe", ts, [Sample("probe.value", value)], seq=seq))
            if high:
                sent[ts] = time.time()
            await js.publish(subject, data)
            seq += 1
            high = not high
            await asyncio.sleep(args.probe_every)
        await asyncio.sleep(2.0)
        load_out = load.communicate(timeout=60)[0]
        for p in (proc, companion):
            if p is not None:
                p.send_signal(2)
                p.wait(timeout=30)
        info = await js.stream_info("TELEMETRY")
        await nc.close()
    try:
        load_result = json.loads(load_out)
    except ValueError:
        load_result = {"raw": load_out.decode(errors="replace")[-500:]}
    print(json.dumps({
        "bench": "alert_latency",
        "machine": f"{platform.machine()} cores={os.cpu_count()}",
        "nodes": args.nodes,
        "operators": args.operators,
        "companion_operators": args.companion or None,
        "publishing": "spread over each second" if args.spread else "all nodes at the start of each second",
        "interval_s": 1.0,
        "crossings": len(sent),
        "alerts_received": len(lat),
        "latency_ms_p50": round(statistics.median(lat), 2) if lat else None,
        "latency_ms_p99": round(pct(lat, 0.99), 2) if lat else None,
        "latency_ms_max": round(max(lat), 2) if lat else None,
        "telemetry_messages": info.state.messages,
        "load": {k: load_result.get(k) for k in ("sent", "failed", "achieved_rate_per_s", "rate_per_s", "behind_s") if k in load_result} or load_result,
    }, indent=2))


if __name__ == "__main__":
    asyncio.run(main())
