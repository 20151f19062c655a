"""File sink throughput: records/s from a filled TELEMETRY stream to durable, acked segments.

Publishes N MetricBatch messages of 40 samples (~1.5 KB each) to an embedded
nats-server, then times a FileSink of each format draining them: from start to
the last flush is acked. Also times the writer alone (rows -> fsynced segment file).

    python bench/bench_sinks.py [--batches 5000] [--samples 40]

Prints one JSON object.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from pathlib import Path

import nats

from schemas import MetricBatch, Sample, encode, subjects
from sinks.files import FileSink, FileSinkSettings
from sinks.rows import message_rows
from sinks.segments import get_format, segment_name, write_atomic
from swarmwatch.server import EmbeddedServer
from swarmwatch.streams import ensure_streams


def make_batch(i: int, samples: int) -> MetricBatch:
    node = f"n{i % 50}"
    return MetricBatch("bench", node, time.time() - 600 + i * 0.01,
                       [Sample(f"metric.{k}", float(i * k % 997) + 0.25, unit="%") for k in range(samples)], seq=i)


async def drain(url: str, root: Path, fmt: str, n: int) -> dict[str, float]:
    nc = await nats.connect(url)
    sink = FileSink(nc, root, fmt, FileSinkSettings(flush_interval_s=1.0, subjects={"TELEMETRY": ("sw.metrics.>",)}))
    t0 = time.perf_counter()
    await sink.start()
    while sink.stats.received + sink.stats.redelivered < n:
        await asyncio.sleep(0.005)
    await sink.flush()  # the tail, without waiting for the age limit
    dt = time.perf_counter() - t0
    await sink.stop()
    await nc.close()
    size = sum(p.stat().st_size for p in (root / fmt).rglob("*") if p.is_file())
    return {
        "msgs_per_s": round(n / dt),
        "records_per_s": round(sink.stats.records / dt),
        "seconds": round(dt, 3),
        "segments": sink.stats.segments,
        "bytes_on_disk": size,
    }


def writer_only(root: Path, fmt: str, n: int, samples: int) -> dict[str, float]:
    rows = []
    for i in range(n):
        b = make_batch(i, samples)
        rows.extend(message_rows(subjects.metrics(b.cluster, b.node), encode(b), i + 1)[3])
    f = get_format(fmt)
    t0 = time.perf_counter()
    chunk = 50_000
    for k in range(0, len(rows), chunk):
        part = rows[k:k + chunk]
        write_atomic(root / f"w-{fmt}" / segment_name("metrics", k + 1, k + len(part), f.ext),
                     lambda fh, part=part: f.write(fh, "metrics", part))
    dt = time.perf_counter() - t0
    return {"records_per_s": round(len(rows) / dt), "records": len(rows)}


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batches", type=int, default=5000)
    ap.add_argument("--samples", type=int, default=40)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        srv = EmbeddedServer(root / "nats", port=0)
        srv.start()
        try:
            nc = await nats.connect(srv.url)
            js = nc.jetstream()
            await ensure_streams(js)
            payload_bytes = 0
            futs = []
            for i in range(args.batches):
                b = make_batch(i, args.samples)
                data = encode(b)
                payload_bytes += len(data)
                futs.append(await js.publish_async(subjects.metrics(b.cluster, b.node), data))
            await asyncio.gather(*futs)
            await nc.close()
            out: dict[str, object] = {
                "batches": args.batches,
                "samples_per_batch": args.samples,
                "avg_msg_bytes": round(payload_bytes / args.batches),
            }
            for fmt in ("json", "parquet"):
                out[f"sink_{fmt}"] = await drain(srv.url, root / "store", fmt, args.batches)
            for fmt in ("json", "parquet"):
                out[f"writer_only_{fmt}"] = writer_only(root, fmt, min(args.batches, 2500), args.samples)
        finally:
            srv.stop()
    print(json.dumps(out))


if __name__ == "__main__":
    asyncio.run(main())
