"""Wire models: what producers, processors and sinks exchange on NATS.

All timestamps are UNIX seconds (float, UTC). Every model carries ``v``, the
schema version; decoders ignore unknown fields so newer producers stay readable.
"""
from __future__ import annotations

import hashlib
import math
import time
from enum import Enum
from typing import Annotated, Any

import msgspec

SCHEMA_VERSION = 1
MIN_TIMESTAMP_S = 946_684_800.0  # 2000-01-01T00:00:00Z
MAX_FUTURE_SKEW_S = 86_400.0  # a sample may be stamped at most one day ahead
MAX_ABS_VALUE = 1e300  # larger magnitudes are refused as absurd
MAX_SAMPLES_PER_BATCH = 10_000
MAX_NAME_LEN = 200
MAX_LABELS = 16
MAX_UNIT_LEN = 32  # "%", "bytes/s", "ms": units are short
MAX_LABEL_KEY_LEN = 64
MAX_LABEL_VALUE_LEN = 256
MAX_RULE_LEN = 64  # a subject token
MAX_TEXT_LEN = 4_096  # alert summaries, dead-letter reasons
MAX_SERIES_LEN = MAX_NAME_LEN + MAX_LABELS * (MAX_LABEL_KEY_LEN + MAX_LABEL_VALUE_LEN + 2) + 2  # name{k=v,...}
MAX_DEAD_LETTER_DATA = 256 * 1024  # bytes of the original kept; base64 makes it ~342 kB, under NATS's 1 MB

_KNOWN_NAMES: set[str] = set()  # names already checked: the common case costs one set operation
_KNOWN_NAMES_MAX = 100_000
_NAME_OK = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.:-/")



def series_key(name: str, labels: dict[str, str] | None) -> str:
    """The series key: name plus sorted labels, e.g. ``cpu.percent`` or ``cpu.percent{core=0}``."""
    if not labels:
        return name
    return name + "{" + ",".join(f"{k}={v}" for k, v in sorted(labels.items())) + "}"

class Severity(str, Enum):
    """Alert severity; the value is the subject token."""

    INFO = "info"
    WARNING = "warning"
    CRITICAL = "critical"


class AlertStatus(str, Enum):
    FIRING = "firing"
    RESOLVED = "resolved"


class AlertKind(str, Enum):
    THRESHOLD = "threshold"
    ANOMALY = "anomaly"
    BYZANTINE = "byzantine"
    LIVENESS = "liveness"
    NETWORK = "network"
    CUSTOM = "custom"


def check_timestamp(ts: float, what: str = "ts") -> None:
    """Refuse non-finite or absurd timestamps (before 2000, or over a day ahead)."""
    if not math.isfinite(ts):
        raise ValueError(f"{what} must be finite, got {ts!r}")
    if ts < MIN_TIMESTAMP_S:
        raise ValueError(f"{what}={ts!r} is before 2000-01-01; expected UNIX seconds")
    if ts > time.time() + MAX_FUTURE_SKEW_S:
        raise ValueError(f"{what}={ts!r} is more than a day in the future; expected UNIX seconds")


def check_value(value: float, what: str) -> None:
    """Refuse NaN, infinities and magnitudes over MAX_ABS_VALUE."""
    if not math.isfinite(value):
        raise ValueError(f"{what} must be a finite number, got {value!r}")
    if abs(value) > MAX_ABS_VALUE:
        raise ValueError(f"{what}={value!r} exceeds the limit of {MAX_ABS_VALUE:g}")


def check_metric_name(name: str) -> None:
    """Metric names: 1-200 chars of letters, digits and ``_ . : - /``."""
    if not name or len(name) > MAX_NAME_LEN or not _NAME_OK.issuperset(name):
        raise ValueError(
            f"metric name {name!r} is invalid; expected 1-{MAX_NAME_LEN} characters of "
            "letters, digits and _ . : - /"
        )


def check_labels(labels: dict[str, str] | None, what: str = "sample") -> None:
    """At most MAX_LABELS labels; keys 1-64 chars, values at most 256, units at most 32."""
    if not labels:
        return
    if len(labels) > MAX_LABELS:
        raise ValueError(f"{what} has {len(labels)} labels; at most {MAX_LABELS}")
    for k, v in labels.items():
        if not isinstance(k, str) or not 1 <= len(k) <= MAX_LABEL_KEY_LEN:
            raise ValueError(f"{what} label key {str(k)[:80]!r} must be 1-{MAX_LABEL_KEY_LEN} characters")
        if not isinstance(v, str) or len(v) > MAX_LABEL_VALUE_LEN:
            raise ValueError(f"{what} label {k!r} value is {len(str(v))} characters; at most {MAX_LABEL_VALUE_LEN}")


MetricName = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_NAME_LEN)]
FiniteValue = Annotated[float, msgspec.Meta(ge=-MAX_ABS_VALUE, le=MAX_ABS_VALUE)]
LabelKey = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_LABEL_KEY_LEN)]
LabelValue = Annotated[str, msgspec.Meta(max_length=MAX_LABEL_VALUE_LEN)]
Labels = Annotated[dict[LabelKey, LabelValue], msgspec.Meta(max_length=MAX_LABELS)]
Unit = Annotated[str, msgspec.Meta(max_length=MAX_UNIT_LEN)]
Rule = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_RULE_LEN)]
Text = Annotated[str, msgspec.Meta(max_length=MAX_TEXT_LEN)]
SeriesName = Annotated[str, msgspec.Meta(max_length=MAX_SERIES_LEN)]


class Sample(msgspec.Struct, omit_defaults=True, forbid_unknown_fields=False, gc=False):
    """One named measurement, e.g. ``Sample("cpu.percent", 12.5, unit="%")``.

    Decoding enforces a finite value within +-1e300, the name length, at most
    16 labels of bounded key and value length and a short unit in C; MetricBatch checks name characters against a cache of names
    already seen. Code that builds samples itself calls :meth:`validate`.
    """

    name: MetricName
    value: FiniteValue
    unit: Unit | None = None
    labels: Labels | None = None

    def validate(self) -> Sample:
        """Raise ValueError naming the problem; return self."""
        check_metric_name(self.name)
        check_value(self.value, f"sample {self.name!r} value")
        if self.unit is not None and len(self.unit) > MAX_UNIT_LEN:
            raise ValueError(f"sample {self.name!r} unit is {len(self.unit)} characters; at most {MAX_UNIT_LEN}")
        check_labels(self.labels, f"sample {self.name!r}")
        return self

    def series(self) -> str:
        """The series key: name plus sorted labels, e.g. ``cpu.percent{core=0}``."""
        return series_key(self.name, self.labels)


class MetricBatch(msgspec.Struct, omit_defaults=True, forbid_unknown_fields=False, gc=False):
    """A snapshot from one node at one timestamp: many samples."""

    cluster: str
    node: str
    ts: float
    samples: list[Sample]
    seq: int = 0
    v: int = SCHEMA_VERSION

    def __post_init__(self) -> None:
        from schemas.subjects import check_token

        check_token(self.cluster, "cluster")
        check_token(self.node, "node")
        check_timestamp(self.ts)
        if len(self.samples) > MAX_SAMPLES_PER_BATCH:
            raise ValueError(f"batch has {len(self.samples)} samples; at most {MAX_SAMPLES_PER_BATCH}")
        names = [s.name for s in self.samples]
        if not _KNOWN_NAMES.issuperset(names):
            for n in names:
                if n not in _KNOWN_NAMES:
                    check_metric_name(n)
                    if len(_KNOWN_NAMES) < _KNOWN_NAMES_MAX:
                        _KNOWN_NAMES.add(n)


class Event(msgspec.Struct, omit_defaults=True, forbid_unknown_fields=False):
    """Something that happened on a node: ``kind`` (e.g. ``training.update``) plus a payload."""

    cluster: str
    node: str
    ts: float
    kind: str
    payload: dict[str, Any] = {}
    v: int = SCHEMA_VERSION

    def __post_init__(self) -> None:
        from schemas.subjects import check_kind, check_token

        check_token(self.cluster, "cluster")
        check_token(self.node, "node")
        check_timestamp(self.ts)
        check_kind(self.kind)


class SeriesStats(msgspec.Struct, omit_defaults=True, forbid_unknown_fields=False, gc=False):
    """Statistics of one series over one window."""

    metric: MetricName
    count: int
    min: float
    max: float
    mean: float
    sum: float
    p50: float
    p95: float
    p99: float
    last: float
    labels: Labels | None = None
    unit: Unit | None = None


class WindowAggregate(msgspec.Struct, omit_defaults=True, forbid_unknown_fields=False):
    """One node's series statistics over a tumbling event-time window [start, end)."""

    cluster: str
    node: str
    window_s: float
    start: float
    end: float
    series: list[SeriesStats]
    late: int = 0
    closed_by: str = "watermark"  # or "timer" (the node went quiet) or "flush" (shutdown)
    v: int = SCHEMA_VERSION


class Alert(msgspec.Struct, omit_defaults=True, forbid_unknown_fields=False):
    """A rule's verdict on one node: first ``firing``, later ``resolved`` with the same id."""

    id: Text
    status: AlertStatus
    severity: Severity
    kind: AlertKind
    rule: Rule
    cluster: str
    node: str
    started_at: float
    summary: Text
    metric: SeriesName | None = None
    value: float | None = None
    threshold: float | None = None
    ended_at: float | None = None
    details: dict[str, Any] = {}
    v: int = SCHEMA_VERSION


class TrustScore(msgspec.Struct, omit_defaults=True, forbid_unknown_fields=False):
    """A node's trust in [0, 1] after a training round; 1 is fully trusted."""

    cluster: str
    node: str
    ts: float
    round: int
    trust: float
    suspicion: float = 0.0
    evidence: dict[str, Any] = {}
    v: int = SCHEMA_VERSION


class HealthScore(msgspec.Struct, omit_defaults=True, forbid_unknown_fields=False):
    """Cluster network health 0-100 with the inputs it was computed from."""

    cluster: str
    ts: float
    overall_health: float
    peer_count: int = 0
    expected_peers: int = 0
    connection_success_rate: float = 1.0
    avg_latency: float = 0.0
    bandwidth_usage: float = 0.0
    components: dict[str, float] = {}
    nodes: dict[str, Any] = {}
    v: int = SCHEMA_VERSION


class DeadLetter(msgspec.Struct, omit_defaults=True):
    """An input a stage could not use: the reason and the original bytes (base64 in JSON).

    Build one with :meth:`of`, which keeps it under NATS's 1 MB payload limit:
    ``data`` holds at most MAX_DEAD_LETTER_DATA bytes of the original, and
    ``size`` (bytes) and ``sha256`` (hex) always describe the whole original.
    """

    stage: str
    subject: str
    reason: str
    ts: float
    data: bytes
    size: int = 0
    sha256: str = ""
    truncated: bool = False
    v: int = SCHEMA_VERSION

    @classmethod
    def of(cls, stage: str, subject: str, reason: str, data: bytes, ts: float | None = None) -> DeadLetter:
        """A dead letter that always fits: payload cut to MAX_DEAD_LETTER_DATA, reason to MAX_TEXT_LEN."""
        raw = bytes(data)
        keep = raw[:MAX_DEAD_LETTER_DATA]
        if len(reason) > MAX_TEXT_LEN:
            reason = reason[: MAX_TEXT_LEN - 12] + " [truncated]"
        return cls(
            stage=stage,
            subject=subject[:1024],
            reason=reason,
            ts=time.time() if ts is None else ts,
            data=keep,
            size=len(raw),
            sha256=hashlib.sha256(raw).hexdigest(),
            truncated=len(keep) < len(raw),
        )


WIRE_MODELS: dict[str, type[msgspec.Struct]] = {
    "MetricBatch": MetricBatch,
    "Event": Event,
    "WindowAggregate": WindowAggregate,
    "SeriesStats": SeriesStats,
    "Alert": Alert,
    "TrustScore": TrustScore,
    "HealthScore": HealthScore,
    "DeadLetter": DeadLetter,
}
