"""File sinks: JetStream messages into partitioned JSON-lines or Parquet segments.

A :class:`FileSink` runs one durable pull consumer per stream (``sink-<format>``
on TELEMETRY for raw metrics and events, and on DERIVED for aggregates, alerts,
trust and health). Decoded rows are buffered per partition and flushed on size
(``max_records`` rows) or age (``flush_interval_s``): each flush writes one new
segment per partition atomically (temp file, fsync, rename, fsync directory)
and only then acks the last message it covers (AckPolicy.ALL). A crash before
the ack means redelivery; the segment names come from the seq range, so the
same flush rewrites the same file, and each row keeps ``_seq`` for readers to
drop what a different flush boundary wrote twice.

Delivery safety with AckPolicy.ALL: an ack covers every earlier message, so the
sink must never ack past a message it did not write. It therefore (1) on start
repositions its consumer right after the ack floor when the previous run left
messages unacked (the server would otherwise send new messages first and
redeliver the old ones only after ``ack_wait``), (2) bounds unacked messages by
``max_pending_msgs`` so the client never drops deliveries, and (3) watches the
consumer's delivery sequence; a gap (a delivery lost across a reconnect)
flushes what came before it and repositions the consumer after the last ack.
One sink instance per format and durable name.

Around that: retention deletes date partitions older than ``retention_days``
(at start and every ``retention_interval_s``; late messages for such days are
acked unwritten and counted), compaction merges the small segments of every
day, the open one included (every ``compact_interval_s``, default hourly), undecodable messages go to ``sw.dlq.sink-<format>``,
and the counters are published on ``sw.self.sink-<format>``.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js.errors import NotFoundError

from processors.consumer import JetStreamPuller, ack_tokens
from schemas.codec import DecodeError, encode
from schemas.models import DeadLetter, MetricBatch, Sample
from schemas.subjects import dlq as dlq_subject
from schemas.subjects import self_metrics as self_metrics_subject
from sinks.compaction import DEFAULT_COMPACT_MAX_RECORDS, compact
from sinks.retention import apply_retention
from sinks.rows import message_rows, utc_date
from sinks.segments import SegmentFormat, get_format, partition_dir, remove_temp_files, segment_name, write_atomic
from swarmwatch.cancellation import stop_task

log = logging.getLogger(__name__)

TELEMETRY_STREAM = "TELEMETRY"
DERIVED_STREAM = "DERIVED"
DEFAULT_SUBJECTS: dict[str, tuple[str, ...]] = {
    TELEMETRY_STREAM: (),  # everything in the stream: a multi-subject filter makes the server ~3x slower to deliver
    DERIVED_STREAM: ("sw.agg.>", "sw.alerts.>", "sw.trust.>", "sw.health.>"),
}
DEFAULT_FLUSH_INTERVAL_S = 2.0
DEFAULT_MAX_RECORDS = 50_000  # rows per flush: the segment size limit
DEFAULT_MAX_PENDING_MSGS = 10_000  # unacked messages per consumer
DEFAULT_ACK_WAIT_S = 60.0
DEFAULT_RETENTION_INTERVAL_S = 3600.0
DEFAULT_COMPACT_INTERVAL_S = 3600.0
DEFAULT_SELF_METRICS_INTERVAL_S = 10.0
MAX_BACKOFF_S = 30.0
DLQ_PUBLISH_TIMEOUT_S = 5.0
STOP_FLUSH_ATTEMPTS = 3
STOP_TASK_GRACE_S = 5.0  # the longest stop waits for a flush loop or timer to end


class SinkError(RuntimeError):
    """The sink cannot start (missing stream, bad setting)."""


@dataclass(slots=True)
class FileSinkSettings:
    """Settings of one file sink. Times in seconds; ``retention_days=None`` keeps everything."""

    flush_interval_s: float = DEFAULT_FLUSH_INTERVAL_S
    max_records: int = DEFAULT_MAX_RECORDS
    max_pending_msgs: int = DEFAULT_MAX_PENDING_MSGS
    ack_wait_s: float = DEFAULT_ACK_WAIT_S
    retention_days: float | None = None
    retention_interval_s: float = DEFAULT_RETENTION_INTERVAL_S
    compact_interval_s: float | None = DEFAULT_COMPACT_INTERVAL_S  # merge small segments (open day too); None: never
    compact_max_records: int = DEFAULT_COMPACT_MAX_RECORDS
    self_metrics_interval_s: float = DEFAULT_SELF_METRICS_INTERVAL_S
    durable: str | None = None  # default sink-<format>
    subjects: dict[str, tuple[str, ...]] = field(default_factory=lambda: dict(DEFAULT_SUBJECTS))

    def check(self) -> None:
        """Raise ValueError naming the first bad setting."""
        if not self.flush_interval_s > 0:
            raise ValueError(f"flush_interval_s must be > 0, got {self.flush_interval_s!r}")
        if self.max_records < 1:
            raise ValueError(f"max_records must be >= 1, got {self.max_records!r}")
        if self.max_pending_msgs < 8:
            raise ValueError(f"max_pending_msgs must be >= 8, got {self.max_pending_msgs!r}")
        if not self.ack_wait_s > 0:
            raise ValueError(f"ack_wait_s must be > 0, got {self.ack_wait_s!r}")
        if self.retention_days is not None and not self.retention_days > 0:
            raise ValueError(f"retention_days must be > 0 (or None to keep everything), got {self.retention_days!r}")
        if not self.retention_interval_s > 0:
            raise ValueError(f"retention_interval_s must be > 0, got {self.retention_interval_s!r}")
        if self.compact_interval_s is not None and not self.compact_interval_s > 0:
            raise ValueError(f"compact_interval_s must be > 0 (or None for no compaction), got {self.compact_interval_s!r}")
        if self.compact_max_records < 1:
            raise ValueError(f"compact_max_records must be >= 1, got {self.compact_max_records!r}")
        if not self.self_metrics_interval_s > 0:
            raise ValueError(f"self_metrics_interval_s must be > 0, got {self.self_metrics_interval_s!r}")
        if not self.subjects:
            raise ValueError("subjects must name at least one stream")


@dataclass(slots=True)
class FileSinkStats:
    """Counters of one file sink."""

    received: int = 0  # messages delivered (first deliveries)
    redelivered: int = 0  # deliveries of messages already held, skipped
    records: int = 0  # rows written
    segments: int = 0  # segment files written
    flushes: int = 0
    acked_msgs: int = 0
    invalid: int = 0  # undecodable messages sent to the DLQ
    dlq_failed: int = 0  # dead letters that could not be published
    write_errors: int = 0  # failed flushes (retried)
    resets: int = 0  # consumer repositionings after a delivery gap
    retention_deleted: int = 0  # date partitions removed
    compacted: int = 0  # small segments merged into larger ones
    expired: int = 0  # messages older than the retention window, acked without writing


class _Buffer:
    """Messages consumed since the last ack, grouped by (kind, date, cluster)."""

    __slots__ = ("parts", "msgs", "rows", "last_msg", "last_seq", "since")

    def __init__(self) -> None:
        self.parts: dict[tuple[str, str, str], list[dict[str, Any]]] = {}  # rows per partition
        self.msgs = 0
        self.rows = 0
        self.last_msg: Msg | None = None
        self.last_seq = 0
        self.since = 0.0

    def note(self, msg: Msg, seq: int) -> None:
        if self.msgs == 0:
            self.since = time.monotonic()
        self.msgs += 1
        self.last_msg = msg
        self.last_seq = seq

    def add(self, key: tuple[str, str, str], rows: list[dict[str, Any]]) -> None:
        p = self.parts.get(key)
        if p is None:
            self.parts[key] = rows
        else:
            p.extend(rows)
        self.rows += len(rows)

    def absorb(self, newer: _Buffer) -> None:
        """Append a later buffer (after a failed flush, to retry both at once)."""
        for key, rows in newer.parts.items():
            self.add(key, rows)
        if newer.msgs:
            self.msgs += newer.msgs
            self.last_msg = newer.last_msg
            self.last_seq = newer.last_seq


def _chunks(rows: list[dict[str, Any]], max_rows: int) -> list[list[dict[str, Any]]]:
    """Split rows into segments of about ``max_rows``, never splitting one message's rows."""
    if len(rows) <= max_rows:
        return [rows] if rows else []
    out: list[list[dict[str, Any]]] = []
    start = 0
    while start < len(rows):
        end = min(start + max_rows, len(rows))
        while end < len(rows) and rows[end]["_seq"] == rows[end - 1]["_seq"]:
            end += 1
        out.append(rows[start:end])
        start = end
    return out


def _consumer_seq(reply: str) -> int:
    t = reply.split(".")
    return int(t[6]) if len(t) == 9 else int(t[8])


class _Lane:
    """One stream's consumer and buffer."""

    def __init__(self, stream: str, subjects: Sequence[str]) -> None:
        self.stream = stream
        self.subjects = list(subjects)
        self.puller: JetStreamPuller | None = None
        self.buf = _Buffer()
        self.lock = asyncio.Lock()
        self.wake = asyncio.Event()
        self.max_seen = 0  # highest stream seq consumed (buffered, being written or acked)
        self.acked_seq = 0  # highest stream seq written and acked
        self.last_cseq = 0  # consumer delivery seq of the last delivery
        self.resetting = False
        self.task: asyncio.Task[None] | None = None


class FileSink:
    """Stores TELEMETRY and DERIVED messages as partitioned files of one format (``json`` or ``parquet``).

    ``await sink.start()`` then ``await sink.stop()``; ``stop`` writes and acks
    everything received, so an orderly shutdown loses and repeats nothing.
    """

    def __init__(self, nc: NATS, root: str | Path, fmt: str = "json", settings: FileSinkSettings | None = None) -> None:
        self.settings = settings or FileSinkSettings()
        self.settings.check()
        self.format: SegmentFormat = get_format(fmt)
        self.nc = nc
        self.js = nc.jetstream()
        self.root = Path(root)
        self.durable = self.settings.durable or f"sink-{self.format.name}"
        self.stage = f"sink-{self.format.name}"
        self.stats = FileSinkStats()
        self._lanes = [_Lane(s, subs) for s, subs in self.settings.subjects.items()]
        self._tasks: list[asyncio.Task[None]] = []
        self._started = False
        self._flush_msgs = max(1, self.settings.max_pending_msgs * 3 // 4)
        self._oldest_kept_date: str | None = None  # date partitions before this one are past retention

    @property
    def base(self) -> Path:
        """The directory this sink writes: ``<root>/<format>``."""
        return self.root / self.format.name

    # ---------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        """Check the streams, clean temp files, apply retention, position the consumers, start pulling."""
        if self._started:
            return
        for lane in self._lanes:
            try:
                await self.js.stream_info(lane.stream)
            except NotFoundError:
                raise SinkError(
                    f"stream {lane.stream!r} does not exist on the NATS server; create the streams first "
                    "(swarmwatch up, or swarmwatch.streams.ensure_streams)"
                ) from None
        self.base.mkdir(parents=True, exist_ok=True)
        removed = await asyncio.to_thread(remove_temp_files, self.base)
        if removed:
            log.info("%s: removed %d temp files left by an earlier crash", self.stage, removed)
        await self._retention_once()
        try:
            await self._start_lanes()
        except BaseException:
            for lane in self._lanes:
                if lane.task is not None:
                    lane.task.cancel()
                    lane.task = None
                if lane.puller is not None:
                    await lane.puller.stop()
            raise
        self._tasks = [
            asyncio.create_task(self._retention_loop(), name=f"{self.stage}-retention"),
            asyncio.create_task(self._self_metrics_loop(), name=f"{self.stage}-self-metrics"),
        ]
        if self.settings.compact_interval_s is not None:
            self._tasks.append(asyncio.create_task(self._compact_loop(), name=f"{self.stage}-compaction"))
        self._started = True
        log.info("%s started: writing %s under %s", self.stage, ", ".join(l.stream for l in self._lanes), self.base)

    async def _start_lanes(self) -> None:
        for lane in self._lanes:
            batch = max(1, self.settings.max_pending_msgs // 4)
            lane.puller = JetStreamPuller(
                self.nc,
                lane.stream,
                self.durable,
                lane.subjects,
                lambda m, lane=lane: self._on_msg(lane, m),
                batch=batch,
                ack_wait_s=self.settings.ack_wait_s,
                max_ack_pending=self.settings.max_pending_msgs,
            )
            await self._position(lane, force=False)
            await lane.puller.start()
            lane.task = asyncio.create_task(self._flush_loop(lane), name=f"{self.stage}-{lane.stream}-flush")

    async def stop(self) -> None:
        """Stop pulling, write and ack everything buffered, stop the timers."""
        if not self._started:
            return
        self._started = False
        for t in self._tasks:
            t.cancel()
        for lane in self._lanes:
            if lane.puller is not None:
                await lane.puller.stop()
            if lane.task is not None:
                await stop_task(lane.task, STOP_TASK_GRACE_S, f"{self.stage} flush loop")
                lane.task = None
        for t in self._tasks:
            await stop_task(t, STOP_TASK_GRACE_S, t.get_name())
        self._tasks = []
        for lane in self._lanes:
            for attempt in range(STOP_FLUSH_ATTEMPTS):
                if await self._flush(lane):
                    break
                await asyncio.sleep(0.2 * (attempt + 1))
            else:
                log.error("%s: could not write %d buffered messages of %s at stop; they stay unacked and "
                          "will be redelivered", self.stage, lane.buf.msgs, lane.stream)
        with contextlib.suppress(Exception):
            await self.nc.flush(timeout=5)
        log.info("%s stopped: %s", self.stage, self.stats)

    async def __aenter__(self) -> FileSink:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def flush(self) -> bool:
        """Write and ack everything buffered now. False if a write failed (it is retried later)."""
        ok = True
        for lane in self._lanes:
            ok = await self._flush(lane) and ok
        return ok

    # ---------------------------------------------------------------- input

    async def _on_msg(self, lane: _Lane, msg: Msg) -> None:
        if lane.resetting:
            return
        seq = ack_tokens(msg.reply)[0]
        cseq = _consumer_seq(msg.reply)
        if cseq > lane.last_cseq + 1:
            log.warning("%s: delivery gap on %s (consumer seq %d after %d); repositioning after seq %d",
                        self.stage, lane.stream, cseq, lane.last_cseq, lane.acked_seq)
            lane.resetting = True
            self._tasks.append(asyncio.create_task(self._reset(lane), name=f"{self.stage}-{lane.stream}-reset"))
            return
        lane.last_cseq = cseq
        if seq <= lane.max_seen:  # a redelivery of something already held; keep its fresh reply for the ack
            self.stats.redelivered += 1
            if lane.buf.last_seq == seq:
                lane.buf.last_msg = msg
            return
        lane.max_seen = seq
        self.stats.received += 1
        try:
            kind, ts, cluster, rows = message_rows(msg.subject, msg.data, seq)
        except DecodeError as exc:
            await self._dead(lane, msg, seq, str(exc))
        else:
            date = utc_date(ts)
            if self._oldest_kept_date is not None and date < self._oldest_kept_date:
                self.stats.expired += 1  # retention would delete it at once
            else:
                lane.buf.add((kind, date, cluster), rows)
        lane.buf.note(msg, seq)
        if lane.buf.rows >= self.settings.max_records or lane.buf.msgs >= self._flush_msgs:
            lane.wake.set()

    async def _dead(self, lane: _Lane, msg: Msg, seq: int, reason: str) -> None:
        """Publish an undecodable message to ``sw.dlq.sink-<format>`` (counted; never stops the sink)."""
        self.stats.invalid += 1
        log.warning("%s: dead letter from %s seq %d: %s", self.stage, msg.subject, seq, reason)
        dl = DeadLetter.of(self.stage, msg.subject, reason, msg.data)
        try:
            await self.js.publish(
                dlq_subject(self.stage),
                encode(dl),
                timeout=DLQ_PUBLISH_TIMEOUT_S,
                headers={"Nats-Msg-Id": f"dlq:{self.stage}:{lane.stream}:{seq}"},
            )
        except Exception as exc:
            self.stats.dlq_failed += 1
            log.error("%s: could not publish dead letter for %s seq %d: %s", self.stage, msg.subject, seq, exc)

    # ---------------------------------------------------------------- output

    async def _flush_loop(self, lane: _Lane) -> None:
        backoff = 0.0
        interval = self.settings.flush_interval_s
        while True:
            buf = lane.buf
            wait = interval if buf.msgs == 0 else max(0.0, interval - (time.monotonic() - buf.since))
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):  # not wait_for: on 3.11 it can swallow stop()'s cancel
                    await lane.wake.wait()
            lane.wake.clear()
            buf = lane.buf
            if buf.msgs == 0:
                continue
            due = (
                buf.rows >= self.settings.max_records
                or buf.msgs >= self._flush_msgs
                or time.monotonic() - buf.since >= interval
            )
            if not due:
                continue
            try:
                ok = await self._flush(lane)
            except Exception:  # never let the flusher die; the buffer is kept and retried
                log.exception("%s: flush of %s failed", self.stage, lane.stream)
                ok = False
            if ok:
                backoff = 0.0
            else:
                backoff = min(MAX_BACKOFF_S, max(0.5, backoff * 2))
                await asyncio.sleep(backoff)

    async def _flush(self, lane: _Lane) -> bool:
        # shielded: a cancelled caller must not abandon a write half-way and lose its buffer
        return await asyncio.shield(self._flush_locked(lane))

    async def _flush_locked(self, lane: _Lane) -> bool:
        async with lane.lock:
            buf = lane.buf
            if buf.msgs == 0:
                return True
            lane.buf = _Buffer()
            try:
                files = await asyncio.to_thread(self._write, buf)
            except Exception as exc:
                buf.absorb(lane.buf)
                lane.buf = buf
                self.stats.write_errors += 1
                log.error("%s: writing %d rows of %s under %s failed (%s); not acked, will retry",
                          self.stage, buf.rows, lane.stream, self.base, exc)
                return False
            assert buf.last_msg is not None
            if lane.puller is not None:
                try:
                    await lane.puller.ack(buf.last_msg)
                except Exception as exc:  # written but not acked: a redelivery rewrites it, readers dedupe
                    log.warning("%s: ack of %s seq %d failed: %s", self.stage, lane.stream, buf.last_seq, exc)
            lane.acked_seq = max(lane.acked_seq, buf.last_seq)
            self.stats.flushes += 1
            self.stats.segments += files
            self.stats.records += buf.rows
            self.stats.acked_msgs += buf.msgs
            return True

    def _write(self, buf: _Buffer) -> int:
        """Write each partition of ``buf`` as one segment (in a worker thread). Returns the file count."""
        n = 0
        for (kind, date, cluster), part in buf.parts.items():
            d = partition_dir(self.root, self.format.name, kind, date, cluster)
            for rows in _chunks(part, self.settings.max_records):
                path = d / segment_name(kind, rows[0]["_seq"], rows[-1]["_seq"], self.format.ext)
                write_atomic(path, lambda f, kind=kind, rows=rows: self.format.write(f, kind, rows))
                n += 1
        return n

    # ---------------------------------------------------------------- positioning

    async def _position(self, lane: _Lane, *, force: bool) -> None:
        """Make the durable consumer start right after the last written message."""
        assert lane.puller is not None
        try:
            ci = await self.js.consumer_info(lane.stream, self.durable)
        except NotFoundError:
            await lane.puller.ensure(start_seq=lane.acked_seq + 1 if lane.acked_seq else None)
            lane.last_cseq = 0
            lane.max_seen = lane.acked_seq
            return
        floor = max(ci.ack_floor.stream_seq if ci.ack_floor else 0, lane.acked_seq)
        cfg = ci.config
        subjects = set(cfg.filter_subjects or ([cfg.filter_subject] if cfg.filter_subject else []))
        changed = (
            cfg.max_ack_pending != self.settings.max_pending_msgs
            or subjects != set(lane.subjects)
            or abs((cfg.ack_wait or 0) - self.settings.ack_wait_s) > 1e-3
        )
        if force or changed or (ci.num_ack_pending or 0) > 0:
            log.info("%s: repositioning consumer %s on %s at seq %d", self.stage, self.durable, lane.stream, floor + 1)
            await lane.puller.ensure(start_seq=floor + 1, recreate=True)
            lane.last_cseq = 0
        else:
            lane.last_cseq = ci.delivered.consumer_seq if ci.delivered else 0
        lane.max_seen = floor
        lane.acked_seq = floor

    async def _reset(self, lane: _Lane) -> None:
        """After a delivery gap: write what came before it, then restart the consumer after the last ack."""
        self.stats.resets += 1
        try:
            assert lane.puller is not None
            await lane.puller.stop()
            if not await self._flush(lane):
                lane.buf = _Buffer()  # not acked: the repositioned consumer sends it again
            while self._started:
                try:
                    await self._position(lane, force=True)
                    await lane.puller.start()
                    break
                except Exception as exc:
                    log.warning("%s: repositioning %s failed (%s); retrying", self.stage, lane.stream, exc)
                    await asyncio.sleep(1.0)
        finally:
            lane.resetting = False

    # ---------------------------------------------------------------- retention

    async def _retention_once(self) -> None:
        if self.settings.retention_days is None:
            return
        self._oldest_kept_date = utc_date(time.time() - self.settings.retention_days * 86_400.0)
        try:
            n = await asyncio.to_thread(apply_retention, self.base, self.settings.retention_days)
        except Exception as exc:
            log.error("%s: retention under %s failed: %s", self.stage, self.base, exc)
            return
        self.stats.retention_deleted += n

    def self_samples(self) -> list[Sample]:
        """This sink's counters as samples (``swarmwatch.sink.*``, labelled with the format)."""
        lab = {"format": self.format.name}
        return [
            Sample(f"swarmwatch.sink.{k}", float(getattr(self.stats, k)), labels=lab)
            for k in FileSinkStats.__dataclass_fields__
        ]

    async def _self_metrics_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.self_metrics_interval_s)
            try:
                batch = MetricBatch(cluster="swarmwatch", node=self.stage, ts=time.time(), samples=self.self_samples())
                await self.nc.publish(self_metrics_subject(self.stage), encode(batch))
            except Exception as exc:
                log.debug("%s: self metrics not published: %s", self.stage, exc)

    async def _retention_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.retention_interval_s)
            await self._retention_once()

    async def compact_once(self, before_date: str | None = None, *, open_day: bool = True) -> int:
        """Merge small segments: of every day, the open one included (default), or of days before ``before_date``.

        Returns how many segments were merged away.
        """
        try:
            n = await asyncio.to_thread(
                compact, self.root, self.format.name, before_date=before_date,
                max_records=self.settings.compact_max_records, open_day=open_day and before_date is None,
            )
        except Exception as exc:
            log.error("%s: compaction under %s failed: %s", self.stage, self.base, exc)
            return 0
        self.stats.compacted += n
        return n

    async def _compact_loop(self) -> None:
        assert self.settings.compact_interval_s is not None
        await asyncio.sleep(min(60.0, self.settings.compact_interval_s))
        while True:
            await self.compact_once()
            await asyncio.sleep(self.settings.compact_interval_s)


async def start_file_sinks(
    nc: NATS,
    root: str | Path,
    formats: Sequence[str] = ("json", "parquet"),
    settings: FileSinkSettings | None = None,
) -> list[FileSink]:
    """Start one :class:`FileSink` per format under ``root``; stop each with ``await sink.stop()``."""
    sinks: list[FileSink] = []
    try:
        for fmt in formats:
            s = FileSink(nc, root, fmt, FileSinkSettings(**_settings_dict(settings)) if settings else None)
            await s.start()
            sinks.append(s)
    except BaseException:
        for s in sinks:
            await s.stop()
        raise
    return sinks


def _settings_dict(s: FileSinkSettings) -> dict[str, Any]:
    return {f: getattr(s, f) for f in FileSinkSettings.__dataclass_fields__}


async def run_file_sinks(
    nc: NATS,
    root: str | Path,
    formats: Sequence[str] = ("json", "parquet"),
    settings: FileSinkSettings | None = None,
    stop: asyncio.Event | None = None,
) -> FileSinkStats:
    """Run file sinks until ``stop`` is set or the task is cancelled; then flush and ack everything.

    Returns the summed stats of the sinks.
    """
    sinks = await start_file_sinks(nc, root, formats, settings)
    try:
        if stop is None:
            await asyncio.Event().wait()
        else:
            await stop.wait()
    finally:
        for s in sinks:
            await s.stop()
    total = FileSinkStats()
    for s in sinks:
        for f in FileSinkStats.__dataclass_fields__:
            setattr(total, f, getattr(total, f) + getattr(s.stats, f))
    return total
