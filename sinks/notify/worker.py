"""The notification sink: alerts from JetStream in, messages to people out.

``NotifySink(nc, config)`` pulls ``sw.alerts.>`` from the DERIVED stream with
a durable consumer (``sink-notify``), routes each alert (routes, then severity
defaults), groups, applies silences and inhibition, and hands messages to one
delivery queue per channel.

State (``sw_notify`` KV bucket) makes a restart safe:

- ``a.<alert id>``: the alert, its channels and, per channel, the status whose
  delivery was confirmed (sent, or dead-lettered). An alert message is acked
  only after this record is stored, so an obligation to page or to resolve is
  never lost; a restarted sink reloads the records and pages nothing already
  confirmed. A finished episode stays as a tombstone (``done``) so a late
  duplicate of it pages nothing; tombstones are removed after ``TOMBSTONE_TTL_S``.
- ``g.<hash>``: per group, the time of its last message (so ``group_interval_s``
  and ``repeat_interval_s`` hold across restarts).

Undeliverable messages go to ``sw.dlq.notify`` as DeadLetter (reason scrubbed of
secrets), are logged at ERROR, and counted.
"""
from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from collections.abc import Callable
from typing import Any

import msgspec
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js.api import AckPolicy, StorageType
from nats.js.errors import BucketNotFoundError, NotFoundError
from nats.js.kv import KeyValue

from processors.consumer import JetStreamPuller
from schemas import Alert, AlertStatus, DeadLetter, MetricBatch, Sample, codec, subjects

from sinks.buckets import read_bucket
from sinks.notify.config import NotifyConfig
from sinks.notify.delivery import STOP_GRACE_S, ChannelQueue, ChannelSender, Outbound
from swarmwatch.cancellation import stop_task
from sinks.notify.redaction import Redactor, install_log_scrubber, remove_log_scrubber
from sinks.notify.grouping import Grouper, Notification, Tracked
from sinks.notify.messages import notify_type, render
from sinks.notify.routing import Inhibitor, Router
from sinks.notify.silences import SilenceCache, open_bucket

log = logging.getLogger(__name__)

STREAM = "DERIVED"
ALERT_SUBJECTS = ("sw.alerts.>",)
DLQ_STAGE = "notify"
TOMBSTONE_TTL_S = 7 * 86_400.0
PRUNE_EVERY_S = 600.0
FULL_SCAN_S = 1.0  # every group is re-evaluated this often (mutes lifted, flapping ended)
SELF_METRICS_INTERVAL_S = 10.0  # how often the counters go out on sw.self.notify


class _Record(msgspec.Struct, omit_defaults=True, forbid_unknown_fields=False):
    """What ``a.<id>`` holds."""

    alert: Alert
    channels: list[str]
    received_at: float
    changed_at: float
    recorded: dict[str, str] = {}
    done: float = 0.0  # time the episode finished; 0 while open


class _GroupState(msgspec.Struct, forbid_unknown_fields=False):
    key: list[str]
    last_sent: float | None
    active: bool
    leading: bool = False  # the last message was a leading edge (its followers wait group_wait_s, not group_interval_s)


def _group_kv_key(key: tuple[str, ...]) -> str:
    return "g." + hashlib.blake2b("\x1f".join(key).encode(), digest_size=12).hexdigest()


class NotifySink:
    """Runs the notification sink on a connected client until ``stop()``.

    ``clock`` (UNIX seconds) is injectable for tests; delivery retries use real time.
    """

    def __init__(self, nc: NATS, config: NotifyConfig, *, clock: Callable[[], float] = time.time) -> None:
        self.nc = nc
        self.js = nc.jetstream()
        self.config = config
        self.clock = clock
        self.router = Router(config)
        self.inhibitor = Inhibitor(config.inhibit)
        self.grouper = Grouper(config.grouping, config.flap)
        self.redactor = Redactor(config.secrets())
        self._scrub: logging.Filter | None = None
        self.channels: dict[str, ChannelQueue] = {}
        self.state: KeyValue | None = None
        self.silences: SilenceCache | None = None
        self.puller: JetStreamPuller | None = None
        self._wake = asyncio.Event()
        self._scheduler: asyncio.Task[None] | None = None
        self._self_metrics: asyncio.Task[None] | None = None
        self._closing = False  # set by stop(): loops end even if a library swallowed the cancel
        self._to_persist: dict[str, Tracked] = {}
        self._to_ack: list[Msg] = []
        self._persist_lock = asyncio.Lock()
        self._last_prune = 0.0
        self._mute_noted: dict[str, str] = {}  # alert id -> why it is muted (logged once)
        self._last_full = 0.0
        self._versions = (-1, -1)
        self.counts: dict[str, int] = {
            "alerts_in": 0,
            "log_only": 0,
            "invalid": 0,
            "muted_silence": 0,
            "muted_inhibit": 0,
            "messages_queued": 0,
            "messages_sent": 0,
            "undeliverable": 0,
        }

    # --- lifecycle ------------------------------------------------------------
    async def start(self) -> None:
        """Open the buckets, reload state, start the channel workers and the consumer."""
        self._scrub = install_log_scrubber(self.redactor)
        for ch in self.config.channels:
            q = ChannelQueue(ChannelSender(ch, self.redactor, self.config.delivery.timeout_s), self.config.delivery, self._on_outcome)
            self.channels[ch.name] = q
        if not self.channels:
            log.warning("notify: no channels configured; alerts go to the log only")
        self.state = await self._bucket(self.config.state_bucket)
        self.silences = SilenceCache(await open_bucket(self.js, self.config.silence_bucket))
        await self.silences.start()
        await self._reload()
        for q in self.channels.values():
            q.start()
        self._closing = False
        self._scheduler = asyncio.create_task(self._schedule(), name="notify-scheduler")
        self._self_metrics = asyncio.create_task(self._publish_self_metrics(), name="notify-self-metrics")
        self.puller = JetStreamPuller(
            self.nc, STREAM, self.config.durable, ALERT_SUBJECTS, self._on_msg, batch=256, ack_policy=AckPolicy.EXPLICIT
        )
        await self.puller.ensure(start_time=self.clock() - self.config.start_lookback_s)
        await self.puller.start()
        log.info(
            "notify sink started: channels %s; %d open alerts reloaded",
            ", ".join(ch.redacted for ch in self.config.channels) or "(none)",
            len(self.grouper.alerts),
        )

    async def stop(self) -> None:
        """Stop consuming and sending within a bounded time (each task gets STOP_GRACE_S);
        unconfirmed messages are sent again after a restart."""
        if self.puller is not None:
            await self.puller.stop()
            self.puller = None
        self._closing = True
        for task in (self._scheduler, self._self_metrics):
            if task is not None:
                await stop_task(task, STOP_GRACE_S, task.get_name())
        self._scheduler = None
        self._self_metrics = None
        with contextlib.suppress(Exception):
            await self._persist()  # store what was received, ack it
        for q in self.channels.values():
            await q.stop()
        if self.silences is not None:
            await self.silences.stop()
        if self._scrub is not None:
            remove_log_scrubber(self._scrub)
            self._scrub = None

    async def __aenter__(self) -> NotifySink:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def _bucket(self, name: str) -> KeyValue:
        try:
            return await self.js.key_value(name)
        except (BucketNotFoundError, NotFoundError):
            return await self.js.create_key_value(bucket=name, history=1, storage=StorageType.FILE)

    async def _reload(self) -> None:
        """Restore the open alerts and groups from the state bucket, read whole or not at all.

        A load cut short would re-page every alert it missed, so a stalled read
        raises ``BucketReadError`` (the sink does not start) instead.
        """
        assert self.state is not None
        groups: list[_GroupState] = []
        for key, value in (await read_bucket(self.state)).items():
            if not value:
                continue
            try:
                if key.startswith("a."):
                    rec = msgspec.json.decode(value, type=_Record)
                    if rec.done:
                        self.grouper.tombstones[rec.alert.id] = rec.done
                        continue
                    chans = tuple(c for c in rec.channels if c in self.channels)
                    gkey, labels = self.grouper.group_key(rec.alert, chans)
                    t = Tracked(rec.alert, chans, gkey, rec.received_at, rec.changed_at, recorded=dict(rec.recorded))
                    self.grouper.restore(t, labels)
                    self.inhibitor.observe(rec.alert)
                elif key.startswith("g."):
                    groups.append(msgspec.json.decode(value, type=_GroupState))
            except (msgspec.DecodeError, msgspec.ValidationError, ValueError, RecursionError):
                log.warning("notify state %r is unreadable; ignored", key)
        for gs in groups:
            self.grouper.restore_group(tuple(gs.key), gs.last_sent, gs.active, gs.leading)

    # --- input ----------------------------------------------------------------
    async def _on_msg(self, msg: Msg) -> None:
        """Take one alert: route, track, queue its record for storage; ack comes after storage."""
        self.counts["alerts_in"] += 1
        try:
            alert = codec.decode(msg.data, Alert)
        except codec.DecodeError as exc:
            self.counts["invalid"] += 1
            await self._dead_letter(msg.subject, str(exc), msg.data)
            self._to_ack.append(msg)
            return
        if alert.id not in self.grouper.tombstones:  # a replay of a finished episode inhibits nothing
            self.inhibitor.observe(alert)
        channels = tuple(c for c in self.router.channels_for(alert) if c in self.channels)
        if not channels:
            self.counts["log_only"] += 1
            log.info(
                "alert %s %s %s on %s/%s: %s",
                alert.severity.value, alert.status.value, alert.rule, alert.cluster, alert.node, alert.summary,
                extra={"alert_id": alert.id},
            )
            self._to_ack.append(msg)
        else:
            t = self.grouper.observe(alert, channels, self.clock())
            if t is not None:
                self._to_persist[t.id] = t
            self._to_ack.append(msg)
        self._wake.set()

    async def _persist(self) -> None:
        """Store changed records, then ack the messages they came from (in that order)."""
        async with self._persist_lock:
            pending, self._to_persist = self._to_persist, {}
            acks, self._to_ack = self._to_ack, []
            try:
                if pending:
                    await asyncio.gather(*(self._put(t) for t in pending.values()))
                for m in acks:
                    await self.nc.publish(m.reply, b"+ACK")
            except Exception:
                # not stored (e.g. disconnected): keep both for the next tick; nothing is acked unstored
                self._to_persist = {**pending, **self._to_persist}
                self._to_ack = acks + self._to_ack
                raise

    async def _put(self, t: Tracked, done: float = 0.0) -> None:
        assert self.state is not None
        rec = _Record(t.alert, list(t.channels), t.received_at, t.changed_at, dict(t.recorded), done)
        await self.state.put(f"a.{t.id}", msgspec.json.encode(rec))

    # --- scheduling -------------------------------------------------------------
    def _muted(self, alert: Alert) -> str | None:
        now = self.clock()
        sid = self.silences.muted_by(alert, now) if self.silences is not None else None
        reason = f"silence {sid}" if sid is not None else None
        if reason is None:
            src = self.inhibitor.inhibited_by(alert)
            reason = f"inhibited by alert {src}" if src is not None else None
        if reason is not None and self._mute_noted.get(alert.id) != reason:
            self._mute_noted[alert.id] = reason
            self.counts["muted_silence" if sid is not None else "muted_inhibit"] += 1
            log.info("alert %s (%s on %s/%s) not paged: %s", alert.id, alert.rule, alert.cluster, alert.node, reason)
        return reason

    async def _schedule(self) -> None:
        while not self._closing:
            wait_s = min(self.config.tick_s, max(0.0, self.grouper.next_due - self.clock()))
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait_s):  # not wait_for: it can swallow stop()'s cancel on 3.11
                    await self._wake.wait()
            self._wake.clear()
            try:
                await self.tick()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("notify scheduler tick failed; retrying")
                await asyncio.sleep(self.config.tick_s)

    async def tick(self) -> None:
        """Store and ack new input, send what is due, retire finished episodes."""
        await self._persist()
        now = self.clock()
        versions = (self.silences.version if self.silences is not None else 0, self.inhibitor.version)
        full = versions != self._versions or now - self._last_full >= FULL_SCAN_S
        if full:
            self._versions, self._last_full = versions, now
        notes = self.grouper.due(now, self._muted, full=full)
        touched: set[tuple[str, ...]] = set()
        for n in notes:
            self._enqueue(n)
            touched.add(n.group)
        if touched:
            await asyncio.gather(*(self._put_group(k) for k in touched))
        done = self.grouper.collect_done(now)
        for t in done:
            self._mute_noted.pop(t.id, None)
        if done:
            await asyncio.gather(*(self._put(t, done=now) for t in done))
        for key in self.grouper.removed_groups:
            assert self.state is not None
            with contextlib.suppress(Exception):
                await self.state.delete(_group_kv_key(key))
        if now - self._last_prune > PRUNE_EVERY_S:
            self._last_prune = now
            for aid in self.grouper.prune_tombstones(now - TOMBSTONE_TTL_S):
                assert self.state is not None
                with contextlib.suppress(Exception):
                    await self.state.delete(f"a.{aid}")

    async def _put_group(self, key: tuple[str, ...]) -> None:
        g = self.grouper.groups.get(key)
        if g is None or self.state is None:
            return
        await self.state.put(_group_kv_key(key), msgspec.json.encode(_GroupState(list(key), g.last_sent, g.active, g.leading)))

    def _enqueue(self, n: Notification) -> None:
        title, body = render(n, max_lines=self.config.delivery.max_alerts_per_message, flap_quiet_s=self.config.flap.quiet_s)
        item = Outbound(n.channel, title, body, notify_type(n), n.refs(), queued_at=time.time())
        self.counts["messages_queued"] += 1
        self.channels[n.channel].put(item)

    # --- delivery outcome -------------------------------------------------------
    async def _on_outcome(self, item: Outbound, delivered: bool) -> None:
        if delivered:
            self.counts["messages_sent"] += 1
        else:
            self.counts["undeliverable"] += 1
            q = self.channels[item.channel]
            log.error(
                "notification to channel %r (%s) undeliverable after %d attempts: %s; sent to %s",
                item.channel, q.sender.redacted, item.attempts, item.error, subjects.dlq(DLQ_STAGE),
            )
            payload = msgspec.json.encode(
                {"channel": item.channel, "title": item.title, "body": item.body, "type": item.notify_type,
                 "alerts": [{"id": i, "status": s} for i, s in item.refs], "attempts": item.attempts}
            )
            await self._dead_letter(f"notify.{item.channel}", f"channel {item.channel!r}: {item.error}", payload)
        changed = self.grouper.record(item.channel, item.refs)
        if changed:
            await asyncio.gather(*(self._put(t) for t in changed))
        self._wake.set()

    async def _dead_letter(self, subject: str, reason: str, data: bytes) -> None:
        dl = DeadLetter.of(DLQ_STAGE, subject, self.redactor(reason), data)
        try:
            await self.js.publish(subjects.dlq(DLQ_STAGE), codec.encode(dl), stream=STREAM)
        except Exception as exc:
            log.error("dead-lettering to %s failed: %s", subjects.dlq(DLQ_STAGE), exc)

    def self_samples(self) -> list[Sample]:
        """The counters as samples ``swarmwatch.notify.*`` (per channel labelled ``channel``)."""
        st = self.stats()
        out = [Sample(f"swarmwatch.notify.{k}", float(v)) for k, v in st.items() if isinstance(v, (int, float)) and not isinstance(v, bool)]
        for name, ch in st.get("channels", {}).items():
            for k, v in ch.items():
                out.append(Sample(f"swarmwatch.notify.channel_{k}", float(v), labels={"channel": name}))
        return out

    async def _publish_self_metrics(self) -> None:
        """Publish the counters on ``sw.self.notify`` every SELF_METRICS_INTERVAL_S (core NATS)."""
        while True:
            await asyncio.sleep(SELF_METRICS_INTERVAL_S)
            try:
                batch = MetricBatch(cluster="swarmwatch", node="notify", ts=self.clock(), samples=self.self_samples())
                await self.nc.publish(subjects.self_metrics("notify"), codec.encode(batch))
            except Exception as exc:  # noqa: BLE001 - self-monitoring must never stop delivery
                log.debug("notify self metrics not published: %s", exc)

    def stats(self) -> dict[str, Any]:
        """Counters for self-monitoring and tests."""
        out: dict[str, Any] = dict(self.counts)
        out.update(self.grouper.stats())
        out["channels"] = {
            name: {"up": q.up, "queued": q.queue.qsize(), "sent": q.sent, "failed_attempts": q.failed_attempts,
                   "undeliverable": q.undeliverable}
            for name, q in self.channels.items()
        }
        return out


async def run_notify_sink(nc: NATS, config: NotifyConfig, stop: asyncio.Event | None = None) -> None:
    """Run a NotifySink until ``stop`` is set (or the task is cancelled)."""
    sink = NotifySink(nc, config)
    await sink.start()
    try:
        await (stop.wait() if stop is not None else asyncio.Event().wait())
    finally:
        await sink.stop()
