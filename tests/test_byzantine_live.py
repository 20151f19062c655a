"""Live: simulated nodes' training.update reports over NATS JetStream, judged by the runtime."""
from __future__ import annotations

import asyncio
import math

import numpy as np

from schemas import Alert, AlertKind, AlertStatus, TrustScore, decode
from swarmwatch.streams import ensure_streams

from processors.byzantine import ByzantineOperator
from processors.runtime import Runtime
from producers.training import publish_round

NODES = [f"node-{i:02d}" for i in range(16)]
FLIPPER = "node-00"
ATTACK_FROM = 6
ROUNDS = 16
DIM = 4000  # parameters of the toy model


async def test_sign_flipping_node_gets_a_byzantine_alert_and_falling_trust_honest_nodes_neither(nc) -> None:  # type: ignore[no-untyped-def]
    js = nc.jetstream()
    await ensure_streams(js)
    alerts: list[Alert] = []
    trust: dict[str, list[tuple[int, float]]] = {n: [] for n in NODES}
    last_round_judged = asyncio.Event()

    async def on_alert(msg) -> None:  # type: ignore[no-untyped-def]
        alerts.append(decode(msg.data, Alert))

    async def on_trust(msg) -> None:  # type: ignore[no-untyped-def]
        t = decode(msg.data, TrustScore)
        trust[t.node].append((t.round, t.trust))
        if t.round == ROUNDS - 1 and all(trust[n] and trust[n][-1][0] == ROUNDS - 1 for n in NODES):
            last_round_judged.set()

    await nc.subscribe("sw.alerts.>", cb=on_alert)
    await nc.subscribe("sw.trust.>", cb=on_trust)
    op = ByzantineOperator(round_timeout_s=1.0)
    runtime = Runtime(nc, [op], name="byzantine-live", checkpoint_interval_s=0.5)
    await runtime.start()
    try:
        rng = np.random.default_rng(42)
        bias = {n: rng.normal(0.0, 0.3, DIM) for n in NODES}
        for r in range(ROUNDS):
            g = rng.normal(0.0, 0.6, DIM) + 0.4  # the true gradient of this round
            lr = 1.0 / math.sqrt(1.0 + r / 10.0)
            updates = {n: lr * (g + bias[n] + rng.normal(0.0, 1.0, DIM)) for n in NODES}
            if r >= ATTACK_FROM:
                updates[FLIPPER] = -updates[FLIPPER]
            losses = {n: 2.0 * math.exp(-r / 30.0) for n in NODES}
            await publish_round(js, "swarm", r, updates, losses)  # as the aggregator would
        await asyncio.wait_for(last_round_judged.wait(), 60)
        await asyncio.sleep(0.3)  # let the last alerts arrive
    finally:
        await runtime.stop()

    fired = [a for a in alerts if a.status is AlertStatus.FIRING]
    assert [a.node for a in fired] == [FLIPPER]
    alert = fired[0]
    assert alert.kind is AlertKind.BYZANTINE and alert.cluster == "swarm"
    assert alert.details["detected_round"] >= ATTACK_FROM
    assert alert.details["statistic"]
    flipper = dict(trust[FLIPPER])
    assert flipper[ATTACK_FROM - 1] > 0.8
    assert flipper[ROUNDS - 1] < 0.5
    for n in NODES[1:]:
        assert min(t for _, t in trust[n]) > 0.7, (n, trust[n])
