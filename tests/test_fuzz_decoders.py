"""Fuzzing every decoder, the subject parser and the processor's dispatch with hypothesis.

Properties: a decoder returns a valid model or raises DecodeError (nothing
else); the dispatcher never raises and no operator fails on any input it
accepts; every input it refuses comes with a reason (which the runtime puts
in ``sw.dlq.<stage>``); checkpoints still encode; the API's state and /metrics
take whatever decodes. Bounded: a few hundred examples each, no deadline.
"""
from __future__ import annotations

import json
import time
from typing import Any

import msgspec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from processors.dispatch import Dispatcher
from schemas import (
    Sample,
    Alert,
    DeadLetter,
    DecodeError,
    Event,
    HealthScore,
    MetricBatch,
    SubjectError,
    TrustScore,
    WindowAggregate,
    decode,
    encode,
    subjects,
)
from sinks.api.exposition import render_bytes
from sinks.api.state import FleetState
from swarmwatch.config import Config
from swarmwatch.pipeline import build_operators

FUZZ = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
NOW = time.time()

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=20),
    lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=10), c, max_size=4),
    max_leaves=12,
)
tokens = st.from_regex(r"[A-Za-z0-9_-]{1,10}", fullmatch=True) | st.text(max_size=12)
names = st.from_regex(r"[a-z][a-z0-9_.:/-]{0,24}", fullmatch=True) | st.text(max_size=30)
numbers = st.floats() | st.integers(-(2**70), 2**70) | st.floats(-1e6, 1e6)
timestamps = st.floats(NOW - 1e5, NOW + 1e3) | st.floats() | st.integers(-(2**40), 2**40)
labels = st.none() | st.dictionaries(st.text(max_size=70), st.text(max_size=300), max_size=18) | json_values
samples = st.fixed_dictionaries(
    {"name": names, "value": numbers | json_values},
    optional={"unit": st.text(max_size=40) | json_values, "labels": labels},
)
batches = st.fixed_dictionaries(
    {"cluster": tokens, "node": tokens, "ts": timestamps, "samples": st.lists(samples, max_size=8) | json_values},
    optional={"seq": st.integers(-(2**70), 2**70) | json_values, "v": json_values, "junk": json_values},
)
valid_tokens = st.from_regex(r"[A-Za-z0-9_-]{1,10}", fullmatch=True)
# valid envelopes with hostile insides: these reach the operators
good_batches = st.fixed_dictionaries(
    {
        "cluster": valid_tokens, "node": valid_tokens, "ts": st.floats(NOW - 600, NOW),
        "samples": st.lists(
            st.fixed_dictionaries(
                {"name": st.from_regex(r"[a-z][a-z0-9_.:/-]{0,24}", fullmatch=True) | st.sampled_from(["cpu.percent", "mem.percent", "app.errors_total"]),
                 "value": st.floats(-1e300, 1e300) | st.integers(-(2**53), 2**53)},
                optional={"unit": st.text(max_size=32), "labels": st.dictionaries(st.text(min_size=1, max_size=64), st.text(max_size=256), max_size=16)},
            ),
            max_size=12,
        ),
    },
)
kinds = st.sampled_from(["training.update", "peer.join", "peer.leave", "peer.status", "heartbeat", "error"]) | names
payload_values = json_values | st.fixed_dictionaries(
    {},
    optional={
        "round": numbers | json_values, "norm": numbers | json_values, "loss": numbers | json_values,
        "sketch": st.lists(numbers, max_size=40) | json_values, "peers": json_values, "peer": tokens | json_values,
        "latency_ms": numbers | json_values, "status": st.text(max_size=12) | json_values, "expected_peers": numbers | json_values,
    },
)
good_events = st.fixed_dictionaries(
    {"cluster": valid_tokens, "node": valid_tokens, "ts": st.floats(NOW - 600, NOW),
     "kind": st.sampled_from(["training.update", "peer.join", "peer.leave", "peer.status", "heartbeat"])},
    optional={"payload": payload_values},
)
events = st.fixed_dictionaries(
    {"cluster": tokens, "node": tokens, "ts": timestamps, "kind": kinds},
    optional={"payload": payload_values, "v": json_values},
)


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, allow_nan=True).encode()  # NaN/Infinity tokens are invalid JSON: they must be refused too


def _subject_for(doc: Any, family: str) -> str:
    if isinstance(doc, dict):
        c, n = doc.get("cluster"), doc.get("node")
        if family == "metrics":
            return f"sw.metrics.{c}.{n}"
        return f"sw.events.{c}.{n}.{doc.get('kind')}"
    return f"sw.{family}.c.n"


def _dispatcher() -> Dispatcher:
    return Dispatcher(build_operators(Config()))


DISPATCH = _dispatcher()


@FUZZ
@given(data=st.binary(max_size=600))
def test_every_decoder_refuses_arbitrary_bytes_with_a_decode_error_only(data: bytes) -> None:
    for model in (MetricBatch, Event, WindowAggregate, Alert, TrustScore, HealthScore, DeadLetter):
        try:
            decode(data, model)
        except DecodeError as exc:
            assert str(exc)


def _check_dispatch(subject: str, data: bytes) -> None:
    step = DISPATCH.step(subject, data, NOW)
    assert step.failures == [], f"operator failed on {data[:200]!r}: {step.failures}"
    if step.item is None:
        assert step.invalid  # the runtime dead-letters it with this reason
        dl = DeadLetter.of("processor", subject, step.invalid, data)
        assert len(encode(dl)) < 1024 * 1024
    else:
        assert encode(step.item)  # what was accepted encodes again


@FUZZ
@given(doc=good_batches | batches, spoof=st.booleans())
def test_hostile_metric_batches_are_decoded_or_refused_with_a_reason_and_no_operator_fails(doc: Any, spoof: bool) -> None:
    subject = "sw.metrics.c.other" if spoof else _subject_for(doc, "metrics")
    _check_dispatch(subject, _dumps(doc))


@FUZZ
@given(doc=good_events | events)
def test_hostile_events_are_decoded_or_refused_with_a_reason_and_no_operator_fails(doc: Any) -> None:
    _check_dispatch(_subject_for(doc, "events"), _dumps(doc))


@settings(max_examples=30, deadline=None)
@given(st.lists(good_batches | good_events | batches | events, max_size=6))
def test_after_hostile_input_ticks_and_checkpoints_still_work(docs: list[Any]) -> None:
    d = _dispatcher()
    for doc in docs:
        fam = "events" if isinstance(doc, dict) and "kind" in doc else "metrics"
        assert d.step(_subject_for(doc, fam), _dumps(doc), NOW).failures == []
    for dt in (0.0, 11.0, 120.0, 7200.0):
        emits, failures = d.tick(NOW + dt)
        assert failures == []
        for e in emits:
            assert e.message is not None and encode(e.message)
    msgspec.msgpack.encode(d.snapshot())  # the runtime checkpoints this
    d2 = _dispatcher()
    d2.restore(msgspec.msgpack.decode(msgspec.msgpack.encode(d.snapshot())))


@FUZZ
@given(subject=st.text(max_size=80) | st.lists(tokens | st.sampled_from(["sw", "metrics", "agg", "alerts", "dlq", "*", ">", ""]), max_size=7).map(".".join))
def test_the_subject_parser_returns_a_parsed_subject_or_a_subject_error(subject: str) -> None:
    try:
        p = subjects.parse(subject)
    except SubjectError as exc:
        assert subject[:20] in str(exc) or "subject" in str(exc)
        return
    assert p.family in ("metrics", "events", "agg", "alerts", "trust", "health", "dlq", "self")


@FUZZ
@given(value=st.text(max_size=80) | json_values)
def test_name_checks_refuse_with_a_subject_error_only(value: Any) -> None:
    for check in (subjects.check_token, subjects.check_kind):
        try:
            check(value)
        except SubjectError:
            pass


aggregates = st.fixed_dictionaries(
    {
        "cluster": tokens, "node": tokens, "window_s": numbers, "start": timestamps, "end": timestamps,
        "series": st.lists(
            st.fixed_dictionaries(
                {"metric": names, "count": st.integers(-5, 10**6) | json_values, "min": numbers, "max": numbers, "mean": numbers,
                 "sum": numbers, "p50": numbers, "p95": numbers, "p99": numbers, "last": numbers},
                optional={"labels": labels, "unit": st.text(max_size=40)},
            ),
            max_size=5,
        ),
    },
)
alerts = st.fixed_dictionaries(
    {
        "id": st.text(max_size=30), "status": st.sampled_from(["firing", "resolved"]) | st.text(max_size=8),
        "severity": st.sampled_from(["info", "warning", "critical"]) | st.text(max_size=8),
        "kind": st.sampled_from(["threshold", "anomaly", "liveness"]), "rule": tokens, "cluster": tokens, "node": tokens,
        "started_at": timestamps, "summary": st.text(max_size=200),
    },
    optional={"metric": names, "value": numbers, "details": json_values},
)
healths = st.fixed_dictionaries(
    {"cluster": tokens, "ts": timestamps, "overall_health": numbers},
    optional={"components": st.dictionaries(st.text(max_size=10), numbers, max_size=4) | json_values, "nodes": json_values},
)

API_STATE = FleetState(max_nodes=500)


@FUZZ
@given(doc=aggregates | alerts | healths)
def test_the_api_state_and_metrics_take_whatever_decodes(doc: Any) -> None:
    data = _dumps(doc)
    for model, apply in (
        (WindowAggregate, API_STATE.apply_agg), (Alert, API_STATE.apply_alert), (HealthScore, API_STATE.apply_health),
    ):
        try:
            msg = decode(data, model)
        except DecodeError:
            continue
        apply(msg)  # type: ignore[operator]
    for fmt in ("text", "openmetrics"):
        body, _ = render_bytes(API_STATE, fmt=fmt)
        if fmt == "text":
            list(text_string_to_metric_families(body.decode()))


async def test_a_running_processor_dead_letters_every_bad_input_with_a_reason_and_keeps_working(nc: Any) -> None:
    """The same property end to end: a real nats-server, the default operators, hostile bytes in, then a good message."""
    import asyncio
    import random

    from processors import Runtime
    from swarmwatch.streams import ensure_streams
    from tests.support import stored, wait_for

    js = nc.jetstream()
    await ensure_streams(js)
    rng = random.Random(14)
    now = time.time()
    bad: list[tuple[str, bytes]] = [(f"sw.metrics.c1.n{i}", rng.randbytes(rng.randint(0, 300))) for i in range(8)]
    bad += [
        ("sw.metrics.c1.n1", b'{"cluster":"c1","node":"n1","ts":NaN,"samples":[]}'),
        ("sw.metrics.c1.n1", _dumps({"cluster": "c1", "node": "n1", "ts": now, "samples": [{"name": "x", "value": 1, "unit": "u" * 900}]})),
        ("sw.metrics.c1.n1", _dumps({"cluster": "c1", "node": "n1", "ts": now, "samples": [{"name": "x", "value": 1, "labels": {"k" * 100: "v"}}]})),
        ("sw.metrics.c1.n1", _dumps({"cluster": "c1", "node": "n2", "ts": now, "samples": []})),
        ("sw.metrics.c1.n1", _dumps({"cluster": "c1", "node": "n1", "ts": now, "samples": [{"name": "m", "value": 1.0}] * 10_001})),
        ("sw.events.c1.n1.training.update", _dumps({"cluster": "c1", "node": "n1", "ts": now, "kind": "peer.leave"})),
        ("sw.events.c1.n1.peer.leave", _dumps({"cluster": "c1", "node": "n1", "ts": -1, "kind": "peer.leave"})),
    ]
    rt = Runtime(nc, build_operators(Config()), name="fuzzed", checkpoint_interval_s=0.2)
    await rt.start()
    try:
        for subj, data in bad:
            await js.publish(subj, data)
        good = MetricBatch("c1", "n9", time.time(), [Sample("mem.percent", 99.0)])
        await js.publish(subjects.metrics("c1", "n9"), encode(good))
        await wait_for(lambda: rt.stats.invalid >= len(bad) and rt.stats.processed >= 1)
        dead: list[DeadLetter] = []
        for _ in range(100):
            dead = [decode(d, DeadLetter) for d in await stored(js, "sw.dlq.>")]
            if len(dead) >= len(bad):
                break
            await asyncio.sleep(0.1)
    finally:
        await rt.stop()
    assert rt.stats.invalid == len(bad) and len(dead) == len(bad)
    assert all(d.reason and d.stage == "processor" and d.sha256 for d in dead)
    assert sorted(d.sha256 for d in dead) == sorted(__import__("hashlib").sha256(data).hexdigest() for _, data in bad)
    assert any(a.node == "n9" for a in (decode(x, Alert) for x in await stored(js, "sw.alerts.>")))  # still working after them


def test_deeply_nested_json_is_refused_with_a_decode_error_not_a_recursion_error() -> None:
    """Found by this fuzzing round: 5,000 nested lists in an event payload raised RecursionError out of decode."""
    for depth in (5_000, 200_000):
        nested = "[" * depth + "]" * depth
        event = f'{{"cluster":"c1","node":"n1","ts":{NOW},"kind":"training.update","payload":{{"x":{nested}}}}}'.encode()
        step = DISPATCH.step("sw.events.c1.n1.training.update", event, NOW)
        assert step.item is None and "nested too deeply" in (step.invalid or "")
        for model in (MetricBatch, Event, WindowAggregate, Alert, TrustScore, HealthScore, DeadLetter):
            try:
                decode(nested.encode(), model)
            except DecodeError as exc:
                assert "nested too deeply" in str(exc) or "Expected" in str(exc)
