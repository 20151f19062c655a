"""A fast JetStream pull consumer.

nats-py's ``fetch()`` costs a factor of 3 against the server (ARCHITECTURE.md).
This puller sends raw ``$JS.API.CONSUMER.MSG.NEXT`` requests whose replies land
in one callback subscription, and keeps the next request in flight before the
current batch runs out, so the handler never waits on a round trip.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import orjson
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError

log = logging.getLogger(__name__)

DEFAULT_BATCH = 1000
DEFAULT_EXPIRES_S = 5.0
DEFAULT_ACK_WAIT_S = 60.0
DEFAULT_MAX_ACK_PENDING = 1_000_000
NO_RESPONDER_RETRY_S = 0.25  # a consumer without a leader answers nothing; ask again this soon
LOST_REQUEST_GRACE_S = 2.0  # silence past a request's expiry before it counts as lost

Handler = Callable[[Msg], Awaitable[None]]


def ack_tokens(reply: str) -> tuple[int, int, int, int]:
    """(stream seq, consumer seq, delivered count, stored timestamp ns) from a ``$JS.ACK`` reply subject (v1 or v2)."""
    t = reply.split(".")
    if len(t) == 9:
        return int(t[5]), int(t[6]), int(t[4]), int(t[7])
    if len(t) >= 12:
        return int(t[7]), int(t[8]), int(t[6]), int(t[9])
    raise ValueError(f"not a JetStream ack subject: {reply!r}")


def stream_seq(msg: Msg) -> int:
    """The stream sequence of a JetStream message."""
    return ack_tokens(msg.reply)[0]


class JetStreamPuller:
    """Durable pull consumer feeding ``handler`` one message at a time.

    ``handler`` is awaited inline for each message, in stream order. Acks are the
    caller's: ``await puller.ack(msg)`` (with AckPolicy.ALL this acks everything
    up to ``msg``).
    """

    def __init__(
        self,
        nc: NATS,
        stream: str,
        durable: str,
        filter_subjects: Sequence[str],
        handler: Handler,
        *,
        batch: int = DEFAULT_BATCH,
        expires_s: float = DEFAULT_EXPIRES_S,
        ack_policy: AckPolicy = AckPolicy.ALL,
        ack_wait_s: float = DEFAULT_ACK_WAIT_S,
        max_ack_pending: int = DEFAULT_MAX_ACK_PENDING,
    ) -> None:
        if batch < 1:
            raise ValueError(f"batch must be >= 1, got {batch}")
        self.nc = nc
        self.js = nc.jetstream()
        self.stream = stream
        self.durable = durable
        self.filter_subjects = list(filter_subjects)
        self.handler = handler
        self.batch = batch
        self.expires_s = expires_s
        self.ack_policy = ack_policy
        self.ack_wait_s = ack_wait_s
        self.max_ack_pending = max_ack_pending
        self._sub: Any = None
        self._requested = 0
        self._last_delivery = 0.0
        self._watchdog: asyncio.Task[None] | None = None
        self._inbox = ""
        self.delivered = 0
        self.handler_errors = 0

    def _config(self, deliver_policy: DeliverPolicy, opt_start_seq: int | None, opt_start_time: str | None) -> ConsumerConfig:
        cfg = ConsumerConfig(
            durable_name=self.durable,
            ack_policy=self.ack_policy,
            ack_wait=self.ack_wait_s,
            max_ack_pending=self.max_ack_pending,
            deliver_policy=deliver_policy,
            opt_start_seq=opt_start_seq,
            opt_start_time=opt_start_time,
            max_waiting=64,
        )
        if len(self.filter_subjects) == 1:
            cfg.filter_subject = self.filter_subjects[0]
        elif self.filter_subjects:
            cfg.filter_subjects = self.filter_subjects
        return cfg

    async def ensure(
        self,
        *,
        start_seq: int | None = None,
        start_time: float | None = None,
        recreate: bool = False,
    ) -> None:
        """Create the durable consumer; ``recreate`` deletes it first (to reposition it)."""
        if recreate:
            try:
                await self.js.delete_consumer(self.stream, self.durable)
            except NotFoundError:
                pass
        else:
            try:
                await self.js.consumer_info(self.stream, self.durable)
                return
            except NotFoundError:
                pass
        if start_seq is not None:
            cfg = self._config(DeliverPolicy.BY_START_SEQUENCE, max(1, start_seq), None)
        elif start_time is not None:
            iso = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(start_time)) + f".{int((start_time % 1) * 1e9):09d}Z"
            cfg = self._config(DeliverPolicy.BY_START_TIME, None, iso)
        else:
            cfg = self._config(DeliverPolicy.ALL, None, None)
        await self.js.add_consumer(self.stream, cfg)

    async def start(self) -> None:
        """Subscribe to a private inbox and send the first pull request."""
        self._inbox = self.nc.new_inbox()
        self._sub = await self.nc.subscribe(self._inbox, cb=self._on_msg, pending_msgs_limit=4 * self.batch + 1000, pending_bytes_limit=-1)
        self._requested = 0
        self._last_delivery = time.monotonic()
        await self._request()
        self._watchdog = asyncio.create_task(self._watch(), name=f"puller-watchdog-{self.durable}")

    async def stop(self) -> None:
        """Stop pulling; messages in flight stay unacked and are redelivered later."""
        if self._watchdog is not None:
            self._watchdog.cancel()
            try:
                await self._watchdog
            except asyncio.CancelledError:
                pass
            self._watchdog = None
        if self._sub is not None:
            try:
                await self._sub.unsubscribe()
            except Exception:  # connection already closed
                pass
            self._sub = None

    async def ack(self, msg: Msg) -> None:
        await self.nc.publish(msg.reply, b"+ACK")

    async def nak(self, msg: Msg, delay_s: float | None = None) -> None:
        payload = b"-NAK" if delay_s is None else b"-NAK " + orjson.dumps({"delay": int(delay_s * 1e9)})
        await self.nc.publish(msg.reply, payload)

    async def _request(self) -> None:
        body = orjson.dumps({"batch": self.batch, "expires": int(self.expires_s * 1e9)})
        self._requested += self.batch
        await self.nc.publish(f"$JS.API.CONSUMER.MSG.NEXT.{self.stream}.{self.durable}", body, reply=self._inbox)
        # The client sends from a flusher task that would otherwise wait until this subscription's
        # backlog is handled; yield once so the next request reaches the server before it is needed.
        await asyncio.sleep(0)

    async def _on_msg(self, msg: Msg) -> None:
        self._last_delivery = time.monotonic()
        if not msg.reply:  # a status: 404 no messages, 408 request expired, 409 limits
            hdrs = msg.headers or {}
            pending = int(hdrs.get("Nats-Pending-Messages", "0") or 0)
            status = hdrs.get("Status", "")
            if status == "503":  # no responders: the consumer has no leader yet (just created, or re-electing)
                self._requested = 0
                log.debug("pull request on %s/%s had no responder; asking again", self.stream, self.durable)
                await asyncio.sleep(NO_RESPONDER_RETRY_S)
                if self._sub is not None:
                    await self._request()
                return
            if status in ("404", "408", "409"):
                self._requested = max(0, self._requested - (pending or self.batch))
                if status == "409":
                    desc = hdrs.get("Description", "")
                    quiet = any(w in desc for w in ("Server Shutdown", "Consumer Deleted", "Leadership Change"))
                    (log.debug if quiet else log.warning)("pull request on %s/%s ended: %s", self.stream, self.durable, desc)
                    await asyncio.sleep(0.05)
            if self._requested <= self.batch // 2 and self._sub is not None:
                await self._request()
            return
        self._requested -= 1
        self.delivered += 1
        if self._requested <= self.batch // 2:
            await self._request()
        try:
            await self.handler(msg)
        except asyncio.CancelledError:
            raise
        except Exception:
            self.handler_errors += 1
            log.exception("handler failed on %s", msg.subject)

    async def _watch(self) -> None:
        """Re-issue requests if replies went missing (e.g. across a reconnect).

        A live request always answers within ``expires_s`` (messages, or a 408 when
        it expires), so silence for longer than that plus a grace means it was lost.
        """
        while True:
            await asyncio.sleep(min(1.0, self.expires_s))
            if time.monotonic() - self._last_delivery > self.expires_s + LOST_REQUEST_GRACE_S and self.nc.is_connected:
                self._requested = 0
                self._last_delivery = time.monotonic()
                try:
                    await self._request()
                except Exception:
                    log.warning("pull request on %s/%s failed; will retry", self.stream, self.durable)
