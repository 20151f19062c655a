"""OTLP ingest latency: from a value set in the OpenTelemetry SDK to its batch on sw.metrics (issue 15).

Runs a local nats-server, the OTLP receiver (``producers.otlp.OtlpReceiver``, what
``swarmwatch ingest otlp`` serves) and the real SDK (``OTLPMetricExporter`` over
HTTP/protobuf, ``PeriodicExportingMetricReader``) in one process. A gauge gets a
new value at random moments; the figure is the time from setting it to the
first batch that carries it, against the export interval. Prints JSON.

    python bench/bench_otlp.py --interval-ms 1000 --changes 20
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from swarmwatch.server import EmbeddedServer  # noqa: E402


async def run(url: str, interval_ms: int, changes: int) -> dict[str, object]:
    import nats
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
    from opentelemetry.metrics import Observation
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
    from opentelemetry.sdk.resources import Resource

    from producers.otlp import OtlpReceiver
    from schemas.codec import decode_batch

    nc = await nats.connect(url)
    await nc.jetstream().add_stream(name="TELEMETRY", subjects=["sw.metrics.>", "sw.events.>"])
    rx = OtlpReceiver(nc, "127.0.0.1", 0)
    await rx.start()
    seen: dict[int, float] = {}

    async def on_msg(msg: object) -> None:
        t = time.monotonic()
        for s in decode_batch(msg.data).samples:  # type: ignore[attr-defined]
            if s.name == "bench.value":
                seen.setdefault(int(s.value), t)

    await nc.subscribe("sw.metrics.bench.sdk-node", cb=on_msg)
    current = {"value": 0}
    set_at: dict[int, float] = {}
    reader = PeriodicExportingMetricReader(OTLPMetricExporter(endpoint=rx.url + "/v1/metrics", timeout=5),
                                           export_interval_millis=interval_ms)
    provider = MeterProvider(metric_readers=[reader], resource=Resource.create({"service.namespace": "bench",
                                                                                 "host.name": "sdk-node"}))
    provider.get_meter("bench").create_observable_gauge(
        "bench.value", callbacks=[lambda _o: [Observation(current["value"])]])
    rng = random.Random(15)
    try:
        for i in range(1, changes + 1):
            await asyncio.sleep(rng.uniform(0.3, 1.7) * interval_ms / 1000.0)
            current["value"] = i
            set_at[i] = time.monotonic()
        await asyncio.sleep(2.5 * interval_ms / 1000.0)
    finally:
        await asyncio.to_thread(provider.shutdown)
        await rx.stop()
        await nc.close()
    lat = sorted((seen[i] - set_at[i]) * 1000.0 for i in set_at if i in seen)
    # a value overwritten before any export never shows; that is the SDK's sampling, not a loss
    return {
        "export_interval_ms": interval_ms,
        "changes": changes,
        "values_seen": len(lat),
        "latency_ms_median": round(statistics.median(lat), 1) if lat else None,
        "latency_ms_p95": round(lat[int(0.95 * (len(lat) - 1))], 1) if lat else None,
        "latency_ms_max": round(lat[-1], 1) if lat else None,
        "max_over_interval": round(lat[-1] / interval_ms, 3) if lat else None,
        "receiver": {"requests": rx.stats.requests, "batches": rx.stats.batches, "rejected": rx.stats.rejected,
                     "failed": rx.stats.failed},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--interval-ms", type=int, default=1000)
    ap.add_argument("--changes", type=int, default=20)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d, EmbeddedServer(Path(d) / "nats", port=0) as srv:
        result = asyncio.run(run(srv.url, args.interval_ms, args.changes))
    result["bench"] = "otlp_ingest_latency"
    result["machine"] = f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}"
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
