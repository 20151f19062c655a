"""Pipelined JetStream publisher that rides out broker outages.

:meth:`Publisher.publish` never waits for the broker: it hands the message to
``js.publish_async`` and returns, or puts it in the :class:`~producers.spool.Spool`
when there is no connection. The publish acknowledgement (JetStream stored it)
arrives on a future; an error, a missing ack after ``ack_timeout_s`` or a
disconnect counts the message as failed and spools it. Spooled messages are
replayed after (re)connecting, with their original ``Nats-Msg-Id`` so JetStream
drops any that were in fact stored. The client reconnects forever with
exponential backoff; nothing here raises because the broker is away.
"""
from __future__ import annotations

import asyncio
import logging
import random
import time
from typing import Any

from nats.aio.client import Client as NATS

from producers.options import inbox_prefix
from producers.spool import Spool, SpoolItem
from swarmwatch.cancellation import stop_task

DEFAULT_ACK_TIMEOUT_S = 5.0
DEFAULT_MAX_INFLIGHT = 1024  # unacknowledged publishes at once; more go to the spool
DEFAULT_RECONNECT_WAIT_S = 0.5  # first reconnect delay; doubles per failed attempt
DEFAULT_MAX_RECONNECT_WAIT_S = 10.0
DEFAULT_PING_INTERVAL_S = 20  # detects a half-open connection within ~1 minute
FLUSH_TIMEOUT_S = 10.0  # longest wait of a publish for a full outbound buffer to be written out
HOUSEKEEPING_S = 0.5  # how often ack timeouts are checked and a replay is considered
REPLAY_CHUNK = 256
REPLAY_BACKOFF_S = 2.0  # pause replay this long after a failure, so a missing stream is not hammered
LOG_EVERY_S = 30.0  # at most one log line per kind of broker error in this period

log = logging.getLogger("swarmwatch.producer")


class Publisher:
    """Publish to JetStream with pipelining, acks, a bounded spool and endless reconnects.

    Counters (cumulative): ``sent`` (stored by JetStream), ``failed`` (publish
    attempts not stored: errors, ack timeouts, disconnects), ``timeouts``,
    ``duplicates`` (stored before, dropped by JetStream's de-duplication),
    ``replayed`` (re-published from the spool), ``reconnects``, ``disconnects``;
    the spool adds ``spooled`` and ``dropped``.
    """

    def __init__(
        self,
        servers: str | list[str],
        *,
        spool: Spool | None = None,
        name: str = "swarmwatch-producer",
        ack_timeout_s: float = DEFAULT_ACK_TIMEOUT_S,
        max_inflight: int = DEFAULT_MAX_INFLIGHT,
        reconnect_wait_s: float = DEFAULT_RECONNECT_WAIT_S,
        max_reconnect_wait_s: float = DEFAULT_MAX_RECONNECT_WAIT_S,
        connect_options: dict[str, Any] | None = None,
    ) -> None:
        if ack_timeout_s <= 0:
            raise ValueError(f"ack timeout {ack_timeout_s!r} must be > 0 seconds")
        if max_inflight < 1:
            raise ValueError(f"max in-flight {max_inflight!r} must be >= 1")
        self.servers = servers
        self.spool = spool if spool is not None else Spool()
        self.name = name
        self.ack_timeout_s = ack_timeout_s
        self.max_inflight = max_inflight
        self.reconnect_wait_s = reconnect_wait_s
        self.max_reconnect_wait_s = max_reconnect_wait_s
        self.connect_options = dict(connect_options or {})
        self.sent = 0
        self.failed = 0
        self.timeouts = 0
        self.duplicates = 0
        self.replayed = 0
        self.reconnects = 0
        self.disconnects = 0
        self.last_error: str | None = None
        self._nc: NATS | None = None
        self._js: Any = None
        self._inflight: dict[asyncio.Future[Any], tuple[SpoolItem, float]] = {}
        self._room = asyncio.Event()
        self._connected = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._replay_task: asyncio.Task[None] | None = None
        self._last_failure_s = -REPLAY_BACKOFF_S
        self._logged: dict[str, float] = {}
        self._closing = False

    # --- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Begin connecting in the background; returns at once (messages spool until connected)."""
        self._nc = NATS()
        self._tasks.append(asyncio.create_task(self._connect(), name="swarmwatch-connect"))
        self._tasks.append(asyncio.create_task(self._housekeeping(), name="swarmwatch-housekeeping"))

    async def wait_connected(self, timeout_s: float) -> bool:
        """True once connected, False if ``timeout_s`` passes first."""
        try:
            await asyncio.wait_for(self._connected.wait(), timeout_s)
        except asyncio.TimeoutError:
            return False
        return True

    @property
    def connected(self) -> bool:
        nc = self._nc
        return nc is not None and self._js is not None and nc.is_connected

    @property
    def client(self) -> NATS | None:
        """The NATS client once connected (for request/reply or subscriptions beside publishing), else None."""
        return self._nc if self._js is not None else None

    @property
    def inflight(self) -> int:
        return len(self._inflight)

    async def close(self, timeout_s: float = 5.0) -> None:
        """Wait up to ``timeout_s`` for outstanding acks, spool the rest (to disk if configured), disconnect."""
        deadline = time.monotonic() + timeout_s
        for t in self._tasks:  # repeated cancels: nats-py's connect loop can swallow one (swarmwatch.cancellation)
            await stop_task(t, max(0.5, deadline - time.monotonic()), t.get_name())
        self._tasks.clear()
        # Last chance for what is spooled: replay it while the connection is up.
        while self.spool and self.connected and time.monotonic() < deadline:
            if self._replay_task is None or self._replay_task.done():
                if time.monotonic() - self._last_failure_s < REPLAY_BACKOFF_S:
                    break
                self._replay_task = asyncio.create_task(self._replay(), name="swarmwatch-replay")
            await asyncio.wait([self._replay_task], timeout=max(0.0, deadline - time.monotonic()))
        self._closing = True
        if self._replay_task is not None and not self._replay_task.done():
            await stop_task(self._replay_task, max(0.5, deadline - time.monotonic()), "spool replay")
        if self._inflight:
            await asyncio.wait(list(self._inflight), timeout=max(0.1, deadline - time.monotonic()))
        self._fail_inflight("producer closing")
        self.spool.flush_to_disk()
        nc, self._nc = self._nc, None
        self._js = None
        if nc is not None:
            try:
                await asyncio.wait_for(nc.close(), timeout_s)
            except Exception:  # noqa: BLE001 - closing a dead connection must not raise
                pass

    # --- publishing ------------------------------------------------------------------------

    async def publish(self, subject: str, payload: bytes, msg_id: str) -> bool:
        """Send one message without waiting for its ack; False when it went to the spool instead."""
        item = SpoolItem(subject, msg_id, payload)
        if not self.connected or len(self._inflight) >= self.max_inflight:
            self.spool.put(item)
            return False
        return await self._send(item)

    async def _send(self, item: SpoolItem) -> bool:
        try:
            fut = await self._js.publish_async(
                item.subject, item.payload, wait_stall=self.ack_timeout_s, headers={"Nats-Msg-Id": item.msg_id}
            )
        except Exception as exc:  # noqa: BLE001 - connection closed, buffer full, too many stalled
            self._failure(f"publish failed: {type(exc).__name__}: {exc}")
            self.spool.put(item)
            return False
        if fut.done() and fut not in self._inflight:
            # Resolved before we registered it (cannot happen with nats-py's loop, but be safe).
            self._inflight[fut] = (item, time.monotonic() + self.ack_timeout_s)
            self._on_ack(fut)
            return True
        self._inflight[fut] = (item, time.monotonic() + self.ack_timeout_s)
        fut.add_done_callback(self._on_ack)
        return True

    def _on_ack(self, fut: asyncio.Future[Any]) -> None:
        entry = self._inflight.pop(fut, None)
        if len(self._inflight) < self.max_inflight:
            self._room.set()
        if entry is None:  # already timed out or failed by a disconnect
            return
        item = entry[0]
        if fut.cancelled():
            self._failure("publish cancelled")
            self.spool.put(item)
            return
        exc = fut.exception()
        if exc is not None:
            self._failure(f"JetStream refused the message: {type(exc).__name__}: {exc}")
            self.spool.put(item)
            return
        self.sent += 1
        if getattr(fut.result(), "duplicate", False):
            self.duplicates += 1

    def _failure(self, reason: str) -> None:
        self.failed += 1
        self.last_error = reason
        self._last_failure_s = time.monotonic()
        self._log_limited("failure", reason)

    def _fail_inflight(self, reason: str) -> None:
        """Count every unacknowledged message as failed and spool it for a later replay."""
        pending = list(self._inflight.items())
        self._inflight.clear()
        for fut, (item, _) in pending:
            if not fut.done():
                fut.cancel()
            self._failure(reason)
            self.spool.put(item)
        self._room.set()

    def sweep(self, now_s: float | None = None) -> int:
        """Fail and spool messages whose ack is overdue; returns how many."""
        now = time.monotonic() if now_s is None else now_s
        overdue = [f for f, (_, deadline) in self._inflight.items() if deadline <= now]
        for fut in overdue:
            item, _ = self._inflight.pop(fut)
            if not fut.done():
                fut.cancel()
            self.timeouts += 1
            self._failure(f"no JetStream ack within {self.ack_timeout_s:g}s")
            self.spool.put(item)
        if overdue:
            self._room.set()
        return len(overdue)

    def counters(self) -> dict[str, float]:
        """Current counters and levels, named as in the ``swarmwatch.producer.*`` samples."""
        return {
            "sent": float(self.sent),
            "failed": float(self.failed),
            "timeouts": float(self.timeouts),
            "duplicates": float(self.duplicates),
            "replayed": float(self.replayed),
            "spooled": float(self.spool.spooled),
            "dropped": float(self.spool.dropped),
            "spool_corrupt": float(self.spool.corrupt),
            "spool_items": float(len(self.spool)),
            "spool_bytes": float(self.spool.memory_bytes + self.spool.disk_bytes),
            "inflight": float(len(self._inflight)),
            "reconnects": float(self.reconnects),
            "disconnects": float(self.disconnects),
            "connected": 1.0 if self.connected else 0.0,
        }

    # --- background ------------------------------------------------------------------------

    async def _connect(self) -> None:
        assert self._nc is not None
        opts: dict[str, Any] = {
            "servers": self.servers,
            "name": self.name,
            "allow_reconnect": True,
            "max_reconnect_attempts": -1,  # forever
            "reconnect_time_wait": self.reconnect_wait_s,
            "reconnect_to_server_handler": self._choose_server,
            "ping_interval": DEFAULT_PING_INTERVAL_S,
            "max_outstanding_pings": 3,
            "connect_timeout": 5,
            "flush_timeout": FLUSH_TIMEOUT_S,  # a publish into a full buffer to a server that reads nothing returns
            "error_cb": self._on_error,
            "disconnected_cb": self._on_disconnect,
            "reconnected_cb": self._on_reconnect,
        }
        opts.update(self.connect_options)
        if opts.get("user") and "inbox_prefix" not in opts:
            opts["inbox_prefix"] = inbox_prefix(str(opts["user"]))
        await self._nc.connect(**opts)
        self._js = self._nc.jetstream(publish_async_max_pending=self.max_inflight)
        self._connected.set()
        self._kick_replay()
        log.info("connected to %s", self._nc.connected_url.netloc if self._nc.connected_url else self.servers)

    def _choose_server(self, servers: list[Any], info: dict[str, Any]) -> tuple[Any, float]:
        """Reconnect backoff: reconnect_wait_s doubling per failed attempt up to the cap, with jitter."""
        attempts = servers[0].reconnects if servers else 0
        delay = min(self.max_reconnect_wait_s, self.reconnect_wait_s * (2 ** min(attempts, 16)))
        return None, delay * random.uniform(0.8, 1.2)

    async def _on_error(self, exc: Exception) -> None:
        self.last_error = f"{type(exc).__name__}: {exc}"
        self._log_limited("nats", f"broker error: {self.last_error}")

    async def _on_disconnect(self) -> None:
        if self._closing:
            return
        self.disconnects += 1
        self._connected.clear()
        self._fail_inflight("disconnected before the ack")
        self._log_limited("disconnect", "disconnected from NATS; spooling until it is back")

    async def _on_reconnect(self) -> None:
        self.reconnects += 1
        self._connected.set()
        self._last_failure_s = -REPLAY_BACKOFF_S
        log.info("reconnected to NATS; %d spooled messages to replay", len(self.spool))
        self._kick_replay()

    async def _housekeeping(self) -> None:
        while True:
            await asyncio.sleep(HOUSEKEEPING_S)
            self.sweep()
            self._kick_replay()

    def _kick_replay(self) -> None:
        """Start replaying the spool unless disconnected, already replaying or just after a failure."""
        if (
            self.spool
            and self.connected
            and not self._closing
            and (self._replay_task is None or self._replay_task.done())
            and time.monotonic() - self._last_failure_s >= REPLAY_BACKOFF_S
        ):
            self._replay_task = asyncio.create_task(self._replay(), name="swarmwatch-replay")

    async def _replay(self) -> None:
        """Re-publish spooled messages, oldest first, keeping at most ``max_inflight`` unacknowledged."""
        while self.spool and self.connected:
            if time.monotonic() - self._last_failure_s < REPLAY_BACKOFF_S:
                return
            room = self.max_inflight - len(self._inflight)
            if room <= 0:
                self._room.clear()
                try:
                    await asyncio.wait_for(self._room.wait(), self.ack_timeout_s)
                except asyncio.TimeoutError:
                    self.sweep()
                continue
            for item in self.spool.take(min(room, REPLAY_CHUNK)):
                if await self._send(item):
                    self.replayed += 1
            await asyncio.sleep(0)

    def _log_limited(self, kind: str, message: str) -> None:
        now = time.monotonic()
        if now - self._logged.get(kind, -LOG_EVERY_S) >= LOG_EVERY_S:
            self._logged[kind] = now
            log.warning("%s (failed=%d, spooled=%d, dropped=%d)", message, self.failed, self.spool.spooled, self.spool.dropped)
