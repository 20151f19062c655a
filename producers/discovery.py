"""Peer discovery: producers announce themselves with join/leave/heartbeat events.

Each producer publishes ``schemas.Event`` messages on

    sw.events.<cluster>.<node>.peer.join     once at start
    sw.events.<cluster>.<node>.heartbeat     every ``heartbeat_s`` seconds
    sw.events.<cluster>.<node>.peer.leave    once on a clean shutdown

and listens to the same subjects of its cluster to build a :class:`PeerTable`,
so peers find each other without a static list. A static list is accepted as
well; static peers are never forgotten for silence. The events land in the
TELEMETRY stream too, where the liveness and network operators read them.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

from schemas import Event, codec, subjects
from swarmwatch.cancellation import stop_task

log = logging.getLogger(__name__)

JOIN_KIND = "peer.join"
LEAVE_KIND = "peer.leave"
HEARTBEAT_KIND = "heartbeat"
PublishFn = Callable[[str, bytes, str], Awaitable[object]]
"""``publish(subject, payload, msg_id)``, e.g. the sidecar's ``Publisher.publish``."""

DEFAULT_HEARTBEAT_S = 5.0  # seconds between heartbeats
DEFAULT_FORGET_AFTER_S = 120.0  # a discovered peer silent this long is dropped from the table
DEFAULT_MAX_PEERS = 256  # peers one producer tracks; more are refused and counted
STOP_GRACE_S = 5.0  # how long stop() waits for the heartbeat task to end
_JOIN_ECHO_MIN_S = 0.5  # at most one extra heartbeat per this many seconds in answer to joins


@dataclass(slots=True)
class PeerInfo:
    """What a producer knows about one peer. Times are UNIX seconds."""

    node: str
    first_seen: float
    last_seen: float
    static: bool = False
    left: bool = False
    info: dict[str, Any] | None = None


class PeerTable:
    """The peers of one node, from discovery events and an optional static list.

    Bounded: at most ``max_peers`` entries; extra peers are refused and counted
    in ``refused``. Discovered peers silent for ``forget_after_s`` are dropped;
    a ``peer.leave`` removes a discovered peer at once and marks a static one as left
    until it is heard from again.
    """

    def __init__(
        self,
        self_node: str,
        static_peers: Iterable[str] = (),
        *,
        forget_after_s: float = DEFAULT_FORGET_AFTER_S,
        max_peers: int = DEFAULT_MAX_PEERS,
        now: float | None = None,
    ) -> None:
        subjects.check_token(self_node, "node")
        if forget_after_s <= 0:
            raise ValueError(f"forget_after_s must be > 0 seconds, got {forget_after_s!r}")
        if max_peers < 1:
            raise ValueError(f"max_peers must be >= 1, got {max_peers!r}")
        self.self_node = self_node
        self.forget_after_s = float(forget_after_s)
        self.max_peers = int(max_peers)
        self.refused = 0
        self.forgotten = 0
        self._peers: dict[str, PeerInfo] = {}
        t = time.time() if now is None else now
        for p in static_peers:
            subjects.check_token(p, "static peer")
            if p != self_node:
                self._add(p, t, static=True)

    def _add(self, node: str, now: float, *, static: bool = False) -> PeerInfo | None:
        if len(self._peers) >= self.max_peers:
            self.refused += 1
            return None
        info = self._peers[node] = PeerInfo(node, now, now, static=static)
        return info

    def observe(self, event: Event, now: float | None = None) -> bool:
        """Apply one discovery event; return True when the peer is new (or back after leaving)."""
        if event.node == self.self_node:
            return False
        t = time.time() if now is None else now
        peer = self._peers.get(event.node)
        if event.kind == LEAVE_KIND:
            if peer is not None:
                if peer.static:
                    peer.left = True
                    peer.last_seen = t
                else:
                    del self._peers[event.node]
            return False
        if event.kind not in (JOIN_KIND, HEARTBEAT_KIND):
            return False
        is_new = peer is None or peer.left
        if peer is None:
            peer = self._add(event.node, t)
            if peer is None:
                return False
        peer.last_seen = t
        peer.left = False
        if event.payload:
            peer.info = dict(event.payload)
        return is_new

    def active(self, now: float | None = None) -> list[str]:
        """Peers to probe now, sorted; forgets discovered peers silent over ``forget_after_s``."""
        t = time.time() if now is None else now
        for name in [n for n, p in self._peers.items() if not p.static and t - p.last_seen > self.forget_after_s]:
            del self._peers[name]
            self.forgotten += 1
        return sorted(n for n, p in self._peers.items() if not p.left)

    def get(self, node: str) -> PeerInfo | None:
        return self._peers.get(node)

    def __contains__(self, node: object) -> bool:
        return node in self._peers

    def __len__(self) -> int:
        return len(self._peers)


class Discovery:
    """Announces this node and keeps ``table`` up to date from its cluster's announcements.

    ``start()`` subscribes and publishes ``peer.join``; a background task sends
    ``heartbeat`` every ``heartbeat_s``; ``stop(clean=True)`` publishes
    ``peer.leave``. Events go through ``publish_fn`` when given (the sidecar's
    spooling publisher), else through JetStream with ``js`` (acknowledged), else
    as core NATS messages (the TELEMETRY stream still stores them when it exists).
    """

    def __init__(
        self,
        nc: Any,
        cluster: str,
        node: str,
        table: PeerTable,
        *,
        js: Any | None = None,
        heartbeat_s: float = DEFAULT_HEARTBEAT_S,
        info: dict[str, Any] | None = None,
        publish_fn: PublishFn | None = None,
    ) -> None:
        subjects.check_token(cluster, "cluster")
        subjects.check_token(node, "node")
        if heartbeat_s <= 0:
            raise ValueError(f"heartbeat_s must be > 0 seconds, got {heartbeat_s!r}")
        self.nc = nc
        self.js = js
        self.publish_fn = publish_fn
        self.cluster = cluster
        self.node = node
        self.table = table
        self.heartbeat_s = float(heartbeat_s)
        self.info = dict(info or {})
        self.published = 0
        self.publish_errors = 0
        self.invalid = 0
        self._subs: list[Any] = []
        self._task: asyncio.Task[None] | None = None
        self._last_echo = 0.0

    async def start(self) -> None:
        """Subscribe to the cluster's announcements, then announce this node."""
        for kind in ("peer.>", HEARTBEAT_KIND):
            self._subs.append(await self.nc.subscribe(f"{subjects.PREFIX}.events.{self.cluster}.*.{kind}", cb=self._on_msg))
        await self.announce(JOIN_KIND)
        self._task = asyncio.create_task(self._heartbeats(), name=f"heartbeat-{self.node}")

    async def stop(self, clean: bool = True) -> None:
        """Stop heartbeats and listening; on a clean stop announce ``peer.leave`` first."""
        if self._task is not None:  # repeated cancels: the publish's wait_for can swallow one (swarmwatch.cancellation)
            await stop_task(self._task, STOP_GRACE_S, self._task.get_name())
            self._task = None
        if clean:
            await self.announce(LEAVE_KIND, {"reason": "shutdown"})
            with contextlib.suppress(Exception):
                await self.nc.flush(timeout=2)
        for sub in self._subs:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
        self._subs.clear()

    async def announce(self, kind: str, extra: dict[str, Any] | None = None) -> None:
        """Publish one discovery event for this node; failures are logged and counted."""
        payload = dict(self.info)
        payload["heartbeat_s"] = self.heartbeat_s
        if extra:
            payload.update(extra)
        ev = Event(cluster=self.cluster, node=self.node, ts=time.time(), kind=kind, payload=payload)
        subject = subjects.events(self.cluster, self.node, kind)
        data = codec.encode(ev)
        msg_id = f"{kind}:{self.cluster}:{self.node}:{ev.ts:.6f}"
        try:
            if self.publish_fn is not None:
                await self.publish_fn(subject, data, msg_id)
            elif self.js is not None:
                await self.js.publish(subject, data, headers={"Nats-Msg-Id": msg_id}, timeout=2)
            else:
                await self.nc.publish(subject, data)
            self.published += 1
        except Exception as exc:  # broker away: the next heartbeat tries again
            self.publish_errors += 1
            log.warning("discovery: could not publish %s for %s/%s: %s", kind, self.cluster, self.node, exc)

    async def _heartbeats(self) -> None:
        while True:
            await asyncio.sleep(self.heartbeat_s)
            await self.announce(HEARTBEAT_KIND)

    async def _on_msg(self, msg: Any) -> None:
        try:
            ev = codec.decode(msg.data, Event)
        except codec.DecodeError:
            self.invalid += 1
            return
        if ev.cluster != self.cluster or ev.node == self.node:
            return
        is_new = self.table.observe(ev)
        if is_new and ev.kind == JOIN_KIND:
            # Answer a newcomer at once so it need not wait a heartbeat period to find us.
            now = time.monotonic()
            if now - self._last_echo >= _JOIN_ECHO_MIN_S:
                self._last_echo = now
                await self.announce(HEARTBEAT_KIND)
