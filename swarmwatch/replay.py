"""Replay stored telemetry through operators: what would these rules have fired, when, and how many pages?

The inputs come from the TELEMETRY stream while it still holds the range
(a pull consumer without acks that is deleted afterwards) and from the file
sinks' store after that; :func:`replay` takes any iterable of messages, so an
incident bundle replays the same way. Operators run through the same
:class:`~processors.dispatch.Dispatcher` as the live processor, on a clock
driven by event time (the newest event time seen so far), so a replay of the
same input with the same rules gives the same alerts, with the same ids.

Outputs never reach live subjects: they are collected into a
:class:`ReplayResult` (and :class:`ReplayReport`, which sets what fired then
next to what would fire now), and published, if asked, only under
``replay.<id>.`` on core NATS, which no stream stores.
"""
from __future__ import annotations

import asyncio
import fnmatch
import math
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson

from processors.dispatch import DispatchStats, Dispatcher, decode_message
from processors.operator import Emit, Operator
from schemas import Alert, AlertKind, AlertStatus, DecodeError, Event, MetricBatch, Sample, Severity, decode

TELEMETRY_STREAM = "TELEMETRY"
DERIVED_STREAM = "DERIVED"
REPLAY_PREFIX = "replay"
STORE_CHUNK_S = 600.0  # the store is read ten minutes of event time at a time (bounded memory)
STREAM_IDLE_S = 2.0  # the stream is done when nothing arrives for this long
LATE_MARGIN_S = 30.0  # stored time may trail event time by this much (see the runtime's replay margin)
ARRIVAL_MARGIN_S = 3600.0  # the stream is read until messages stored this long after ``until`` (spooled backlogs arrive late)
PROGRESS_EVERY = 2000  # items between progress updates
CONSUMER_INACTIVE_S = 60.0  # a replay's consumer left by a dead process is removed by the server after this

ReplayItem = MetricBatch | Event
Progress = Callable[[float, int], None]  # (event time reached, items so far)


class _Stopped(Exception):
    """The caller's stop event was set mid-replay."""


class ReplayError(ValueError):
    """A replay that cannot run as asked (the message says why and what to do)."""


# ---------------------------------------------------------------------------- result


@dataclass(slots=True)
class Fired:
    """One alert message and the processor-clock time it was (or would have been) sent."""

    at: float
    alert: Alert


@dataclass(slots=True)
class ReplayResult:
    """What a replay fed and what came out of it."""

    since: float | None
    until: float | None
    source: str
    items: int = 0
    skipped: int = 0  # outside the range or the cluster/node filter
    invalid: int = 0
    first_ts: float | None = None
    last_ts: float | None = None
    seconds: float = 0.0  # wall time
    alerts: list[Fired] = field(default_factory=list)
    outputs: dict[str, int] = field(default_factory=dict)  # Emits by subject family (agg, alerts, ...)
    stats: DispatchStats = field(default_factory=DispatchStats)

    @property
    def speedup(self) -> float:
        """Event time covered per wall second (how many times faster than real time)."""
        if self.first_ts is None or self.last_ts is None or self.seconds <= 0:
            return 0.0
        return (self.last_ts - self.first_ts) / self.seconds


class Replayer:
    """Feeds items to operators on an event-time clock and collects what they emit.

    ``on_emit(emit, now)`` is called for every output (e.g. to publish it under
    ``replay.<id>.``). Items outside [since, until) or the cluster/node globs
    are skipped and counted.
    """

    def __init__(
        self,
        operators: Sequence[Operator],
        *,
        since: float | None = None,
        until: float | None = None,
        cluster: str | None = None,
        node: str | None = None,
        source: str = "messages",
        on_emit: Callable[[Emit, float], None] | None = None,
    ) -> None:
        self.dispatch = Dispatcher(operators)
        self.result = ReplayResult(since, until, source, stats=self.dispatch.stats)
        self.since = since
        self.until = until
        self.cluster = cluster
        self.node = node
        self.on_emit = on_emit
        self.now = 0.0
        self._t0 = time.perf_counter()
        self._finished = False

    def accepts(self, item: ReplayItem) -> bool:
        ts = item.ts
        if self.since is not None and ts < self.since:
            return False
        if self.until is not None and ts >= self.until:
            return False
        if self.cluster is not None and not fnmatch.fnmatchcase(item.cluster, self.cluster):
            return False
        return self.node is None or fnmatch.fnmatchcase(item.node, self.node)

    def feed(self, item: ReplayItem) -> None:
        """One decoded input, in stream order."""
        r = self.result
        if not self.accepts(item):
            r.skipped += 1
            return
        r.items += 1
        ts = item.ts
        if r.first_ts is None:
            r.first_ts = ts
        if ts > self.now:
            self.now = ts
            r.last_ts = ts
            self._collect(self.dispatch.tick(ts)[0])
        self._collect(self.dispatch.dispatch(item, self.now)[0])

    def feed_raw(self, subject: str, data: bytes) -> ReplayItem | None:
        """One TELEMETRY message as bytes; invalid ones are counted and skipped."""
        try:
            item = decode_message(subject, data)
        except DecodeError:
            self.result.invalid += 1
            self.dispatch.stats.invalid += 1
            return None
        self.feed(item)
        return item

    def finish(self) -> ReplayResult:
        """Flush the operators (no more input) and return the result."""
        if not self._finished:
            self._finished = True
            self._collect(self.dispatch.flush(self.now)[0])
            self.result.seconds = time.perf_counter() - self._t0
        return self.result

    def _collect(self, emits: list[Emit]) -> None:
        if not emits:
            return
        now = self.now
        out = self.result.outputs
        for e in emits:
            fam = e.subject.split(".", 2)[1] if e.subject.count(".") >= 1 else e.subject
            out[fam] = out.get(fam, 0) + 1
            if isinstance(e.message, Alert):
                self.result.alerts.append(Fired(now, e.message))
            if self.on_emit is not None:
                self.on_emit(e, now)


def replay(
    messages: Iterable[ReplayItem | tuple[str, bytes]],
    operators: Sequence[Operator],
    *,
    since: float | None = None,
    until: float | None = None,
    cluster: str | None = None,
    node: str | None = None,
    source: str = "messages",
    on_emit: Callable[[Emit, float], None] | None = None,
    progress: Progress | None = None,
) -> ReplayResult:
    """Run ``operators`` over ``messages`` (decoded items or ``(subject, bytes)`` pairs) as fast as possible.

    The messages must be in stream (arrival) order; the result holds every
    alert with the event time it was emitted at. This is the entry point for
    other readers too (an incident bundle, a file of messages).
    """
    rp = Replayer(operators, since=since, until=until, cluster=cluster, node=node, source=source, on_emit=on_emit)
    n = 0
    for m in messages:
        if isinstance(m, tuple):
            rp.feed_raw(m[0], m[1])
        else:
            rp.feed(m)
        n += 1
        if progress is not None and n % PROGRESS_EVERY == 0:
            progress(rp.now, n)
    res = rp.finish()
    if progress is not None:
        progress(rp.now, n)
    return res


# ---------------------------------------------------------------------------- the store


def _labels(v: Any) -> dict[str, str] | None:
    return dict(v) if v else None


def store_items(
    root: str | Path,
    since: float,
    until: float,
    *,
    cluster: str | None = None,
    node: str | None = None,
    metrics: set[str] | None = None,
    chunk_s: float = STORE_CHUNK_S,
) -> Iterator[ReplayItem]:
    """MetricBatches and Events rebuilt from the file sinks' store, in (event time, stream seq) order.

    Reads ``chunk_s`` of event time at a time, so memory holds one chunk.
    ``cluster``/``node`` are exact names (globs are filtered by the caller).
    ``metrics``: only samples of these names are read (what the operators
    look at; None means all), which is what makes a what-if over days fast.
    Samples of one batch come back in stored order, which compaction sorts by
    series, so several alerts of one batch may come out in another order.
    """
    from concurrent.futures import ThreadPoolExecutor

    exact_cluster = cluster if cluster and not any(c in cluster for c in "*?[") else None
    exact_node = node if node and not any(c in node for c in "*?[") else None

    chunks: list[tuple[float, float]] = []
    t = since
    while t < until:
        chunks.append((t, min(until, t + chunk_s)))
        t = chunks[-1][1]
    # the next chunk is scanned (Arrow, mostly outside the GIL) while this one runs through the operators
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="replay-read")
    try:
        ahead = pool.submit(_parquet_table, root, *chunks[0], exact_cluster, exact_node, metrics) if chunks else None
        for k, (t, end) in enumerate(chunks):
            table = ahead.result() if ahead is not None else None
            ahead = pool.submit(_parquet_table, root, *chunks[k + 1], exact_cluster, exact_node, metrics) if k + 1 < len(chunks) else None
            yield from _chunk_items(root, t, end, exact_cluster, exact_node, metrics, table)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _chunk_items(
    root: str | Path, t: float, end: float, exact_cluster: str | None, exact_node: str | None, metrics: set[str] | None, table: Any | None
) -> Iterator[ReplayItem]:
    """One chunk's metric batches (from ``table``, or the row reader when it is None) and events, in order."""
    from sinks.reader import iter_records

    items = _batches_from_table(table) if table is not None else None
    if items is None:  # JSON lines, or segments that overlap (a crash rewrote some): the row reader dedupes
        parts: dict[int, tuple[str, str, float, list[Sample]]] = {}
        for row in iter_records(root, "metrics", since=t, until=end, cluster=exact_cluster, node=exact_node):
            if metrics is not None and row["metric"] not in metrics:
                continue
            seq = row["_seq"]
            p = parts.get(seq)
            if p is None:
                p = parts[seq] = (row["cluster"], row["node"], float(row["ts"]), [])
            p[3].append(Sample(row["metric"], float(row["value"]), row.get("unit") or None, _labels(row.get("labels"))))
        items = [(p[2], seq, MetricBatch(p[0], p[1], p[2], p[3])) for seq, p in parts.items()]
    for row in iter_records(root, "events", since=t, until=end, cluster=exact_cluster, node=exact_node):
        payload = row.get("payload")
        if isinstance(payload, (str, bytes)):
            payload = orjson.loads(payload)
        ev = Event(row["cluster"], row["node"], float(row["ts"]), row["kind"], payload or {})
        items.append((ev.ts, row["_seq"], ev))
    items.sort(key=lambda x: (x[0], x[1]))
    for _, _, item in items:
        yield item


_DICT_COLUMNS = {"cluster", "node", "metric", "unit"}


def _parquet_table(
    root: str | Path, since: float, until: float, cluster: str | None, node: str | None, metrics: set[str] | None
) -> Any | None:
    """Metric rows of [since, until) as one Arrow table sorted by stream seq; None when the fast path does not apply."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.dataset as ds

    from sinks.parquet import LEGACY_SCHEMAS, SCHEMAS, file_layout, seconds_to_ns, to_row_layout, TIMESTAMP_TYPE
    from sinks.reader import available_format
    from sinks.rows import utc_date
    from sinks.segments import list_segments

    if available_format(root, "metrics") != "parquet":
        return None
    segs = list_segments(Path(root), "parquet", "metrics", first_date=utc_date(since), last_date=utc_date(until), cluster=cluster)
    hi: dict[tuple[str, str], int] = {}
    for sg in segs:  # sorted by date, cluster, first seq
        k = (sg.date, sg.cluster)
        if sg.first_seq <= hi.get(k, -1):
            return None
        hi[k] = sg.last_seq
    by_layout: dict[int, list[str]] = {}
    for sg in segs:
        by_layout.setdefault(file_layout(sg.path), []).append(str(sg.path))
    tables = []
    # the repetitive string columns are read as dictionaries (what Parquet stores): half the scan's CPU;
    # to_row_layout casts them back to plain strings, after the metric filter
    fmt = ds.ParquetFileFormat(read_options=ds.ParquetReadOptions(dictionary_columns=_DICT_COLUMNS))
    for layout, paths in sorted(by_layout.items()):
        plain = SCHEMAS["metrics"] if layout >= 2 else LEGACY_SCHEMAS["metrics"]
        schema = pa.schema(
            [pa.field(f.name, pa.dictionary(pa.int32(), f.type), f.nullable) if f.name in _DICT_COLUMNS else f for f in plain],
            metadata=plain.metadata,
        )

        def bound(v: float, layout: int = layout) -> Any:
            return pa.scalar(int(seconds_to_ns([v])[0].value), TIMESTAMP_TYPE) if layout >= 2 else v

        expr = (ds.field("ts") >= bound(since)) & (ds.field("ts") < bound(until))
        if node is not None:
            expr = expr & (ds.field("node") == node)
        t = ds.dataset(paths, format=fmt, schema=schema).to_table(filter=expr)
        if metrics is not None:  # after the scan: a pushed-down string filter costs more than it saves here
            t = t.filter(pc.is_in(t["metric"], value_set=pa.array(sorted(metrics), type=pa.string())))
        tables.append(to_row_layout("metrics", t))
    if not tables:
        return pa.table({})
    return pa.concat_tables(tables).sort_by([("_seq", "ascending")])


def _batches_from_table(table: Any) -> list[tuple[float, int, ReplayItem]]:
    """(event time, seq, MetricBatch) per message from a table of :func:`_parquet_table`."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    n = table.num_rows
    if n == 0:
        return []
    seq = table["_seq"].to_numpy()
    starts = np.flatnonzero(np.diff(seq)) + 1
    bounds = [0, *starts.tolist(), n]
    firsts = pa.array(bounds[:-1], type=pa.int64())
    ts = pc.take(table["ts"], firsts).to_pylist()
    clusters = pc.take(table["cluster"], firsts).to_pylist()
    nodes = pc.take(table["node"], firsts).to_pylist()
    seqs = seq[bounds[:-1]].tolist()
    names = table["metric"].to_pylist()
    values = table["value"].to_pylist()
    units = table["unit"].to_pylist()
    labels = _label_dicts(table["labels"])
    out: list[tuple[float, int, ReplayItem]] = []
    for i in range(len(bounds) - 1):
        a, b = bounds[i], bounds[i + 1]
        samples = [
            Sample(names[k], values[k], units[k] or None, labels[k]) for k in range(a, b)
        ]
        out.append((ts[i], seqs[i], MetricBatch(clusters[i], nodes[i], ts[i], samples)))
    return out


def _label_dicts(col: Any) -> list[dict[str, str] | None]:
    """A map<string, string> column as one dict (or None when empty) per row.

    Rows are grouped by their entries' dictionary codes (numpy), one dict is built
    per distinct label set and each row gets its own copy of it.
    """
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    arr = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    n = len(arr)
    if arr.null_count == n:
        return [None] * n
    offsets = arr.offsets.to_numpy(zero_copy_only=False)
    lens = np.diff(offsets)
    if arr.null_count:
        lens = np.where(arr.is_valid().to_numpy(zero_copy_only=False), lens, 0)
    kenc = pc.dictionary_encode(arr.keys)
    ienc = pc.dictionary_encode(arr.items)
    kcodes = kenc.indices.to_numpy(zero_copy_only=False).astype(np.int64)
    icodes = pc.fill_null(ienc.indices, -1).to_numpy(zero_copy_only=False).astype(np.int64)
    kdict = kenc.dictionary.to_pylist()
    idict = ienc.dictionary.to_pylist()
    ids = np.full(n, -1, dtype=np.int64)  # index into protos per row, -1: no labels
    protos: list[dict[str, str]] = []
    for width in np.unique(lens).tolist():
        if width == 0:
            continue
        rows = np.flatnonzero(lens == width)
        pos = offsets[rows][:, None] + np.arange(width)
        codes = np.concatenate([kcodes[pos], icodes[pos]], axis=1)
        radix = len(kdict) * (len(idict) + 1)
        if radix**width < 2**62:  # one int64 per row: a 1-d unique is much cheaper than unique(axis=0)
            pair = kcodes[pos] * (len(idict) + 1) + (icodes[pos] + 1)
            flat = pair @ (radix ** np.arange(width, dtype=np.int64))
            _, first, inverse = np.unique(flat, return_index=True, return_inverse=True)
            uniq = codes[first]
        else:
            uniq, inverse = np.unique(codes, axis=0, return_inverse=True)
        ids[rows] = np.asarray(inverse).reshape(-1) + len(protos)
        for u in uniq.tolist():
            protos.append(dict(zip((kdict[c] for c in u[:width]), (None if c < 0 else idict[c] for c in u[width:]))))
    return [None if j < 0 else dict(protos[j]) for j in ids.tolist()]


def metrics_wanted(operators: Sequence[Operator]) -> set[str] | None:
    """The metric names the operators look at, when every one of them says (threshold rules with exact names); else None."""
    from processors.rules import ThresholdRules

    names: set[str] = set()
    for op in operators:
        if not op.wants_metrics:
            continue
        if isinstance(op, ThresholdRules):
            for r in op.rules:
                if any(c in r.metric for c in "*?["):
                    return None
                names.add(r.metric)
            continue
        got = op.metrics_wanted()
        if got is None:
            return None
        names |= set(got)
    return names


def store_alerts(root: str | Path, since: float, until: float, cluster: str | None = None) -> list[Fired]:
    """Alerts the live processors stored (what fired then), from the file sinks' store."""
    from sinks.reader import read_records

    out: list[Fired] = []
    seen: set[tuple[str, str]] = set()
    for row in read_records(root, "alerts", since=since, until=until, cluster=cluster):
        if (row["id"], row["status"]) in seen:
            continue
        seen.add((row["id"], row["status"]))
        details = row.get("details")
        if isinstance(details, (str, bytes)):
            details = orjson.loads(details)
        a = Alert(
            id=row["id"], status=AlertStatus(row["status"]), severity=Severity(row["severity"]), kind=AlertKind(row["kind"]), rule=row["rule"],
            cluster=row["cluster"], node=row["node"], started_at=row["started_at"], ended_at=row.get("ended_at"),
            summary=row.get("summary") or "", metric=row.get("metric"), value=row.get("value"),
            threshold=row.get("threshold"), details=details or {},
        )
        out.append(Fired(float(row["ts"]), a))
    return out


def store_holds_alerts(root: str | Path) -> bool:
    """Whether the store keeps alerts at all (a sink that stored none cannot say what fired then)."""
    from sinks.reader import available_format

    return available_format(root, "alerts") is not None


def store_range(root: str | Path) -> tuple[float, float] | None:
    """(first, last) event time of the metrics the store holds, from its date partitions (whole UTC days)."""
    from sinks.reader import available_format
    from sinks.segments import date_dirs

    fmt = available_format(root, "metrics")
    if fmt is None:
        return None
    days = sorted(d for d, _ in date_dirs(Path(root), fmt, "metrics"))
    if not days:
        return None
    first = datetime.fromisoformat(days[0] + "T00:00:00+00:00").timestamp()
    last = datetime.fromisoformat(days[-1] + "T00:00:00+00:00").timestamp() + 86400.0
    return first, last


# ---------------------------------------------------------------------------- JetStream


def _parse_rfc3339(s: str) -> float:
    """UNIX seconds from the server's RFC 3339 time (nanosecond fractions allowed)."""
    s = s.replace("Z", "+00:00")
    if "." in s:
        head, rest = s.split(".", 1)
        i = next((k for k, ch in enumerate(rest) if not ch.isdigit()), len(rest))
        s = f"{head}.{rest[:i][:6]}{rest[i:]}"
    return datetime.fromisoformat(s).timestamp()


async def stream_first_time(nc: Any, stream: str) -> tuple[float | None, int]:
    """(time of the oldest message the stream holds or None if empty, its last sequence)."""
    info = await _stream_state(nc, stream)
    if not info.get("messages"):
        return None, int(info.get("last_seq", 0))
    return _parse_rfc3339(info["first_ts"]), int(info["last_seq"])


async def _stream_state(nc: Any, stream: str) -> dict[str, Any]:
    resp = await nc.request(f"$JS.API.STREAM.INFO.{stream}", b"", timeout=5)
    info = orjson.loads(resp.data)
    if "error" in info:
        raise ReplayError(f"stream {stream} is not available: {info['error'].get('description', info['error'])}")
    return dict(info.get("state", {}))


async def stream_holds(nc: Any, stream: str, since: float) -> bool | None:
    """Whether ``stream`` still holds everything stored from ``since`` on; None if it is empty.

    True when nothing was ever removed (its first sequence is 1) or its oldest
    message was stored at or before ``since``.
    """
    st = await _stream_state(nc, stream)
    if not st.get("messages"):
        return None
    return int(st.get("first_seq", 0)) <= 1 or _parse_rfc3339(st["first_ts"]) <= since


Handler = Callable[[str, bytes, int, float], Awaitable[None]]


async def consume_stream(
    nc: Any,
    stream: str,
    since: float,
    until: float,
    handler: Handler,
    *,
    filter_subject: str | None = None,
    idle_s: float = STREAM_IDLE_S,
    arrival_margin_s: float = ARRIVAL_MARGIN_S,
) -> int:
    """Call ``handler(subject, data, stream seq, stored time)`` for each message stored from ``since`` on.

    Stops at the last message stored when it starts, after ``idle_s`` with
    nothing new, or at messages stored ``arrival_margin_s`` after ``until``
    (anything later cannot be in the range unless a producer's spool held it
    back longer than that). A pull consumer with no acks, in memory, feeds
    the handler in stream order and is deleted at the end (and expires by
    itself if the process dies), so nothing is left on the server. Returns
    how many messages were handled.
    """
    from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

    from processors.consumer import JetStreamPuller, ack_tokens

    _first, last_seq = await stream_first_time(nc, stream)
    if last_seq == 0:
        return 0
    js = nc.jetstream()
    start = max(0.0, since - LATE_MARGIN_S)
    iso = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(start)) + f".{int((start % 1) * 1e6):06d}Z"
    stop_at = until + arrival_margin_s
    done = asyncio.Event()
    state: dict[str, Any] = {"last": time.monotonic(), "busy": False, "n": 0, "error": None}
    name = f"replay-{uuid.uuid4().hex[:12]}"

    async def on_msg(msg: Any) -> None:
        if done.is_set():
            return
        state["busy"] = True
        try:
            seq, _cseq, _n, stored_ns = ack_tokens(msg.reply)
            stored = stored_ns / 1e9
            if stored >= stop_at:
                done.set()
                return
            await handler(msg.subject, msg.data, seq, stored)
            state["n"] += 1
            if seq >= last_seq:
                done.set()
        except Exception as exc:  # surfaced to the caller below
            state["error"] = exc
            done.set()
        finally:
            state["busy"] = False
            state["last"] = time.monotonic()

    # A pull consumer with no acks, fed by raw next requests kept in flight (processors.consumer):
    # several times faster than a push consumer's flow control when each message costs real work.
    # It expires by itself (inactive_threshold) if this process dies before deleting it.
    cfg = ConsumerConfig(
        name=name,
        durable_name=name,
        ack_policy=AckPolicy.NONE,
        deliver_policy=DeliverPolicy.BY_START_TIME,
        opt_start_time=iso,
        inactive_threshold=CONSUMER_INACTIVE_S,
        mem_storage=True,
        max_waiting=64,
    )
    if filter_subject:
        cfg.filter_subject = filter_subject
    await js.add_consumer(stream, cfg)
    puller = JetStreamPuller(nc, stream, name, [filter_subject] if filter_subject else [], on_msg, ack_policy=AckPolicy.NONE)
    try:
        await puller.start()
        state["last"] = time.monotonic()  # idle from now: creating the consumer can itself take longer than idle_s
        while not done.is_set():
            try:
                await asyncio.wait_for(done.wait(), timeout=min(idle_s, 0.25))
            except (asyncio.TimeoutError, TimeoutError):
                if not state["busy"] and time.monotonic() - state["last"] > idle_s:
                    break
    finally:
        done.set()
        await puller.stop()
        try:
            await js.delete_consumer(stream, name)
        except Exception:
            pass  # gone already; it would expire by itself anyway
    if state["error"] is not None:
        raise state["error"]
    return int(state["n"])


async def stream_alerts(nc: Any, since: float, until: float, cluster: str | None = None, node: str | None = None) -> list[Fired]:
    """Alerts the live processors published (what fired then), from the DERIVED stream."""
    subject = f"sw.alerts.*.{cluster or '*'}.{node or '*'}.*" if cluster or node else "sw.alerts.>"
    if cluster and any(c in cluster for c in "*?["):
        subject = "sw.alerts.>"
    if node and any(c in node for c in "*?["):
        subject = "sw.alerts.>"
    out: list[Fired] = []
    seen: set[tuple[str, str]] = set()

    async def take(_subj: str, data: bytes, _seq: int, stored: float) -> None:
        try:
            a = decode(data, Alert)
        except DecodeError:
            return
        t = a.ended_at if a.status is AlertStatus.RESOLVED and a.ended_at is not None else a.started_at
        if not since <= t < until + LATE_MARGIN_S:
            return
        if cluster and not fnmatch.fnmatchcase(a.cluster, cluster) or node and not fnmatch.fnmatchcase(a.node, node):
            return
        if (a.id, a.status.value) in seen:
            return
        seen.add((a.id, a.status.value))
        out.append(Fired(stored, a))

    await consume_stream(nc, DERIVED_STREAM, since, until, take, filter_subject=subject, idle_s=0.5)
    return out


async def replay_stream(
    nc: Any,
    operators: Sequence[Operator],
    since: float,
    until: float,
    *,
    cluster: str | None = None,
    node: str | None = None,
    speed: float | None = None,
    publish_prefix: str | None = None,
    progress: Progress | None = None,
    stop: asyncio.Event | None = None,
) -> ReplayResult:
    """Replay TELEMETRY from JetStream; ``speed`` N paces event time at N x real time (None: as fast as possible).

    ``publish_prefix`` (``replay.<id>``) publishes every output on core NATS
    under that prefix, never on live subjects.
    """
    pending: list[tuple[str, bytes, str | None]] = []

    def on_emit(e: Emit, now: float) -> None:
        if publish_prefix is not None:
            from schemas import encode

            data = e.message if isinstance(e.message, (bytes, bytearray)) else encode(e.message)
            pending.append((f"{publish_prefix}.{e.subject}", bytes(data), e.msg_id))

    rp = Replayer(operators, since=since, until=until, cluster=cluster, node=node, source="jetstream", on_emit=on_emit)
    filt = None
    if cluster and not any(c in cluster for c in "*?["):
        filt = f"sw.*.{cluster}.>"
    clock = {"wall0": time.monotonic(), "ev0": None, "n": 0}

    async def handle(subject: str, data: bytes, _seq: int, _stored: float) -> None:
        item = rp.feed_raw(subject, data)
        clock["n"] += 1
        if speed is not None and item is not None and since <= item.ts < until:
            if clock["ev0"] is None:
                clock["ev0"] = item.ts
            ahead = (item.ts - clock["ev0"]) / speed - (time.monotonic() - clock["wall0"])
            if ahead > 0.001:
                await asyncio.sleep(ahead)
        if pending:
            for subj, payload, mid in pending:
                await nc.publish(subj, payload, headers={"Nats-Msg-Id": mid} if mid else None)
            pending.clear()
        if progress is not None and clock["n"] % PROGRESS_EVERY == 0:
            progress(rp.now, clock["n"])
        if stop is not None and stop.is_set():
            raise _Stopped

    try:
        await consume_stream(nc, TELEMETRY_STREAM, since, until, handle, filter_subject=filt)
    except _Stopped:
        pass
    n = clock["n"]
    res = rp.finish()
    for subj, payload, mid in pending:
        await nc.publish(subj, payload, headers={"Nats-Msg-Id": mid} if mid else None)
    if publish_prefix is not None:
        await nc.flush()
    if progress is not None:
        progress(rp.now, n)
    return res


# ---------------------------------------------------------------------------- report


@dataclass(slots=True)
class RuleLine:
    """Per rule: firings and first firing then and now."""

    rule: str
    fired_then: int = 0
    fired_now: int = 0
    first_then: float | None = None
    first_now: float | None = None


@dataclass(slots=True)
class ReplayReport:
    """What fired then next to what would fire now, with the pages each would have sent."""

    since: float
    until: float
    source: str
    then_known: bool
    then: list[Fired]
    now: list[Fired]
    pages_then: int | None
    pages_now: int
    result: ReplayResult

    @staticmethod
    def _key(a: Alert) -> tuple[str, str]:
        return (a.id, a.status.value)

    def rules(self) -> list[RuleLine]:
        lines: dict[str, RuleLine] = {}
        for which, fired in (("then", self.then), ("now", self.now)):
            for f in fired:
                if f.alert.status is not AlertStatus.FIRING:
                    continue
                ln = lines.setdefault(f.alert.rule, RuleLine(f.alert.rule))
                if which == "then":
                    ln.fired_then += 1
                    ln.first_then = f.at if ln.first_then is None else min(ln.first_then, f.at)
                else:
                    ln.fired_now += 1
                    ln.first_now = f.at if ln.first_now is None else min(ln.first_now, f.at)
        return sorted(lines.values(), key=lambda ln: (-(ln.fired_now + ln.fired_then), ln.rule))

    def only_now(self) -> list[Fired]:
        then = {self._key(f.alert) for f in self.then}
        return [f for f in self.now if self._key(f.alert) not in then]

    def only_then(self) -> list[Fired]:
        now = {self._key(f.alert) for f in self.now}
        return [f for f in self.then if self._key(f.alert) not in now]

    def to_dict(self) -> dict[str, Any]:
        r = self.result

        def fired(f: Fired) -> dict[str, Any]:
            a = f.alert
            return {
                "at": f.at, "id": a.id, "status": a.status.value, "severity": a.severity.value, "rule": a.rule,
                "cluster": a.cluster, "node": a.node, "series": (a.details or {}).get("series", ""),
                "started_at": a.started_at, "ended_at": a.ended_at, "value": a.value, "summary": a.summary,
            }

        return {
            "since": self.since,
            "until": self.until,
            "source": self.source,
            "inputs": r.items,
            "skipped": r.skipped,
            "invalid": r.invalid,
            "seconds": round(r.seconds, 3),
            "speedup": round(r.speedup, 1),
            "outputs": r.outputs,
            "operators": {k: {"inputs": c.inputs, "outputs": c.outputs, "errors": c.errors} for k, c in r.stats.by_operator.items()},
            "then_known": self.then_known,
            "pages_then": self.pages_then,
            "pages_now": self.pages_now,
            "rules": [
                {"rule": ln.rule, "fired_then": ln.fired_then, "fired_now": ln.fired_now, "first_then": ln.first_then, "first_now": ln.first_now}
                for ln in self.rules()
            ],
            "then": [fired(f) for f in self.then],
            "now": [fired(f) for f in self.now],
            "only_now": [fired(f) for f in self.only_now()],
            "only_then": [fired(f) for f in self.only_then()],
        }


def count_pages(fired: Sequence[Fired], notify: Any | None = None, until: float | None = None) -> int:
    """How many notifications the notify sink's grouping would have sent for these alerts.

    ``notify`` is a NotifyConfig; without one, a single primary channel (so
    warnings and criticals page, info only logs). Silences are not applied.
    """
    from sinks.notify.config import parse_config
    from sinks.notify.grouping import Grouper
    from sinks.notify.routing import Router

    cfg = notify or parse_config({"channels": [{"name": "pager", "url": "json://localhost/", "primary": True}]}, check_urls=False)
    router = Router(cfg)
    grouper = Grouper(cfg.grouping, cfg.flap)
    pages = 0

    def advance(to: float) -> None:
        nonlocal pages
        guard = 0
        while grouper.next_due <= to and guard < 100_000:
            guard += 1
            at = grouper.next_due
            for n in grouper.due(at, lambda a: None):
                pages += 1
                grouper.record(n.channel, n.refs())
            grouper.collect_done(at)

    def settle(at: float) -> None:
        nonlocal pages
        for n in grouper.due(at, lambda a: None):
            pages += 1
            grouper.record(n.channel, n.refs())
        grouper.collect_done(at)

    events = sorted(fired, key=lambda f: f.at)
    for f in events:
        advance(f.at)
        chans = router.channels_for(f.alert)
        if chans:
            grouper.observe(f.alert, chans, f.at)
        settle(f.at)
    if events:
        end = until if until is not None and math.isfinite(until) else events[-1].at
        advance(max(end, events[-1].at))
    return pages
