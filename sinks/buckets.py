"""Reading a JetStream KV bucket whole, within a bound: nats-py's watch can wait for ever for its end.

nats-py's ``KeyValue.watchall()`` marks "every current value delivered" with a
``None`` entry, and iterating a watcher has no timeout. That marker never comes
when the watch's ordered consumer delivers a heartbeat before nats-py has read
its ``consumer_info`` (an empty bucket and a reply slower than the 5 s
heartbeat: the heartbeat counts as a delivery, so no marker is queued), when
a counted value is removed before it is delivered, or when the connection
closes during the load (no end is ever queued). Here a load waits at most
``idle_s`` for each next update, starts again with a fresh watch (a new
consumer) up to ``attempts`` times, then raises ``BucketReadError``: callers
get a complete snapshot or an error, never part of the bucket.
"""
from __future__ import annotations

import contextlib
import logging

from nats.errors import ConnectionClosedError
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js.kv import KeyValue

log = logging.getLogger(__name__)

KV_IDLE_S = 5.0  # longest wait for the next update of a load (nats-py's own per-request JetStream timeout)
KV_READ_ATTEMPTS = 3  # fresh watches tried before a load fails


class BucketReadError(TimeoutError):
    """A KV bucket could not be read whole within the bounds (every attempt stalled or failed)."""


class _Stalled(Exception):
    """One watch delivered nothing for ``idle_s`` before its end-of-values marker."""


async def watch_from_snapshot(
    kv: KeyValue, *, idle_s: float | None = None, attempts: int | None = None
) -> tuple[KeyValue.KeyWatcher, dict[str, KeyValue.Entry]]:
    """A watcher of every key whose current values are all in, and those values.

    The values map key -> latest entry (deleted and purged keys left out), in
    the order of their revisions. Iterating the watcher afterwards yields the
    changes made since. Raises ``BucketReadError`` after ``attempts`` stalled or
    failed watches (default ``KV_IDLE_S``, ``KV_READ_ATTEMPTS``); a closed
    connection raises at once.
    """
    idle_s = KV_IDLE_S if idle_s is None else idle_s
    attempts = KV_READ_ATTEMPTS if attempts is None else attempts
    name = getattr(kv, "_name", "?")
    last: BaseException | None = None
    for attempt in range(1, attempts + 1):
        watcher: KeyValue.KeyWatcher | None = None
        try:
            watcher = await kv.watchall()  # its requests are bounded by the JetStream timeout
            entries = await _initial_values(watcher, idle_s)
            return watcher, dict(sorted(entries.items(), key=lambda kv_: kv_[1].revision))
        except ConnectionClosedError:
            await _stop(watcher)
            raise
        except Exception as exc:  # noqa: BLE001 - a stalled watch, a request timed out, no responders: try a fresh one
            await _stop(watcher)
            last = exc
            log.warning("reading KV bucket %s: %s (attempt %d of %d)", name, _describe(exc, idle_s), attempt, attempts)
    raise BucketReadError(
        f"KV bucket {name!r} could not be read whole: {attempts} attempts failed (last: {_describe(last, idle_s)})"
    ) from last


async def read_bucket(kv: KeyValue, *, idle_s: float | None = None, attempts: int | None = None) -> dict[str, bytes]:
    """Every key's current value (key -> bytes, in revision order); ``BucketReadError`` rather than part of them."""
    watcher, entries = await watch_from_snapshot(kv, idle_s=idle_s, attempts=attempts)
    await _stop(watcher)
    return {k: e.value or b"" for k, e in entries.items()}


async def _initial_values(watcher: KeyValue.KeyWatcher, idle_s: float) -> dict[str, KeyValue.Entry]:
    out: dict[str, KeyValue.Entry] = {}
    while True:
        try:
            entry = await watcher.updates(timeout=idle_s)
        except NatsTimeoutError:
            raise _Stalled() from None
        if entry is None:
            return out
        if not isinstance(entry, KeyValue.Entry):  # the stop sentinel: the watch ended before its marker
            raise _Stalled()
        if entry.operation in ("DEL", "PURGE"):
            out.pop(entry.key, None)
        else:
            out[entry.key] = entry


async def _stop(watcher: KeyValue.KeyWatcher | None) -> None:
    if watcher is not None:
        with contextlib.suppress(Exception):  # already unsubscribed, or the connection is closed
            await watcher.stop()


def _describe(exc: BaseException | None, idle_s: float) -> str:
    if isinstance(exc, _Stalled):
        return f"no update for {idle_s:g} s before the end of the current values"
    return f"{type(exc).__name__}: {exc}" if exc is not None and str(exc) else type(exc).__name__
