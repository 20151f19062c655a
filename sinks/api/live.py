"""The live feed: NATS core subscriptions into FleetState, fanned out to WebSocket clients.

Each WebSocket client has its own bounded queue. Publishing never waits: when a
client's queue is full the message is dropped for that client, counted, and the
client is told (a ``{"type": "dropped", "count": n}`` message) once it catches up.

At start the feed backfills FleetState from the DERIVED stream (aggregates,
trust and health of the last ``backfill_s``, alerts of the last
``alert_backfill_s``). Live messages that arrive meanwhile are fanned out at once
and applied to the state after the backfill, in arrival order.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import orjson
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.errors import TimeoutError as NatsTimeoutError

from schemas import Alert, DecodeError, HealthScore, MetricBatch, TrustScore, WindowAggregate, decode
from schemas.codec import to_builtins
from schemas.subjects import SubjectError, parse
from sinks.api.backfill import DERIVED_STREAM, replay
from schemas import series_key
from sinks.api.state import FleetState
from swarmwatch.cancellation import stop_task

log = logging.getLogger(__name__)

DEFAULT_CLIENT_QUEUE = 1_000  # messages buffered per WebSocket client
DEFAULT_MAX_CLIENTS = 200
DEFAULT_BACKFILL_S = 3_600.0
DEFAULT_ALERT_BACKFILL_S = 86_400.0
STOP_GRACE_S = 5.0  # how long stop() waits for the backfill to end
DEFAULT_MAX_BUFFERED = 200_000  # live messages held while the backfill runs
LIVE_SUBJECTS = ("sw.metrics.>", "sw.agg.>", "sw.alerts.>", "sw.trust.>", "sw.health.>", "sw.self.>", "sw.dlq.>")
STREAM_TYPES = frozenset({"agg", "alert", "health", "trust"})
SUBSCRIBE_CONFIRM_S = 10.0  # how long start waits for nats-server to confirm the subscriptions (a PING's PONG)


class TooManyClients(RuntimeError):
    """The hub already serves ``max_clients`` WebSocket clients."""


@dataclass(eq=False, slots=True)
class WsClient:
    """One WebSocket subscriber: its queue, filter and drop count."""

    queue: asyncio.Queue[bytes]
    types: frozenset[str] = STREAM_TYPES
    cluster: str | None = None
    node: str | None = None
    dropped: int = 0
    sent: int = 0

    def wants(self, type_: str, cluster: str | None, node: str | None) -> bool:
        if type_ not in self.types:
            return False
        if type_ in ("agg", "trust"):
            if self.cluster is not None and cluster != self.cluster:
                return False
            if self.node is not None and node != self.node:
                return False
        elif type_ == "health" and self.cluster is not None and cluster != self.cluster:
            return False
        return True


class Hub:
    """Fan-out of encoded messages to WebSocket clients; never blocks the publisher."""

    def __init__(self, state: FleetState, queue_size: int = DEFAULT_CLIENT_QUEUE, max_clients: int = DEFAULT_MAX_CLIENTS) -> None:
        if queue_size < 1:
            raise ValueError(f"queue_size must be >= 1, got {queue_size!r}")
        self.state = state
        self.queue_size = queue_size
        self.max_clients = max_clients
        self.clients: set[WsClient] = set()

    def register(self) -> WsClient:
        if len(self.clients) >= self.max_clients:
            raise TooManyClients(f"already {len(self.clients)} WebSocket clients (max_clients={self.max_clients})")
        c = WsClient(asyncio.Queue(maxsize=self.queue_size))
        self.clients.add(c)
        self.state.counters.ws_clients = len(self.clients)
        return c

    def unregister(self, client: WsClient) -> None:
        self.clients.discard(client)
        self.state.counters.ws_clients = len(self.clients)

    def publish(self, type_: str, data: Any, cluster: str | None = None, node: str | None = None) -> int:
        """Queue ``{"type": type_, "data": data}`` for every interested client; returns how many got it."""
        targets = [c for c in self.clients if c.wants(type_, cluster, node)]
        if not targets:
            return 0
        payload = orjson.dumps({"type": type_, "data": data})
        n = 0
        for c in targets:
            try:
                c.queue.put_nowait(payload)
                n += 1
            except asyncio.QueueFull:
                c.dropped += 1
                self.state.counters.ws_dropped += 1
        return n


def agg_message(agg: WindowAggregate) -> dict[str, Any]:
    """The compact WebSocket form of an aggregate: series -> stats."""
    return {
        "cluster": agg.cluster,
        "node": agg.node,
        "window_s": agg.window_s,
        "start": agg.start,
        "end": agg.end,
        "series": {
            series_key(s.metric, s.labels): {"mean": s.mean, "min": s.min, "max": s.max, "p95": s.p95, "last": s.last, "count": s.count}
            for s in agg.series
        },
    }


def health_message(score: HealthScore) -> dict[str, Any]:
    d = to_builtins(score)
    d.pop("nodes", None)  # per-node detail is large; /api/nodes carries it
    return d


class LiveFeed:
    """Subscribes to swarmwatch subjects on core NATS, updates ``state`` and feeds ``hub``."""

    def __init__(
        self,
        nc: NATS,
        state: FleetState,
        hub: Hub | None = None,
        *,
        backfill_s: float = DEFAULT_BACKFILL_S,
        alert_backfill_s: float = DEFAULT_ALERT_BACKFILL_S,
        stream: str = DERIVED_STREAM,
        subjects: Iterable[str] = LIVE_SUBJECTS,
        max_buffered: int = DEFAULT_MAX_BUFFERED,
    ) -> None:
        if backfill_s < 0 or alert_backfill_s < 0:
            raise ValueError(f"backfill_s ({backfill_s!r}) and alert_backfill_s ({alert_backfill_s!r}) must be >= 0")
        self.nc = nc
        self.state = state
        self.hub = hub
        self.backfill_s = backfill_s
        self.alert_backfill_s = alert_backfill_s
        self.stream = stream
        self.subjects = tuple(subjects)
        self._subs: list[Any] = []
        self._buffer: deque[tuple[str, bytes]] | None = None
        self._max_buffered = max_buffered
        self.buffer_dropped = 0
        self._backfill_task: asyncio.Task[None] | None = None
        self.backfill_done = asyncio.Event()

    async def start(self) -> None:
        """Subscribe (confirmed by the server), then backfill in the background (``backfill_done`` is set when it ends)."""
        if self.backfill_s > 0 or self.alert_backfill_s > 0:
            self._buffer = deque()
            self.state.backfilling = True
        for subj in self.subjects:
            self._subs.append(await self.nc.subscribe(subj, cb=self._on_msg, pending_msgs_limit=200_000, pending_bytes_limit=512 * 1024 * 1024))
        try:  # the server has the subscriptions once it answers: what is published after start is seen
            await self.nc.flush(timeout=SUBSCRIBE_CONFIRM_S)
        except NatsTimeoutError:
            log.warning("nats-server did not confirm the live subscriptions within %.0fs; messages may be missed until it does", SUBSCRIBE_CONFIRM_S)
        if self._buffer is None:
            self.backfill_done.set()
        else:
            self._backfill_task = asyncio.create_task(self._backfill(), name="api-backfill")

    async def stop(self) -> None:
        if self._backfill_task is not None:  # repeated cancels: the replay's wait_for can swallow one
            await stop_task(self._backfill_task, STOP_GRACE_S, "the dashboard backfill")
            self._backfill_task = None
        for s in self._subs:
            try:
                await s.unsubscribe()
            except Exception:  # connection already closed
                pass
        self._subs.clear()

    async def _backfill(self) -> None:
        now = time.time()
        n = 0
        try:
            if self.alert_backfill_s > 0:
                n += await replay(self.nc, ["sw.alerts.>"], now - self.alert_backfill_s, self._apply_raw, stream=self.stream)
            if self.backfill_s > 0:
                n += await replay(
                    self.nc, ["sw.agg.>", "sw.trust.>", "sw.health.>"], now - self.backfill_s, self._apply_raw, stream=self.stream
                )
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("backfill from %s failed after %d messages: %s", self.stream, n, exc)
        finally:
            self.state.backfilled = n
            buf, self._buffer = self._buffer, None
            for subject, data in buf or ():
                self._apply_raw(subject, data)
            self.state.backfilling = False
            self.backfill_done.set()
            log.info("backfilled %d messages from %s", n, self.stream)

    async def _on_msg(self, msg: Msg) -> None:
        self.handle(msg.subject, msg.data)

    def handle(self, subject: str, data: bytes) -> None:
        """Apply one live message (or hold it during the backfill) and fan it out."""
        obj = self._decode(subject, data)
        if obj is None:
            return
        if self._buffer is not None:
            if len(self._buffer) >= self._max_buffered:
                self.buffer_dropped += 1
            else:
                self._buffer.append((subject, data))
        else:
            self._apply(subject, obj)
        if self.hub is not None:
            self._fan_out(obj)

    def _apply_raw(self, subject: str, data: bytes) -> None:
        obj = self._decode(subject, data)
        if obj is not None:
            self._apply(subject, obj)

    def _decode(self, subject: str, data: bytes) -> Any:
        try:
            p = parse(subject)
        except SubjectError:
            self.state.counters.invalid += 1
            return None
        try:
            if p.family == "metrics":
                return decode(data, MetricBatch)
            if p.family == "agg":
                return decode(data, WindowAggregate)
            if p.family == "alerts":
                return decode(data, Alert)
            if p.family == "trust":
                return decode(data, TrustScore)
            if p.family == "health":
                return decode(data, HealthScore)
            if p.family == "self":
                return ("self", p.rest, decode(data, MetricBatch))
            if p.family == "dlq":
                return ("dlq", p.rest, None)
        except DecodeError:
            self.state.counters.invalid += 1
            return None
        return None

    def _apply(self, subject: str, obj: Any) -> None:
        st = self.state
        if isinstance(obj, MetricBatch):
            st.apply_metrics(obj)
        elif isinstance(obj, WindowAggregate):
            st.apply_agg(obj)
        elif isinstance(obj, Alert):
            st.apply_alert(obj)
        elif isinstance(obj, TrustScore):
            st.apply_trust(obj)
        elif isinstance(obj, HealthScore):
            st.apply_health(obj)
        elif isinstance(obj, tuple):
            kind, name, batch = obj
            if kind == "self":
                st.apply_self(name or "unknown", batch)
            else:
                st.apply_dlq(name or "unknown")

    def _fan_out(self, obj: Any) -> None:
        hub = self.hub
        assert hub is not None
        if not hub.clients:
            return
        if isinstance(obj, Alert):
            hub.publish("alert", to_builtins(obj), obj.cluster, obj.node)
        elif isinstance(obj, WindowAggregate):
            hub.publish("agg", agg_message(obj), obj.cluster, obj.node)
        elif isinstance(obj, HealthScore):
            hub.publish("health", health_message(obj), obj.cluster)
        elif isinstance(obj, TrustScore):
            hub.publish("trust", to_builtins(obj), obj.cluster, obj.node)
