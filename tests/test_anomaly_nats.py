"""AnomalyOperator under the runtime over a real nats-server: one sick node alerts, healthy ones do not."""
from __future__ import annotations

import asyncio
import time

import nats
import pytest

from processors.anomaly import AnomalyOperator
from processors.runtime import Runtime
from schemas import Alert, AlertKind, AlertStatus, MetricBatch, Sample, decode, encode, subjects
from swarmwatch.streams import ensure_streams

POINTS = 460
SPIKE_AT = 350
STEP_S = 15.0  # 460 points span 115 minutes: past the detector's one-hour warm-up

from tests.support import ends_within, wait_for


def latency(node: str, i: int) -> float:
    """Healthy latency: a bounded, node-specific jitter around 40 ms."""
    return 40.0 + ((i * 7 + len(node) * 3) % 13) / 2.0 - 3.0




@pytest.mark.timeout(90)
async def test_injected_latency_anomaly_alerts_on_that_node_only(nc: nats.NATS) -> None:
    js = nc.jetstream()
    await ensure_streams(js)
    seen: list[tuple[str, Alert]] = []

    async def on_alert(m: object) -> None:
        seen.append((m.subject, decode(m.data, Alert)))  # type: ignore[attr-defined]

    await nc.subscribe("sw.alerts.>", cb=on_alert)
    op = AnomalyOperator(late_after_s=1e9)  # the history is published in one burst, not live
    rt = Runtime(nc, [op], name="anomaly-it", checkpoint_interval_s=0.2)
    await rt.start()
    t0 = time.time() - 2 * STEP_S * POINTS
    nodes = ("n1", "n2", "n3")
    acks = []
    for i in range(POINTS):
        for node in nodes:
            v = latency(node, i)
            if node == "n2" and SPIKE_AT <= i < SPIKE_AT + 5:
                v = 400.0  # the injected anomaly
            b = MetricBatch("c1", node, t0 + i * STEP_S, [Sample("rpc.latency_ms", v), Sample("peer.count", 12.0)], seq=i)
            acks.append(await js.publish_async(subjects.metrics("c1", node), encode(b)))  # type: ignore[attr-defined]
    await ends_within(asyncio.gather(*acks), 30, "JetStream's acks of the published inputs")
    await wait_for(lambda: op.stats.inputs >= POINTS * len(nodes))
    await wait_for(lambda: any(a.status is AlertStatus.RESOLVED for _, a in seen))
    await rt.stop()

    assert {a.node for _, a in seen} == {"n2"}
    firing = [(s, a) for s, a in seen if a.status is AlertStatus.FIRING]
    assert len(firing) == 1
    subject, alert = firing[0]
    assert subject == "sw.alerts.warning.c1.n2.anomaly"
    assert (alert.kind, alert.rule, alert.metric, alert.value) == (AlertKind.ANOMALY, "anomaly", "rpc.latency_ms", 400.0)
    assert alert.started_at == pytest.approx(t0 + SPIKE_AT * STEP_S)
    assert alert.details["score"] >= alert.threshold and alert.details["baseline"]["high"] < 50
    assert alert.details["window"]["values"][-1] == 400.0
    resolved = [a for _, a in seen if a.status is AlertStatus.RESOLVED]
    assert [a.id for a in resolved] == [alert.id]
