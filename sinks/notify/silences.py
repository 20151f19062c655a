"""Silences: time-bounded matchers that mute firing notifications, kept in JetStream KV.

A silence is ``{id, matchers, starts_at, ends_at, created_by, comment}`` stored
under its id in the ``sw_silences`` bucket. Expiring one sets ``ends_at`` to
now (the record stays, so ``list --all`` shows what was silenced and when).
A silence mutes firing notifications only: the resolve of an alert whose
firing was already sent is always delivered.
"""
from __future__ import annotations

import asyncio
import contextlib
import getpass
import logging
import re
import secrets
import time
from collections.abc import Mapping

import msgspec
from nats.js import JetStreamContext
from nats.js.api import StorageType
from nats.js.errors import BucketNotFoundError, KeyNotFoundError, NotFoundError
from nats.js.kv import KeyValue

from schemas import Alert
from schemas.durations import DurationError
from schemas.durations import parse_duration as _parse_duration

from sinks.buckets import BucketReadError, read_bucket, watch_from_snapshot
from sinks.notify.config import DEFAULT_SILENCE_BUCKET, LABELS
from sinks.notify.routing import alert_labels, matches

log = logging.getLogger(__name__)

MAX_SILENCE_S = 365 * 86_400.0


class SilenceError(ValueError):
    """A silence that cannot be created or found; the message names the value."""


class Silence(msgspec.Struct, omit_defaults=True, forbid_unknown_fields=False):
    """Mutes firing alerts whose labels match every matcher while starts_at <= now < ends_at."""

    id: str
    matchers: dict[str, str]
    starts_at: float
    ends_at: float
    created_by: str = ""
    comment: str = ""

    def active(self, now: float) -> bool:
        return self.starts_at <= now < self.ends_at

    def mutes(self, alert: Alert, now: float) -> bool:
        return self.active(now) and matches(self.matchers, alert_labels(alert))


def parse_duration(text: str) -> float:
    """``90s``, ``30m``, ``2h``, ``1d``, ``1h30m`` -> seconds (the one grammar; a unit is required here)."""
    try:
        total = _parse_duration(text, require_unit=True)
    except DurationError as exc:
        raise SilenceError(str(exc)) from None
    if total <= 0:
        raise SilenceError(f"duration {text!r} must be longer than 0")
    if total > MAX_SILENCE_S:
        raise SilenceError(f"duration {text!r} is longer than a year")
    return total


def parse_matchers(items: list[str] | tuple[str, ...]) -> dict[str, str]:
    """``["rule=cpu_*", "cluster=c1", "node=!n1"]`` -> ``{"rule": "cpu_*", ...}``."""
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or key not in LABELS or not value or value == "!":
            raise SilenceError(
                f"matcher {item!r} is invalid; expected LABEL=GLOB with LABEL one of {', '.join(LABELS)} "
                "(e.g. rule=cpu_*, node=!n1)"
            )
        if key in out:
            raise SilenceError(f"matcher {item!r} repeats label {key!r}")
        out[key] = value
    if not out:
        raise SilenceError("a silence needs at least one matcher, e.g. --match rule=cpu_high")
    return out


async def open_bucket(js: JetStreamContext, bucket: str = DEFAULT_SILENCE_BUCKET) -> KeyValue:
    """The silences KV bucket, created if missing."""
    try:
        return await js.key_value(bucket)
    except (BucketNotFoundError, NotFoundError):
        return await js.create_key_value(bucket=bucket, history=1, storage=StorageType.FILE)


class SilenceStore:
    """Create, list and expire silences in the KV bucket."""

    def __init__(self, kv: KeyValue) -> None:
        self.kv = kv

    @classmethod
    async def open(cls, js: JetStreamContext, bucket: str = DEFAULT_SILENCE_BUCKET) -> SilenceStore:
        return cls(await open_bucket(js, bucket))

    async def add(
        self,
        matchers: Mapping[str, str],
        duration_s: float,
        *,
        comment: str = "",
        created_by: str | None = None,
        starts_at: float | None = None,
    ) -> Silence:
        """Store a new silence lasting ``duration_s`` seconds from ``starts_at`` (default now)."""
        if not duration_s > 0:
            raise SilenceError(f"duration {duration_s!r} s must be > 0")
        m = parse_matchers([f"{k}={v}" for k, v in matchers.items()])
        start = time.time() if starts_at is None else float(starts_at)
        sil = Silence(
            id=secrets.token_hex(6),
            matchers=m,
            starts_at=start,
            ends_at=start + float(duration_s),
            created_by=created_by if created_by is not None else _whoami(),
            comment=comment,
        )
        await self.kv.put(sil.id, msgspec.json.encode(sil))
        return sil

    async def get(self, silence_id: str) -> Silence:
        if not re.match(r"^[A-Za-z0-9_-]{1,64}$", silence_id):
            raise SilenceError(f"silence id {silence_id!r} is invalid; expected the id shown by 'silence list'")
        try:
            entry = await self.kv.get(silence_id)
        except KeyNotFoundError:
            raise SilenceError(f"no silence with id {silence_id!r}") from None
        if entry.value is None:
            raise SilenceError(f"no silence with id {silence_id!r}")
        try:
            return msgspec.json.decode(entry.value, type=Silence)
        except (msgspec.DecodeError, RecursionError) as exc:
            raise SilenceError(f"silence {silence_id!r} in the bucket is unreadable: {exc}") from None

    async def expire(self, silence_id: str, now: float | None = None) -> Silence:
        """End a silence now; expiring an expired one is a no-op."""
        sil = await self.get(silence_id)
        t = time.time() if now is None else now
        if sil.ends_at > t:
            sil.ends_at = max(t, sil.starts_at)
            await self.kv.put(sil.id, msgspec.json.encode(sil))
        return sil

    async def list(self, *, include_expired: bool = False, now: float | None = None) -> list[Silence]:
        """Silences ordered by start; by default only those active or pending."""
        t = time.time() if now is None else now
        out = [s for s in await _load_all(self.kv) if include_expired or s.ends_at > t]
        return sorted(out, key=lambda s: (s.starts_at, s.id))


async def _load_all(kv: KeyValue) -> list[Silence]:
    out: list[Silence] = []
    try:
        values = await read_bucket(kv)
    except BucketReadError as exc:
        raise SilenceError(str(exc)) from None
    for value in values.values():
        if value:
            with contextlib.suppress(msgspec.DecodeError, RecursionError):  # RecursionError: nested too deeply
                out.append(msgspec.json.decode(value, type=Silence))
    return out


class SilenceCache:
    """Live view of the silences bucket for the sink (a KV watch keeps it current)."""

    def __init__(self, kv: KeyValue) -> None:
        self.kv = kv
        self.silences: dict[str, Silence] = {}
        self.version = 0  # bumped on every change, so the sink re-evaluates mutes at once
        self._task: asyncio.Task[None] | None = None
        self._watcher: KeyValue.KeyWatcher | None = None

    async def start(self) -> None:
        """Load every silence (all of them, or ``BucketReadError``), then follow changes."""
        self._watcher, entries = await watch_from_snapshot(self.kv)
        for entry in entries.values():
            self._apply(entry)
        self._task = asyncio.create_task(self._follow(), name="notify-silences")

    async def stop(self) -> None:
        if self._watcher is not None:
            with contextlib.suppress(Exception):
                await self._watcher.stop()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._task = self._watcher = None

    async def _follow(self) -> None:
        assert self._watcher is not None
        async for entry in self._watcher:
            if entry is not None:
                self._apply(entry)

    def _apply(self, entry: KeyValue.Entry) -> None:
        self.version += 1
        if entry.operation in ("DEL", "PURGE") or not entry.value:
            self.silences.pop(entry.key, None)
            return
        try:
            self.silences[entry.key] = msgspec.json.decode(entry.value, type=Silence)
        except (msgspec.DecodeError, RecursionError):  # RecursionError: nested too deeply
            log.warning("silence %r in the bucket is not valid JSON; ignored", entry.key)

    def muted_by(self, alert: Alert, now: float) -> str | None:
        """Id of an active silence that mutes ``alert``, or None."""
        for sil in self.silences.values():
            if sil.mutes(alert, now):
                return sil.id
        return None


def _whoami() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no passwd entry (containers)
        return "unknown"
