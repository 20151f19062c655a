"""Training-fleet SDK: update sketches and ``training.update`` reports for Byzantine detection.

Who publishes: the **aggregator** (parameter server, federated-learning
coordinator, or whichever process receives every node's model update). It sees
each node's real update, so it measures the norm and sketch itself; a node
reporting on its own behalf could simply lie. For each node and round it
publishes one report on ``sw.events.<cluster>.<node>.training.update``::

    from producers.training import publish_round

    await publish_round(js, "swarm-1", round_no, updates={"node-7": u7, ...}, losses={"node-7": 0.93, ...})

Every aggregator of a fleet must use the same sketch ``dim`` and ``seed`` so
that sketches are comparable (the detector compares nodes within a cluster).
"""
from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from schemas import Event, encode, subjects

TRAINING_UPDATE = "training.update"
DEFAULT_SKETCH_DIM = 64  # numbers per sketch
DEFAULT_SKETCH_SEED = 0x5EED_5A3C  # shared by the whole fleet
_CHUNK = 1 << 20  # coordinates hashed per step (bounded memory for any model size)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def _splitmix64(x: np.ndarray) -> np.ndarray:
    """A strong 64-bit integer hash (SplitMix64 finaliser), elementwise."""
    with np.errstate(over="ignore"):
        z = x + _GOLDEN
        z = (z ^ (z >> np.uint64(30))) * _M1
        z = (z ^ (z >> np.uint64(27))) * _M2
        return z ^ (z >> np.uint64(31))


def _flat(update: Any) -> np.ndarray:
    x = np.asarray(update, dtype=np.float64).ravel()
    if x.size == 0:
        raise ValueError("update is empty; expected a numpy array or a sequence of numbers")
    if not np.all(np.isfinite(x)):
        raise ValueError("update contains NaN or infinite values")
    return x


def update_sketch(update: Any, dim: int = DEFAULT_SKETCH_DIM, seed: int = DEFAULT_SKETCH_SEED) -> np.ndarray:
    """Count-sketch of an update of any shape or size into ``dim`` numbers, in O(size) time.

    Coordinate ``j`` goes to bucket ``h(j) mod dim`` with sign ``s(j)``, both from
    a seeded hash of ``j`` alone, so every node and aggregator using the same
    ``seed`` and ``dim`` sketches the same way whatever the model size. Inner
    products, norms and cosines of sketches estimate those of the full updates
    (unbiased; relative error about ``1/sqrt(dim)``).
    """
    if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
        raise ValueError(f"sketch dim must be a positive integer, got {dim!r}")
    x = _flat(update)
    out = np.zeros(dim, dtype=np.float64)
    key = np.uint64(_splitmix64(np.array([seed & 0xFFFFFFFFFFFFFFFF], dtype=np.uint64))[0])
    for start in range(0, x.size, _CHUNK):
        stop = min(x.size, start + _CHUNK)
        h = _splitmix64(np.arange(start, stop, dtype=np.uint64) ^ key)
        bucket = (h % np.uint64(dim)).astype(np.intp)
        sign = np.where((h >> np.uint64(63)) == 0, 1.0, -1.0)
        out += np.bincount(bucket, weights=sign * x[start:stop], minlength=dim)
    return out


def training_update_event(
    cluster: str,
    node: str,
    round: int,
    *,
    loss: float | None,
    update: Any = None,
    sketch: Sequence[float] | np.ndarray | None = None,
    update_norm: float | None = None,
    samples: int | None = None,
    ts: float | None = None,
    sketch_dim: int = DEFAULT_SKETCH_DIM,
    seed: int = DEFAULT_SKETCH_SEED,
    extra: Mapping[str, Any] | None = None,
) -> Event:
    """A validated ``training.update`` Event for one node's update in one round.

    Give the real ``update`` (norm and sketch are computed from it), or both a
    precomputed ``sketch`` and ``update_norm``.
    """
    subjects.check_token(cluster, "cluster")
    subjects.check_token(node, "node")
    if isinstance(round, bool) or not isinstance(round, int) or round < 0:
        raise ValueError(f"round must be a non-negative integer, got {round!r}")
    if update is not None:
        x = _flat(update)
        norm = float(np.linalg.norm(x))
        sk = update_sketch(x, sketch_dim, seed)
    elif sketch is not None and update_norm is not None:
        sk = np.asarray(sketch, dtype=np.float64).ravel()
        norm = float(update_norm)
        if sk.size == 0 or not np.all(np.isfinite(sk)):
            raise ValueError("sketch must be a non-empty sequence of finite numbers")
    else:
        raise ValueError("give the update itself, or both sketch and update_norm")
    if not math.isfinite(norm) or norm < 0:
        raise ValueError(f"update_norm must be a finite number >= 0, got {norm!r}")
    payload: dict[str, Any] = dict(extra or {})
    payload.update(round=round, update_norm=norm, sketch=[float(v) for v in sk])
    if loss is not None:
        if not math.isfinite(loss):
            raise ValueError(f"loss must be finite, got {loss!r}")
        payload["loss"] = float(loss)
    if samples is not None:
        payload["samples"] = int(samples)
    return Event(cluster=cluster, node=node, ts=time.time() if ts is None else float(ts), kind=TRAINING_UPDATE, payload=payload)


def update_msg_id(cluster: str, node: str, round: int) -> str:
    """Deterministic Nats-Msg-Id: a re-sent report of the same node and round is dropped by JetStream."""
    return f"training.update:{cluster}:{node}:{round}"


async def publish_training_update(client: Any, event: Event) -> Any:
    """Publish a ``training.update`` Event on ``sw.events.<cluster>.<node>.training.update``.

    ``client`` is a connected nats-py client (core publish) or a JetStream
    context (waits for the stream's ack and returns it). The message carries a
    deterministic Nats-Msg-Id, so retries are de-duplicated by JetStream.
    """
    if event.kind != TRAINING_UPDATE:
        raise ValueError(f"event kind is {event.kind!r}; expected {TRAINING_UPDATE!r}")
    subject = subjects.events(event.cluster, event.node, event.kind)
    headers = {"Nats-Msg-Id": update_msg_id(event.cluster, event.node, int(event.payload["round"]))}
    return await client.publish(subject, encode(event), headers=headers)


async def publish_round(
    client: Any,
    cluster: str,
    round: int,
    updates: Mapping[str, Any],
    losses: Mapping[str, float] | None = None,
    *,
    ts: float | None = None,
    sketch_dim: int = DEFAULT_SKETCH_DIM,
    seed: int = DEFAULT_SKETCH_SEED,
) -> int:
    """Aggregator helper: sketch every node's update of one round and publish the reports. Returns how many."""
    now = time.time() if ts is None else ts
    n = 0
    for node, update in updates.items():
        ev = training_update_event(
            cluster, node, round, loss=(losses or {}).get(node), update=update, ts=now, sketch_dim=sketch_dim, seed=seed
        )
        await publish_training_update(client, ev)
        n += 1
    return n
