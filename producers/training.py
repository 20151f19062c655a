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

The loop closes with :class:`TrustGate`: it follows ``sw.trust.<cluster>.*``
and gives the aggregator, each round, the nodes to leave out and the weights
of trust-weighted FedAvg.
"""
from __future__ import annotations

import functools
import math
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from schemas import DecodeError, Event, TrustScore, decode, encode, subjects

TRAINING_UPDATE = "training.update"
DEFAULT_SKETCH_DIM = 64  # numbers per sketch
DEFAULT_SKETCH_SEED = 0x5EED_5A3C  # shared by the whole fleet
_CHUNK = 1 << 20  # coordinates hashed per step (bounded memory for any model size)
_CACHED_COORDS = 1 << 16  # models up to this size keep their hash plan (16 bytes a coordinate, 8 plans)
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
        if stop - start <= _CACHED_COORDS:
            bucket, sign = _hash_plan(start, stop, dim, int(key))
        else:
            bucket, sign = _hash_chunk(start, stop, dim, key)
        out += np.bincount(bucket, weights=sign * x[start:stop], minlength=dim)
    return out


def _hash_chunk(start: int, stop: int, dim: int, key: np.uint64) -> tuple[np.ndarray, np.ndarray]:
    """Bucket and sign of coordinates ``start..stop``."""
    h = _splitmix64(np.arange(start, stop, dtype=np.uint64) ^ key)
    return (h % np.uint64(dim)).astype(np.intp), np.where((h >> np.uint64(63)) == 0, 1.0, -1.0)


@functools.lru_cache(maxsize=8)
def _hash_plan(start: int, stop: int, dim: int, key: int) -> tuple[np.ndarray, np.ndarray]:
    """``_hash_chunk`` remembered for small models (an aggregator sketches the same shape every round)."""
    bucket, sign = _hash_chunk(start, stop, dim, np.uint64(key))
    bucket.flags.writeable = False
    sign.flags.writeable = False
    return bucket, sign


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


class TrustGate:
    """Aggregator-side view of swarmwatch trust for one cluster: who to leave out, how much to weigh.

    Feed it TrustScores (``observe``), or let it follow ``sw.trust.<cluster>.*``
    on a NATS connection (``await gate.follow(nc)``). For each node it keeps the
    newest score (by round). A node is **excluded** while its byzantine alert is
    active (the score's evidence says ``flagged``) or its trust is below
    ``min_trust``; every other node weighs its trust (in [0, 1]; 1 for a node
    never scored). Trust-weighted FedAvg::

        w = gate.weights(updates)                      # node -> weight, 0 = excluded
        total = sum(samples[n] * w[n] for n in updates)
        step = sum(samples[n] * w[n] * updates[n] for n in updates) / total
    """

    def __init__(self, cluster: str, *, min_trust: float = 0.5) -> None:
        subjects.check_token(cluster, "cluster")
        if not 0.0 <= min_trust <= 1.0:
            raise ValueError(f"min_trust must be in [0, 1], got {min_trust!r}")
        self.cluster = cluster
        self.min_trust = min_trust
        self._latest: dict[str, tuple[int, float, bool]] = {}  # node -> (round, trust, flagged)
        self._sub: Any = None
        self.received = 0
        self.rejected = 0

    def observe(self, score: TrustScore) -> bool:
        """Take one TrustScore of this cluster; an older round than the one held is ignored. True if kept."""
        if score.cluster != self.cluster:
            return False
        held = self._latest.get(score.node)
        if held is not None and score.round < held[0]:
            return False
        flagged = bool(score.evidence.get("flagged", False)) if isinstance(score.evidence, dict) else False
        trust = min(1.0, max(0.0, float(score.trust)))
        self._latest[score.node] = (int(score.round), trust, flagged)
        self.received += 1
        return True

    def trust(self, node: str) -> float:
        """Newest trust of ``node`` (1.0 if it was never scored)."""
        held = self._latest.get(node)
        return 1.0 if held is None else held[1]

    def round_of(self, node: str) -> int | None:
        """The training round of the newest score held for ``node``."""
        held = self._latest.get(node)
        return None if held is None else held[0]

    def is_excluded(self, node: str) -> bool:
        held = self._latest.get(node)
        return held is not None and (held[2] or held[1] < self.min_trust)

    def excluded(self, nodes: Iterable[str] | None = None) -> set[str]:
        """Nodes to leave out of the aggregate (of ``nodes``, or of all scored nodes)."""
        pool = self._latest.keys() if nodes is None else nodes
        return {n for n in pool if self.is_excluded(n)}

    def weights(self, nodes: Iterable[str]) -> dict[str, float]:
        """Per-node aggregation weight: 0 for excluded nodes, else the node's trust."""
        return {n: 0.0 if self.is_excluded(n) else self.trust(n) for n in nodes}

    async def follow(self, nc: Any) -> Any:
        """Subscribe (core NATS) to ``sw.trust.<cluster>.*`` and observe every TrustScore that arrives."""

        async def on_msg(msg: Any) -> None:
            try:
                self.observe(decode(msg.data, TrustScore))
            except (DecodeError, ValueError):
                self.rejected += 1

        self._sub = await nc.subscribe(subjects.trust(self.cluster, "*"), cb=on_msg)
        return self._sub

    async def stop(self) -> None:
        """Stop following (keeps what was observed)."""
        if self._sub is not None:
            await self._sub.unsubscribe()
            self._sub = None
