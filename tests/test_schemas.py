"""The wire contract: models, validation, subjects, JSON Schema."""
from __future__ import annotations

import time

import pytest

from schemas import (
    Alert,
    AlertKind,
    AlertStatus,
    DecodeError,
    Event,
    MetricBatch,
    Sample,
    Severity,
    SubjectError,
    decode,
    decode_batch,
    encode,
    json_schema,
    subjects,
)

NOW = time.time()


def test_metric_batch_round_trips_with_labels_and_units() -> None:
    b = MetricBatch("c1", "n1", NOW, [Sample("cpu.percent", 12.5, unit="%"), Sample("cpu.percent", 3.0, labels={"core": "1"})])
    assert decode_batch(encode(b)) == b


def test_unknown_fields_are_ignored_for_forward_compatibility() -> None:
    raw = b'{"cluster":"c","node":"n","ts":%f,"samples":[],"future_field":1}' % NOW
    assert decode_batch(raw).node == "n"


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b'{"cluster":"a.b","node":"n","ts":1.7e9,"samples":[]}', "not a valid name"),
        (b'{"cluster":"a","node":"n *","ts":1.7e9,"samples":[]}', "not a valid name"),
        (b'{"cluster":"a","node":"n","ts":5,"samples":[]}', "before 2000"),
        (b'{"cluster":"a","node":"n","ts":9e12,"samples":[]}', "in the future"),
        (b'{"cluster":"a","node":"n","ts":1.7e9,"samples":[{"name":"x","value":1e400}]}', "out of range"),
        (b'{"cluster":"a","node":"n","ts":1.7e9,"samples":[{"name":"x","value":NaN}]}', "malformed"),
        (b'{"cluster":"a","node":"n","ts":1.7e9,"samples":[{"name":"bad name","value":1}]}', "metric name"),
        (b'{"cluster":"a","node":"n","ts":1.7e9,"samples":[{"name":"x","value":2e300}]}', "Expected `float` <= 1e"),
        (b'{"cluster":"a","node":"n","ts":1.7e9}', "samples"),
        (b"not json", "malformed JSON"),
    ],
)
def test_invalid_batches_are_refused_with_a_reason(payload: bytes, reason: str) -> None:
    with pytest.raises(DecodeError, match=reason):
        decode_batch(payload)


def test_samples_built_in_code_validate_on_request() -> None:
    with pytest.raises(ValueError, match="finite"):
        Sample("cpu.percent", float("inf")).validate()
    with pytest.raises(ValueError, match="metric name"):
        Sample("cpu percent", 1.0).validate()
    assert Sample("cpu.percent", 1.0).validate().value == 1.0


def test_subject_builders_and_parser_agree() -> None:
    assert subjects.metrics("c1", "n-1") == "sw.metrics.c1.n-1"
    assert subjects.parse("sw.events.c1.n1.training.update").rest == "training.update"
    assert subjects.agg(60, "c", "n") == "sw.agg.1m.c.n"
    p = subjects.parse(subjects.alerts("critical", "c", "n", "cpu_high"))
    assert (p.family, p.cluster, p.node, p.rest) == ("alerts", "c", "n", "critical.cpu_high")


@pytest.mark.parametrize("bad", ["a.b", "a*", ">", "with space", "", "x" * 65])
def test_bad_subject_tokens_are_refused_before_publishing(bad: str) -> None:
    with pytest.raises(SubjectError, match="not a valid name"):
        subjects.metrics("c", bad)


def test_event_kind_must_match_subject_shape() -> None:
    with pytest.raises(DecodeError, match="event kind"):
        decode(b'{"cluster":"c","node":"n","ts":1.7e9,"kind":"bad kind"}', Event)


def test_alert_encodes_enums_as_wire_values() -> None:
    a = Alert("id1", AlertStatus.FIRING, Severity.CRITICAL, AlertKind.THRESHOLD, "r", "c", "n", NOW, "s")
    assert b'"status":"firing"' in encode(a) and b'"severity":"critical"' in encode(a)
    assert decode(encode(a), Alert) == a


def test_json_schema_describes_every_wire_model() -> None:
    doc = json_schema()
    for name in ("MetricBatch", "Event", "WindowAggregate", "Alert", "TrustScore", "HealthScore"):
        assert name in doc["$defs"]
    assert doc["$defs"]["MetricBatch"]["required"] == ["cluster", "node", "ts", "samples"]
