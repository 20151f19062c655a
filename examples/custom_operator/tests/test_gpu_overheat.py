"""GpuOverheat raises real alerts and keeps its state across a processor restart."""
from __future__ import annotations

import asyncio
import time

import nats
import pytest

from processors import Runtime
from processors.dispatch import Dispatcher, run_items
from schemas import Alert, AlertStatus, MetricBatch, Sample, decode, encode, subjects
from swarmwatch.streams import ensure_streams
from swarmwatch_example_operator import GpuOverheat

T0 = time.time() - 600


def readings(temps: list[float], t0: float = T0, node: str = "gpu-1") -> list[MetricBatch]:
    return [MetricBatch("lab", node, t0 + i, [Sample("gpu.temperature_c", t, labels={"gpu": "0"})]) for i, t in enumerate(temps)]


def test_fires_once_held_ten_seconds_and_resolves_when_cool() -> None:
    out = run_items(Dispatcher([GpuOverheat()]), readings([70.0] + [92.0] * 12 + [60.0]))
    alerts = [e.message for e in out]
    assert [a.status for a in alerts] == [AlertStatus.FIRING, AlertStatus.RESOLVED]
    assert alerts[0].started_at == T0 + 1 and alerts[0].severity.value == "critical" and alerts[0].rule == "gpu_overheat"
    assert out[0].subject == "sw.alerts.critical.lab.gpu-1.gpu_overheat"


def test_a_short_spike_pages_nothing() -> None:
    assert run_items(Dispatcher([GpuOverheat()]), readings([92.0] * 5 + [60.0])) == []


async def _publish(js: object, batches: list[MetricBatch]) -> None:
    for b in batches:
        await js.publish(subjects.metrics(b.cluster, b.node), encode(b), headers={"Nats-Msg-Id": f"{b.node}:{b.ts}"})  # type: ignore[attr-defined]


async def _wait(cond: object, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.05)


@pytest.mark.timeout(60)
async def test_an_episode_that_fired_before_a_restart_resolves_after_it_with_the_same_id(nats_url: str) -> None:
    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    await ensure_streams(js)
    seen: list[Alert] = []

    async def on_alert(m: object) -> None:
        seen.append(decode(m.data, Alert))  # type: ignore[attr-defined]

    await nc.subscribe("sw.alerts.>", cb=on_alert)
    temps = [70.0] + [92.0] * 12 + [60.0] * 3
    batches = readings(temps)

    first = GpuOverheat()
    rt = Runtime(nc, [first], name="gpu-proc", checkpoint_interval_s=0.1)
    await rt.start()
    await _publish(js, batches[:13])
    await _wait(lambda: len(seen) == 1)
    await rt.stop()

    second = GpuOverheat()  # a new process: state comes only from the checkpoint
    rt = Runtime(nc, [second], name="gpu-proc", checkpoint_interval_s=0.1)
    await rt.start()
    assert second.tracker.is_firing("lab", "gpu-1", "gpu.temperature_c{gpu=0}")
    assert second.hottest_c == {"lab/gpu-1": 92.0}
    await _publish(js, batches[13:])
    await _wait(lambda: len(seen) == 2)
    await asyncio.sleep(0.3)
    await rt.stop()
    await nc.close()
    assert [a.status for a in seen] == [AlertStatus.FIRING, AlertStatus.RESOLVED]
    assert seen[0].id == seen[1].id
