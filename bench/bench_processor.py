"""Processor throughput vs the raw JetStream consume rate of the same messages, in one run.

    python bench/bench_processor.py --nodes 1000 --ticks 30 --rounds 3

Publishes nodes x ticks snapshots (~40 samples each) into TELEMETRY, then
alternately (a) drains them with the bare pull consumer (no decode, one ack)
and (b) runs the processor runtime with windows (10 s, 1 min) and the default
threshold rules over the same messages. Prints JSON.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import platform
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import nats  # noqa: E402
from nats.js.api import AckPolicy  # noqa: E402

from bench.fleet import snapshot  # noqa: E402
from processors import JetStreamPuller, Operator, Runtime, ThresholdRules, TumblingWindows  # noqa: E402
from schemas import encode, subjects  # noqa: E402
from swarmwatch.server import EmbeddedServer  # noqa: E402
from swarmwatch.streams import ensure_streams  # noqa: E402


async def fill(js: object, nodes: int, ticks: int) -> tuple[int, float]:
    rng = random.Random(1)
    t0 = (time.time() - ticks - 120) // 60 * 60 + 5  # aligned: the same windows close in every run
    total = 0
    size = 0
    futs = []
    for t in range(ticks):
        for n in range(nodes):
            data = encode(snapshot("bench", f"node-{n:04d}", t0 + t, rng, seq=t))
            size += len(data)
            futs.append(await js.publish_async(subjects.metrics("bench", f"node-{n:04d}"), data))  # type: ignore[attr-defined]
            total += 1
            if len(futs) >= 2000:
                await asyncio.gather(*futs)
                futs = []
    await asyncio.gather(*futs)
    return total, size / total


async def raw_rate(nc: nats.NATS, total: int, name: str) -> float:
    done = asyncio.Event()
    count = 0
    last = None

    first = 0.0

    async def handler(msg: object) -> None:
        nonlocal count, last, first
        count += 1
        last = msg
        if count == 1:
            first = time.perf_counter()
        if count >= total:
            done.set()

    p = JetStreamPuller(nc, "TELEMETRY", name, ["sw.metrics.>"], handler, ack_policy=AckPolicy.ALL)
    await p.ensure(recreate=True)
    await p.start()
    await done.wait()
    el = time.perf_counter() - first
    await p.ack(last)  # type: ignore[arg-type]
    await p.stop()
    return (total - 1) / el


async def processor_rate(nc: nats.NATS, total: int, name: str, operators: bool = True) -> tuple[float, dict[str, int]]:
    """Rate from the first processed message to the last (startup, i.e. restoring a checkpoint, excluded).

    ``operators=False`` runs the runtime with decoding and validation only: the floor of any processor.
    """
    ops: list[Operator] = [ThresholdRules(), TumblingWindows()] if operators else []
    rt = Runtime(nc, ops, name=name, fresh=True, checkpoint_interval_s=2.0)
    marks: list[float] = []

    class FirstMark(Operator):
        name = "first_mark"

        def on_metrics(self, batch: object, now: float) -> tuple[()]:
            if not marks:
                marks.append(time.perf_counter())
            return ()

    rt.operators.insert(0, FirstMark())
    rt._metric_ops.insert(0, rt.operators[0])
    await rt.start()
    while rt.stats.processed < total:
        await asyncio.sleep(0.001)
    el = time.perf_counter() - marks[0]
    await rt.stop()
    return (total - 1) / el, {"published": rt.stats.published, "checkpoints": rt.stats.checkpoints}


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--nodes", type=int, default=1000)
    ap.add_argument("--ticks", type=int, default=30)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d, EmbeddedServer(d, port=0) as srv:
        nc = await nats.connect(srv.url, pending_size=64 * 1024 * 1024)
        js = nc.jetstream()
        await ensure_streams(js)
        total, avg_size = await fill(js, args.nodes, args.ticks)
        raws, procs, decodes = [], [], []
        extra: dict[str, int] = {}
        for r in range(args.rounds):
            raws.append(await raw_rate(nc, total, f"raw{r}"))
            decodes.append((await processor_rate(nc, total, f"decode{r}", operators=False))[0])
            rate, extra = await processor_rate(nc, total, f"proc{r}")
            procs.append(rate)
        await nc.close()
    raw_m, proc_m = statistics.median(raws), statistics.median(procs)
    samples_per_msg = len(snapshot("b", "n", time.time(), random.Random(0)).samples)
    print(
        json.dumps(
            {
                "bench": "processor_throughput",
                "machine": f"{platform.machine()} {platform.processor() or ''} cores={__import__('os').cpu_count()}".strip(),
                "messages": total,
                "avg_message_bytes": round(avg_size),
                "samples_per_message": samples_per_msg,
                "raw_consume_msgs_per_s": [round(x) for x in raws],
                "runtime_decode_only_msgs_per_s": [round(x) for x in decodes],
                "processor_msgs_per_s": [round(x) for x in procs],
                "processor_samples_per_s": round(proc_m * samples_per_msg),
                "ratio_median": round(proc_m / raw_m, 3),
                "ratio_per_round": [round(p / r, 3) for p, r in zip(procs, raws)],
                "outputs_last_round": extra,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    asyncio.run(main())
