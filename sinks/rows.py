"""Flattening wire messages into the flat rows that the file sinks store.

Each *kind* of stored record has a fixed column list (the same for JSON lines
and Parquet), a time column that decides its ``date=`` partition (UTC) and a
``cluster`` that decides its ``cluster=`` partition. Every row keeps ``_seq``,
the JetStream stream sequence of the message it came from, so readers can drop
rows that a redelivery wrote twice.

Kinds and their rows:

- ``metrics``: one row per sample of a MetricBatch.
- ``events``: one row per Event (payload kept as an object).
- ``agg``: one row per series of a WindowAggregate.
- ``alerts``, ``trust``, ``health``: one row per message.
"""
from __future__ import annotations

import datetime as _dt
import math
from typing import Any, cast

from schemas.codec import DecodeError, decode, decode_telemetry
from schemas.models import Alert, AlertStatus, Event, HealthScore, MetricBatch, TrustScore, WindowAggregate
from schemas.subjects import check_token

KINDS: tuple[str, ...] = ("metrics", "events", "agg", "alerts", "trust", "health")

# Column types: f64, i64, str, labels (str->str map), json (any JSON value; a string in Parquet).
COLUMNS: dict[str, tuple[tuple[str, str], ...]] = {
    "metrics": (
        ("ts", "f64"), ("cluster", "str"), ("node", "str"), ("metric", "str"), ("labels", "labels"),
        ("value", "f64"), ("unit", "str"), ("_seq", "i64"),
    ),
    "events": (
        ("ts", "f64"), ("cluster", "str"), ("node", "str"), ("kind", "str"), ("payload", "json"), ("_seq", "i64"),
    ),
    "agg": (
        ("window_s", "f64"), ("start", "f64"), ("end", "f64"), ("cluster", "str"), ("node", "str"),
        ("metric", "str"), ("labels", "labels"), ("unit", "str"), ("count", "i64"), ("min", "f64"),
        ("max", "f64"), ("mean", "f64"), ("sum", "f64"), ("p50", "f64"), ("p95", "f64"), ("p99", "f64"),
        ("last", "f64"), ("late", "i64"), ("closed_by", "str"), ("_seq", "i64"),
    ),
    "alerts": (
        ("ts", "f64"), ("id", "str"), ("status", "str"), ("severity", "str"), ("kind", "str"), ("rule", "str"),
        ("cluster", "str"), ("node", "str"), ("started_at", "f64"), ("ended_at", "f64"), ("summary", "str"),
        ("metric", "str"), ("value", "f64"), ("threshold", "f64"), ("details", "json"), ("_seq", "i64"),
    ),
    "trust": (
        ("ts", "f64"), ("cluster", "str"), ("node", "str"), ("round", "i64"), ("trust", "f64"),
        ("suspicion", "f64"), ("evidence", "json"), ("_seq", "i64"),
    ),
    "health": (
        ("ts", "f64"), ("cluster", "str"), ("overall_health", "f64"), ("peer_count", "i64"),
        ("expected_peers", "i64"), ("connection_success_rate", "f64"), ("avg_latency", "f64"),
        ("bandwidth_usage", "f64"), ("components", "json"), ("nodes", "json"), ("_seq", "i64"),
    ),
}

TIME_COLUMN: dict[str, str] = {k: ("start" if k == "agg" else "ts") for k in KINDS}

_FAMILY_TO_KIND = {k: k for k in KINDS}
_SECONDS_PER_DAY = 86_400
_date_cache: dict[int, str] = {}


def check_kind(kind: str) -> str:
    """Return ``kind`` if it is a stored record kind, else raise ValueError naming it."""
    if kind not in COLUMNS:
        raise ValueError(f"unknown record kind {kind!r}; expected one of {', '.join(KINDS)}")
    return kind


def utc_date(ts: float) -> str:
    """``YYYY-MM-DD`` (UTC) of a UNIX timestamp in seconds."""
    day = int(ts // _SECONDS_PER_DAY)
    s = _date_cache.get(day)
    if s is None:
        s = (_dt.date(1970, 1, 1) + _dt.timedelta(days=day)).isoformat()
        if len(_date_cache) > 4096:
            _date_cache.clear()
        _date_cache[day] = s
    return s


def kind_of_subject(subject: str) -> str:
    """The record kind stored for a subject (``sw.metrics.c.n`` -> ``metrics``); DecodeError otherwise."""
    parts = subject.split(".", 2)
    kind = _FAMILY_TO_KIND.get(parts[1]) if len(parts) >= 3 and parts[0] == "sw" else None
    if kind is None:
        raise DecodeError(f"subject {subject!r} has no stored record kind; expected sw.<{'|'.join(KINDS)}>...")
    return kind


def message_rows(subject: str, data: bytes, seq: int) -> tuple[str, float, str, list[dict[str, Any]]]:
    """Decode one message: (kind, event time s, cluster, rows). Raises DecodeError on bad input.

    The cluster and the event time become path components, so they are checked
    here for every kind (derived models do not validate them on decode).
    """
    kind, ts, cluster, rows = _message_rows(subject, data, seq)
    if not isinstance(ts, (int, float)) or not math.isfinite(ts) or ts < 0:
        raise DecodeError(f"{kind} message on {subject!r} has an unusable event time {ts!r}")
    try:
        check_token(cluster, "cluster")
    except ValueError as exc:
        raise DecodeError(str(exc)) from None
    return kind, ts, cluster, rows


def _message_rows(subject: str, data: bytes, seq: int) -> tuple[str, float, str, list[dict[str, Any]]]:
    kind = kind_of_subject(subject)
    if kind == "metrics":
        b = cast(MetricBatch, decode_telemetry(subject, data))
        ts, cl, nd = b.ts, b.cluster, b.node
        rows = [
            {"ts": ts, "cluster": cl, "node": nd, "metric": s.name, "labels": s.labels, "value": s.value,
             "unit": s.unit, "_seq": seq}
            for s in b.samples
        ]
        return kind, ts, cl, rows
    if kind == "events":
        e = cast(Event, decode_telemetry(subject, data))
        row = {"ts": e.ts, "cluster": e.cluster, "node": e.node, "kind": e.kind, "payload": e.payload, "_seq": seq}
        return kind, e.ts, e.cluster, [row]
    if kind == "agg":
        a = decode(data, WindowAggregate)
        rows = [
            {"window_s": a.window_s, "start": a.start, "end": a.end, "cluster": a.cluster, "node": a.node,
             "metric": s.metric, "labels": s.labels, "unit": s.unit, "count": s.count, "min": s.min,
             "max": s.max, "mean": s.mean, "sum": s.sum, "p50": s.p50, "p95": s.p95, "p99": s.p99,
             "last": s.last, "late": a.late, "closed_by": a.closed_by, "_seq": seq}
            for s in a.series
        ]
        return kind, a.start, a.cluster, rows
    if kind == "alerts":
        al = decode(data, Alert)
        ts = al.ended_at if al.status is AlertStatus.RESOLVED and al.ended_at is not None else al.started_at
        row = {
            "ts": ts, "id": al.id, "status": al.status.value, "severity": al.severity.value, "kind": al.kind.value,
            "rule": al.rule, "cluster": al.cluster, "node": al.node, "started_at": al.started_at,
            "ended_at": al.ended_at, "summary": al.summary, "metric": al.metric, "value": al.value,
            "threshold": al.threshold, "details": al.details, "_seq": seq,
        }
        return kind, ts, al.cluster, [row]
    if kind == "trust":
        t = decode(data, TrustScore)
        row = {"ts": t.ts, "cluster": t.cluster, "node": t.node, "round": t.round, "trust": t.trust,
               "suspicion": t.suspicion, "evidence": t.evidence, "_seq": seq}
        return kind, t.ts, t.cluster, [row]
    h = decode(data, HealthScore)
    row = {
        "ts": h.ts, "cluster": h.cluster, "overall_health": h.overall_health, "peer_count": h.peer_count,
        "expected_peers": h.expected_peers, "connection_success_rate": h.connection_success_rate,
        "avg_latency": h.avg_latency, "bandwidth_usage": h.bandwidth_usage, "components": h.components,
        "nodes": h.nodes, "_seq": seq,
    }
    return kind, h.ts, h.cluster, [row]
