"""Training SDK: update sketches that preserve geometry, and training.update reports over NATS."""
from __future__ import annotations

import asyncio

import numpy as np
import pytest

from schemas import Event, SubjectError, decode, subjects
from swarmwatch.streams import ensure_streams

from producers.training import (
    DEFAULT_SKETCH_DIM,
    publish_round,
    publish_training_update,
    training_update_event,
    update_sketch,
)

T0 = 1_763_800_000.0


def cos(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def test_sketch_is_deterministic_and_shared_by_everyone_with_the_same_seed() -> None:
    x = np.random.default_rng(0).normal(size=10_000)
    s1, s2 = update_sketch(x), update_sketch(list(x))
    assert s1.shape == (DEFAULT_SKETCH_DIM,)
    assert np.array_equal(s1, s2)
    assert not np.allclose(s1, update_sketch(x, seed=1))


def test_sketch_accepts_any_shape_as_its_flattened_vector() -> None:
    w = np.random.default_rng(1).normal(size=(30, 40, 5))
    assert np.array_equal(update_sketch(w), update_sketch(w.ravel()))


def test_sketch_is_linear_so_sketches_of_sums_are_sums_of_sketches() -> None:
    rng = np.random.default_rng(2)
    x, y = rng.normal(size=3_000_000), rng.normal(size=3_000_000)  # spans several hashing chunks
    assert np.allclose(update_sketch(2 * x - y), 2 * update_sketch(x) - update_sketch(y))


def test_a_coordinate_hashes_the_same_whatever_the_model_size() -> None:
    x = np.random.default_rng(3).normal(size=1000)
    assert np.allclose(update_sketch(x), update_sketch(np.concatenate([x, np.zeros(5000)])))


def test_sketch_preserves_norms_and_cosines_of_large_updates() -> None:
    rng = np.random.default_rng(4)
    x = rng.normal(size=200_000)
    y = 0.6 * x + 0.8 * rng.normal(size=200_000)
    z = rng.normal(size=200_000)
    sx, sy, sz = (update_sketch(v, dim=1024) for v in (x, y, z))
    assert cos(sx, sy) == pytest.approx(cos(x, y), abs=0.1)
    assert cos(sx, sz) == pytest.approx(0.0, abs=0.1)
    assert np.linalg.norm(sx) == pytest.approx(np.linalg.norm(x), rel=0.15)
    assert cos(update_sketch(x), update_sketch(-x)) == pytest.approx(-1.0)


@pytest.mark.parametrize(
    "update, dim, message",
    [([], 64, "empty"), ([1.0, float("nan")], 64, "NaN"), ([1.0], 0, "dim"), ([1.0], 2.5, "dim")],
)
def test_sketch_refuses_unusable_input_with_a_clear_message(update: list, dim: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        update_sketch(update, dim=dim)  # type: ignore[arg-type]


def test_update_event_carries_norm_loss_and_sketch_of_the_real_update() -> None:
    u = np.arange(100, dtype=float)
    ev = training_update_event("swarm", "node-1", 7, loss=0.5, update=u, samples=256, ts=T0)
    assert ev.kind == "training.update" and ev.node == "node-1" and ev.ts == T0
    assert ev.payload["round"] == 7 and ev.payload["loss"] == 0.5 and ev.payload["samples"] == 256
    assert ev.payload["update_norm"] == pytest.approx(float(np.linalg.norm(u)))
    assert ev.payload["sketch"] == pytest.approx(update_sketch(u).tolist())


def test_update_event_accepts_a_precomputed_sketch_and_refuses_bad_input() -> None:
    ev = training_update_event("swarm", "n", 0, loss=None, sketch=[1.0, 2.0], update_norm=3.0, ts=T0)
    assert ev.payload == {"round": 0, "update_norm": 3.0, "sketch": [1.0, 2.0]}
    with pytest.raises(ValueError, match="give the update"):
        training_update_event("swarm", "n", 0, loss=1.0, sketch=[1.0])
    with pytest.raises(ValueError, match="round"):
        training_update_event("swarm", "n", -1, loss=1.0, update=[1.0])
    with pytest.raises(SubjectError, match="node"):
        training_update_event("swarm", "bad.node", 0, loss=1.0, update=[1.0])


async def test_update_is_published_on_the_node_training_update_subject(nc) -> None:  # type: ignore[no-untyped-def]
    sub = await nc.subscribe("sw.events.>")
    ev = training_update_event("swarm", "node-3", 2, loss=1.25, update=np.ones(10), ts=T0)
    await publish_training_update(nc, ev)
    msg = await asyncio.wait_for(sub.next_msg(timeout=5), 10)
    assert msg.subject == subjects.events("swarm", "node-3", "training.update")
    assert msg.headers and msg.headers["Nats-Msg-Id"] == "training.update:swarm:node-3:2"
    got = decode(msg.data, Event)
    assert got.payload["round"] == 2 and got.payload["loss"] == 1.25


async def test_jetstream_keeps_one_report_per_node_and_round_however_often_it_is_sent(nc) -> None:  # type: ignore[no-untyped-def]
    js = nc.jetstream()
    await ensure_streams(js)
    rng = np.random.default_rng(5)
    updates = {f"node-{i}": rng.normal(size=500) for i in range(4)}
    assert await publish_round(js, "swarm", 0, updates, {n: 1.0 for n in updates}) == 4
    await publish_round(js, "swarm", 0, updates)  # a retry of the same round
    await publish_round(js, "swarm", 1, updates)
    info = await asyncio.wait_for(js.stream_info("TELEMETRY"), 10)
    assert info.state.messages == 8
