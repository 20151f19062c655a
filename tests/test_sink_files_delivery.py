"""File sinks: acks only after durable writes, crash recovery, dead letters, write failures, clean stop."""
from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from typer.testing import CliRunner

from schemas import DeadLetter, MetricBatch, Sample, decode, encode, subjects
from sinks.files import FileSink, FileSinkSettings, run_file_sinks
from sinks.reader import read_records
from sinks.segments import list_segments
from swarmwatch.cli import app
from swarmwatch.server import EmbeddedServer
from swarmwatch.streams import ensure_streams

D1 = (time.time() // 86_400.0) * 86_400.0 - 86_400.0 + 600.0  # yesterday 00:10 UTC


async def wait_until(pred: Callable[[], Any], timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.05)


async def wait_until_async(pred: Callable[[], Awaitable[bool]], timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not await pred():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.1)


async def publish_batches(js: Any, n: int, start: int = 0) -> None:
    for i in range(start, start + n):
        b = MetricBatch("c1", "n1", D1 + i, [Sample("cpu", float(i)), Sample("mem", 2.0 * i)])
        await js.publish(subjects.metrics("c1", "n1"), encode(b))


async def ack_floor(js: Any, durable: str = "sink-json") -> int:
    ci = await js.consumer_info("TELEMETRY", durable)
    return ci.ack_floor.stream_seq


async def test_a_flush_is_acked_only_after_its_segment_file_exists(nc: Any, tmp_path: Path) -> None:
    js = nc.jetstream()
    await ensure_streams(js)
    await publish_batches(js, 5)
    s = FileSink(nc, tmp_path, "json", FileSinkSettings(flush_interval_s=60.0))
    await s.start()
    await wait_until(lambda: s.stats.received == 5)
    await asyncio.sleep(0.2)
    assert list_segments(tmp_path, "json", "metrics") == []
    ci = await js.consumer_info("TELEMETRY", "sink-json")
    assert ci.ack_floor.stream_seq == 0 and ci.num_ack_pending == 5
    assert await s.flush()
    assert len(list_segments(tmp_path, "json", "metrics")) == 1

    async def acked() -> bool:
        return await ack_floor(js) == 5

    await wait_until_async(acked)
    await s.stop()


async def test_killed_sink_process_loses_nothing_and_a_new_sink_gets_the_redelivery(
    nats_server: EmbeddedServer, nc: Any, tmp_path: Path
) -> None:
    js = nc.jetstream()
    await ensure_streams(js)
    await publish_batches(js, 20)
    exe = shutil.which("swarmwatch", path=os.path.dirname(sys.executable)) or "swarmwatch"
    proc = subprocess.Popen(
        [exe, "sink", "json", "--nats", nats_server.url, "--store", str(tmp_path), "--flush-interval", "60",
         "--retention-days", "0"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        async def all_delivered_none_acked() -> bool:
            try:
                ci = await js.consumer_info("TELEMETRY", "sink-json")
            except Exception:
                return False
            return ci.num_ack_pending == 20

        await wait_until_async(all_delivered_none_acked, timeout_s=60)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    assert list_segments(tmp_path, "json", "metrics") == []
    await publish_batches(js, 10, start=20)

    # ack_wait is 60 s: without repositioning, the new sink would get 21..30 first and its ack would cover 1..20
    s = FileSink(nc, tmp_path, "json", FileSinkSettings(flush_interval_s=0.2))
    await s.start()
    await wait_until(lambda: s.stats.acked_msgs >= 30, timeout_s=30)
    await s.stop()
    rows = read_records(tmp_path, "metrics", fmt="json")
    assert sorted(r["_seq"] for r in rows) == sorted(list(range(1, 31)) * 2)
    assert await ack_floor(js) == 30


async def test_malformed_message_goes_to_the_dlq_counted_and_the_sink_keeps_going(nc: Any, tmp_path: Path) -> None:
    js = nc.jetstream()
    await ensure_streams(js)
    await publish_batches(js, 2)
    await js.publish("sw.metrics.c1.n1", b"{not json")
    await js.publish("sw.metrics.c1.n9", encode(MetricBatch("c1", "n1", D1, [Sample("cpu", 1.0)])))  # subject lies
    await publish_batches(js, 2, start=2)
    s = FileSink(nc, tmp_path, "parquet", FileSinkSettings(flush_interval_s=0.1))
    await s.start()
    await wait_until(lambda: s.stats.acked_msgs >= 6)
    await s.stop()
    assert s.stats.invalid == 2 and s.stats.dlq_failed == 0
    assert sorted({r["_seq"] for r in read_records(tmp_path, "metrics")}) == [1, 2, 5, 6]
    assert await ack_floor(js, "sink-parquet") == 6

    sub = await js.pull_subscribe("sw.dlq.sink-parquet", durable="t-dlq", stream="DERIVED")
    msgs = await sub.fetch(2, timeout=5)
    dead = [decode(m.data, DeadLetter) for m in msgs]
    assert [d.data for d in dead] == [b"{not json", encode(MetricBatch("c1", "n1", D1, [Sample("cpu", 1.0)]))]
    assert all(d.stage == "sink-parquet" for d in dead)
    assert "malformed JSON" in dead[0].reason and "does not match" in dead[1].reason


async def test_a_failed_write_is_not_acked_and_is_retried_until_it_succeeds(nc: Any, tmp_path: Path) -> None:
    js = nc.jetstream()
    await ensure_streams(js)
    await publish_batches(js, 4)
    blocker = tmp_path / "json" / "metrics"
    blocker.parent.mkdir(parents=True)
    blocker.write_text("a file where the sink needs a directory: every write fails")
    s = FileSink(nc, tmp_path, "json", FileSinkSettings(flush_interval_s=0.1))
    await s.start()
    await wait_until(lambda: s.stats.write_errors >= 2)
    assert await ack_floor(js) == 0 and s.stats.acked_msgs == 0
    await publish_batches(js, 2, start=4)  # more input while the disk is "full" joins the retry
    blocker.unlink()
    await wait_until(lambda: s.stats.acked_msgs >= 6, timeout_s=40)
    await s.stop()
    assert sorted({r["_seq"] for r in read_records(tmp_path, "metrics")}) == [1, 2, 3, 4, 5, 6]
    assert await ack_floor(js) == 6


async def test_stop_writes_and_acks_everything_buffered(nc: Any, tmp_path: Path) -> None:
    js = nc.jetstream()
    await ensure_streams(js)
    await publish_batches(js, 7)
    stop = asyncio.Event()
    task = asyncio.create_task(run_file_sinks(nc, tmp_path, ("json", "parquet"), FileSinkSettings(flush_interval_s=60.0), stop))

    async def delivered() -> bool:
        try:
            return all([(await js.consumer_info("TELEMETRY", d)).num_ack_pending == 7 for d in ("sink-json", "sink-parquet")])
        except Exception:
            return False

    await wait_until_async(delivered)
    assert list_segments(tmp_path, "json", "metrics") == []
    stop.set()
    stats = await asyncio.wait_for(task, 20)
    assert stats.acked_msgs == 14 and stats.records == 28
    for fmt, durable in (("json", "sink-json"), ("parquet", "sink-parquet")):
        assert len(read_records(tmp_path, "metrics", fmt=fmt)) == 14
        assert await ack_floor(js, durable) == 7


def test_cli_refuses_a_bad_setting_with_a_clear_message(tmp_path: Path) -> None:
    res = CliRunner().invoke(app, ["sink", "parquet", "--store", str(tmp_path), "--max-records", "0"])
    assert res.exit_code == 2
    assert "max_records must be >= 1, got 0" in res.output


async def test_a_delivery_lost_in_the_client_is_not_acked_past_but_fetched_again(nc: Any, tmp_path: Path) -> None:
    """With AckPolicy.ALL an ack covers every earlier message; a lost delivery must make the sink reposition."""
    js = nc.jetstream()
    await ensure_streams(js)
    s = FileSink(nc, tmp_path, "json", FileSinkSettings(flush_interval_s=0.1))
    await s.start()
    lane = next(l for l in s._lanes if l.stream == "TELEMETRY")
    assert lane.puller is not None
    deliver = lane.puller.handler
    lost: list[str] = []

    async def lossy(msg: Any) -> None:  # stands in for a delivery lost across a reconnect
        if not lost and msg.subject == "sw.metrics.c1.n1" and decode(msg.data, MetricBatch).ts == D1 + 3:
            lost.append(msg.reply)
            return
        await deliver(msg)

    lane.puller.handler = lossy
    await publish_batches(js, 10)
    await wait_until(lambda: s.stats.resets >= 1 and lane.acked_seq >= 10 and lane.buf.msgs == 0)
    await s.stop()
    assert lost
    assert sorted({r["_seq"] for r in read_records(tmp_path, "metrics", fmt="json")}) == list(range(1, 11))
    assert await ack_floor(js) == 10


async def test_counters_are_published_as_swarmwatch_self_metrics(nc: Any, tmp_path: Path) -> None:
    js = nc.jetstream()
    await ensure_streams(js)
    await js.publish("sw.events.c1.n1.error", b"\xff\xfe")
    got: list[MetricBatch] = []

    async def on_self(msg: Any) -> None:
        got.append(decode(msg.data, MetricBatch))

    await nc.subscribe("sw.self.sink-json", cb=on_self)
    s = FileSink(nc, tmp_path, "json", FileSinkSettings(flush_interval_s=0.1, self_metrics_interval_s=0.1))
    await s.start()
    await wait_until(lambda: any(
        smp.name == "swarmwatch.sink.invalid" and smp.value == 1.0 for b in got for smp in b.samples
    ))
    await s.stop()
    assert got[-1].cluster == "swarmwatch" and got[-1].node == "sink-json"
    assert {smp.labels["format"] for smp in got[-1].samples} == {"json"}


async def test_ctrl_c_on_the_sink_command_writes_and_acks_everything_received(
    nats_server: EmbeddedServer, nc: Any, tmp_path: Path
) -> None:
    js = nc.jetstream()
    await ensure_streams(js)
    await publish_batches(js, 12)
    exe = shutil.which("swarmwatch", path=os.path.dirname(sys.executable)) or "swarmwatch"
    proc = subprocess.Popen(
        [exe, "sink", "parquet", "--nats", nats_server.url, "--store", str(tmp_path), "--flush-interval", "60"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    try:
        async def delivered() -> bool:
            try:
                return (await js.consumer_info("TELEMETRY", "sink-parquet")).num_ack_pending == 12
            except Exception:
                return False

        await wait_until_async(delivered, timeout_s=60)
        assert list_segments(tmp_path, "parquet", "metrics") == []
        proc.send_signal(signal.SIGINT)
        _, err = await asyncio.to_thread(proc.communicate, timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err.decode()
    assert sorted({r["_seq"] for r in read_records(tmp_path, "metrics")}) == list(range(1, 13))
    assert await ack_floor(js, "sink-parquet") == 12
