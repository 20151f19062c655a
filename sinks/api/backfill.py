"""Read a time range of a JetStream stream once, in order, through an ephemeral consumer.

Used to backfill the API's in-memory state from DERIVED at start-up (the last
hour of aggregates, a day of alerts) and by ``swarmwatch report`` when no files
are given. The consumer has no acks and vanishes when idle; reading stops when
the consumer has nothing pending or the stored time passes ``until_s``.
"""
from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable, Sequence

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError

log = logging.getLogger(__name__)

DERIVED_STREAM = "DERIVED"
DEFAULT_BATCH = 1000
DEFAULT_IDLE_TIMEOUT_S = 5.0  # give up when nothing arrives for this long
DEFAULT_UNTIL_MARGIN_S = 120.0  # stored time may trail event time by this much
INACTIVE_THRESHOLD_S = 30.0


def _iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + f".{int((ts % 1) * 1e9):09d}Z"


def _meta(reply: str) -> tuple[int, float]:
    """(pending, stored time s) from a ``$JS.ACK`` reply subject (v1 or v2 layout)."""
    t = reply.split(".")
    if len(t) == 9:
        return int(t[8]), int(t[7]) / 1e9
    if len(t) >= 12:
        return int(t[10]), int(t[9]) / 1e9
    raise ValueError(f"not a JetStream ack subject: {reply!r}")


async def replay(
    nc: NATS,
    subjects: Sequence[str],
    since_s: float,
    on_msg: Callable[[str, bytes], None],
    *,
    until_s: float | None = None,
    stream: str = DERIVED_STREAM,
    batch: int = DEFAULT_BATCH,
    idle_timeout_s: float = DEFAULT_IDLE_TIMEOUT_S,
    until_margin_s: float = DEFAULT_UNTIL_MARGIN_S,
) -> int:
    """Call ``on_msg(subject, data)`` for each stored message on ``subjects`` from ``since_s``.

    Returns how many were delivered; 0 if the stream does not exist.
    """
    if not subjects:
        raise ValueError("replay needs at least one subject filter")
    js = nc.jetstream()
    name = f"sw_replay_{uuid.uuid4().hex[:12]}"
    cfg = ConsumerConfig(
        name=name,
        ack_policy=AckPolicy.NONE,
        deliver_policy=DeliverPolicy.BY_START_TIME,
        opt_start_time=_iso(max(0.0, since_s)),
        inactive_threshold=INACTIVE_THRESHOLD_S,
        mem_storage=True,
        max_waiting=4,
    )
    if len(subjects) == 1:
        cfg.filter_subject = subjects[0]
    else:
        cfg.filter_subjects = list(subjects)
    try:
        info = await js.add_consumer(stream, cfg)
    except NotFoundError:
        log.info("stream %s not found; nothing to replay", stream)
        return 0
    if not info.num_pending:
        await _delete(js, stream, name)
        return 0

    done = asyncio.get_running_loop().create_future()
    delivered = 0
    requested = 0
    stop_after = None if until_s is None else until_s + until_margin_s
    inbox = nc.new_inbox()

    async def request() -> None:
        nonlocal requested
        requested += batch
        body = b'{"batch":%d,"expires":%d}' % (batch, int(idle_timeout_s * 1e9))
        await nc.publish(f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{name}", body, reply=inbox)

    async def on_reply(msg: Msg) -> None:
        nonlocal delivered, requested
        if done.done():
            return
        if not msg.reply:  # status: 404/408 no messages, request expired
            status = (msg.headers or {}).get("Status", "")
            if status in ("404", "408"):
                done.set_result(None)
            return
        requested -= 1
        pending, stored = _meta(msg.reply)
        if stop_after is not None and stored > stop_after:
            done.set_result(None)
            return
        delivered += 1
        try:
            on_msg(msg.subject, msg.data)
        except Exception:
            log.exception("replay handler failed on %s", msg.subject)
        if pending == 0:
            done.set_result(None)
        elif requested <= batch // 2:
            await request()

    sub = await nc.subscribe(inbox, cb=on_reply, pending_msgs_limit=4 * batch + 100, pending_bytes_limit=-1)
    try:
        await request()
        while True:
            before = delivered
            try:
                await asyncio.wait_for(asyncio.shield(done), timeout=idle_timeout_s + 1.0)
                break
            except asyncio.TimeoutError:
                if delivered == before:
                    log.warning("replay of %s stalled after %d messages; stopping", stream, delivered)
                    break
                requested = 0
                await request()
    finally:
        await sub.unsubscribe()
        await _delete(js, stream, name)
    return delivered


async def _delete(js: object, stream: str, name: str) -> None:
    try:
        await js.delete_consumer(stream, name)  # type: ignore[attr-defined]
    except Exception:  # gone already (inactive threshold) or connection closing
        pass
