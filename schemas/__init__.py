"""The wire contract: message models, subject names and the codec."""
from __future__ import annotations

from schemas import subjects
from schemas.codec import DecodeError, decode, decode_alert, decode_batch, decode_event, encode, json_schema, to_builtins
from schemas.models import (
    SCHEMA_VERSION,
    Alert,
    AlertKind,
    AlertStatus,
    DeadLetter,
    Event,
    HealthScore,
    MetricBatch,
    Sample,
    SeriesStats,
    Severity,
    TrustScore,
    WindowAggregate,
    check_labels,
    check_metric_name,
    check_timestamp,
    check_value,
    series_key,
)
from schemas.subjects import SubjectError, check_token

__all__ = [
    "SCHEMA_VERSION",
    "Alert",
    "AlertKind",
    "AlertStatus",
    "DeadLetter",
    "DecodeError",
    "Event",
    "HealthScore",
    "MetricBatch",
    "Sample",
    "SeriesStats",
    "Severity",
    "SubjectError",
    "TrustScore",
    "WindowAggregate",
    "check_labels",
    "check_metric_name",
    "check_timestamp",
    "check_token",
    "check_value",
    "decode",
    "decode_alert",
    "decode_batch",
    "decode_event",
    "encode",
    "json_schema",
    "series_key",
    "subjects",
    "to_builtins",
]
