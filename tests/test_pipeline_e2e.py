"""End to end on a real nats-server: producer -> processor -> sinks, with a processor crash mid-stream."""
from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import msgspec
import nats

from processors.runtime import STATE_STORE
from producers.sdk import Registry
from producers.sidecar import run_producer
from schemas import AlertStatus
from sinks import read_records, start_file_sinks
from tests.support import collect_alerts, wait_for
from swarmwatch.server import EmbeddedServer
from swarmwatch.streams import ensure_streams

RULES = """defaults: false
rules:
  - {name: queue_backlog, metric: app.queue_depth, op: ">", threshold: 100, severity: critical, hysteresis: 20}
"""
PROCESSOR = "e2e-processor"


def spawn_processor(url: str, rules: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "swarmwatch", "process", "--nats", url, "--rules", str(rules),
         "--operators", "rules,windows", "--checkpoint-interval", "0.5s", "--name", PROCESSOR],
        env=dict(os.environ), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )


async def checkpointed_after(js: Any, t: float, timeout_s: float = 30.0) -> None:
    """Wait until the processor has stored a checkpoint taken after wall time ``t`` (UNIX s)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            # Each read is bounded: nats-py's ObjectStore.get waits for ever on the chunks of an
            # object that the processor replaced (and purged) between reading its info and its data.
            res = await asyncio.wait_for((await js.object_store(STATE_STORE)).get(PROCESSOR), 2.0)
            if msgspec.msgpack.decode(res.data)["ts"] > t:
                return
        except Exception:  # no bucket or no checkpoint yet, or a read that raced a newer checkpoint
            pass
        assert time.monotonic() < deadline, f"no checkpoint after {t} within {timeout_s} s"
        await asyncio.sleep(0.1)


async def test_forced_crossing_gives_one_firing_and_one_resolved_alert_across_a_processor_crash(
    nats_server: EmbeddedServer, tmp_path: Path
) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES)
    nc = await nats.connect(nats_server.url)
    js = nc.jetstream()
    await ensure_streams(js)
    seen = await collect_alerts(nc)
    sinks = await start_file_sinks(nc, tmp_path / "store", ("json", "parquet"))
    registry = Registry()
    depth = registry.gauge("app.queue_depth", unit="jobs")
    depth.set(5)
    stop = asyncio.Event()
    producer = asyncio.create_task(
        run_producer(nats_server.url, "e2e", "worker-1", 0.2, registry=registry, gpu=False, per_core=False, stop=stop)
    )
    proc = spawn_processor(nats_server.url, rules)
    try:
        await asyncio.sleep(1.0)
        depth.set(500)  # the forced crossing
        await wait_for(lambda: len(seen) >= 1)
        await checkpointed_after(js, time.time())  # the processor keeps seeing 500 (still firing) and checkpoints that
        proc.send_signal(signal.SIGKILL)  # crash mid-stream, while the alert is firing
        proc.wait()
        await asyncio.sleep(0.6)
        proc = spawn_processor(nats_server.url, rules)
        await asyncio.sleep(1.5)
        depth.set(50)  # back below the threshold minus the hysteresis
        await wait_for(lambda: len(seen) >= 2)
        await asyncio.sleep(1.5)
    finally:
        stop.set()
        await producer
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
        for s in sinks:
            await s.stop()
        await nc.close()

    assert [(a.status, a.rule, a.node) for a in seen] == [
        (AlertStatus.FIRING, "queue_backlog", "worker-1"),
        (AlertStatus.RESOLVED, "queue_backlog", "worker-1"),
    ]
    assert seen[0].id == seen[1].id and seen[0].value == 500 and seen[1].value == 50
    for fmt in ("json", "parquet"):
        stored = read_records(tmp_path / "store", "alerts", fmt=fmt)
        assert [(r["status"], r["id"]) for r in stored] == [("firing", seen[0].id), ("resolved", seen[0].id)]
        samples = read_records(tmp_path / "store", "metrics", fmt=fmt, node="worker-1")
        depths = [r["value"] for r in samples if r["metric"] == "app.queue_depth"]
        assert 500.0 in depths and depths[0] == 5.0 and depths[-1] == 50.0
        assert {"cpu.percent", "mem.percent"} <= {r["metric"] for r in samples}
