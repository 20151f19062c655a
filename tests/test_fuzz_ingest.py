"""Fuzzing the ingest decoders with hypothesis: OTLP/HTTP requests and scraped Prometheus text.

Property: a body is refused with ValueError (the receiver answers 400 with it)
or decoded; whatever decodes maps to valid samples and valid batches, so the
receiver and the sidecar never crash on what an exporter sends.
"""
from __future__ import annotations

import gzip
import json
import time
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from producers.otlp import OtlpMapper, parse_request
from producers.scrape import ExpositionMapper, ScrapeTarget
from schemas import MetricBatch, decode_batch, encode

FUZZ = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
NOW = time.time()

texts = st.text(max_size=30) | st.sampled_from(["host-1", "a.b", "", "x" * 300, "<b>", "n\nx", "cluster/1"])
numbers = st.floats() | st.integers(-(2**63), 2**63 - 1)
attrs = st.lists(
    st.fixed_dictionaries({"key": texts | st.sampled_from(["service.name", "host.name", "swarmwatch.cluster", "k8s.node.name"]),
                           "value": st.fixed_dictionaries({}, optional={"stringValue": texts, "intValue": st.integers(-(2**63), 2**63 - 1).map(str),
                                                                           "doubleValue": numbers, "boolValue": st.booleans()})}),
    max_size=5,
)
points = st.lists(
    st.fixed_dictionaries({}, optional={"asDouble": numbers, "asInt": st.integers(-(2**63), 2**63 - 1).map(str), "attributes": attrs,
                                        "timeUnixNano": st.integers(0, 2**63 - 1).map(str), "startTimeUnixNano": st.integers(0, 2**63 - 1).map(str),
                                        "count": st.integers(0, 2**63 - 1).map(str), "sum": numbers,
                                        "bucketCounts": st.lists(st.integers(0, 2**40).map(str), max_size=6),
                                        "explicitBounds": st.lists(numbers, max_size=5)}),
    max_size=3,
)
metrics = st.lists(
    st.fixed_dictionaries(
        {"name": texts | st.sampled_from(["http.server.duration", "process.cpu.time"])},
        optional={"unit": texts, "gauge": st.fixed_dictionaries({"dataPoints": points}),
                  "sum": st.fixed_dictionaries({"dataPoints": points}, optional={"isMonotonic": st.booleans(), "aggregationTemporality": st.integers(0, 3)}),
                  "histogram": st.fixed_dictionaries({"dataPoints": points}, optional={"aggregationTemporality": st.integers(0, 3)})},
    ),
    max_size=4,
)
requests = st.fixed_dictionaries(
    {"resourceMetrics": st.lists(st.fixed_dictionaries({"resource": st.fixed_dictionaries({"attributes": attrs}),
                                                        "scopeMetrics": st.lists(st.fixed_dictionaries({"metrics": metrics}), max_size=2)}), max_size=3)}
)


def _check_mapped(mapper: OtlpMapper, req: Any) -> None:
    for (cluster, node), (newest, samples) in mapper.convert(req).items():
        for i in range(0, max(len(samples), 1), 10_000):
            chunk = samples[i:i + 10_000]
            if chunk:
                batch = MetricBatch(cluster, node, NOW, chunk, 1)  # what the receiver publishes: must construct
                decode_batch(encode(batch))  # and decode again downstream


@FUZZ
@given(doc=requests, gz=st.booleans())
def test_otlp_json_requests_are_refused_with_a_value_error_or_map_to_valid_batches(doc: Any, gz: bool) -> None:
    body = json.dumps(doc, allow_nan=True).encode()
    if gz:
        body = gzip.compress(body)
    try:
        req = parse_request(body, "application/json", "gzip" if gz else "")
    except ValueError:
        return
    _check_mapped(OtlpMapper(), req)


@FUZZ
@given(body=st.binary(max_size=400), ctype=st.sampled_from(["application/x-protobuf", "application/json", "text/plain"]),
       enc=st.sampled_from(["", "gzip", "deflate", "br"]))
def test_arbitrary_otlp_bodies_are_refused_with_a_value_error_or_map_to_valid_batches(body: bytes, ctype: str, enc: str) -> None:
    try:
        req = parse_request(body, ctype, enc)
    except ValueError as exc:
        assert str(exc)
        return
    _check_mapped(OtlpMapper(), req)


label_values = st.text(max_size=20).map(lambda s: s.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n"))
lines = st.one_of(
    st.builds(lambda n, k, v, x: f'{n}{{{k}="{v}"}} {x}', st.from_regex(r"[a-zA-Z_:][a-zA-Z0-9_:]{0,15}", fullmatch=True),
              st.from_regex(r"[a-zA-Z_][a-zA-Z0-9_]{0,8}", fullmatch=True), label_values,
              st.sampled_from(["1", "-1e308", "NaN", "+Inf", "1e400", "0x1", "abc", ""])),
    st.builds(lambda n, t: f"# TYPE {n} {t}", st.from_regex(r"[a-z_]{1,10}", fullmatch=True),
              st.sampled_from(["counter", "gauge", "histogram", "summary", "untyped", "bogus"])),
    st.builds(lambda n, le, x: f'{n}_bucket{{le="{le}"}} {x}', st.from_regex(r"[a-z_]{1,10}", fullmatch=True),
              st.sampled_from(["0.1", "1", "+Inf", "x"]), st.sampled_from(["1", "5", "-3", "NaN"])),
    st.text(max_size=40),
)


@FUZZ
@given(text=st.lists(lines, max_size=12).map("\n".join), twice=st.booleans())
def test_scraped_exposition_text_is_refused_with_a_value_error_or_maps_to_valid_samples(text: str, twice: bool) -> None:
    m = ExpositionMapper(ScrapeTarget("http://h:1/metrics", max_series=50))
    for k in range(2 if twice else 1):  # the second scrape turns counters into rates
        try:
            samples = m.convert(text + "\n", 100.0 + 10 * k)
        except ValueError as exc:
            assert "not the Prometheus text format" in str(exc)
            return
        assert len(samples) <= 50
        if samples:
            decode_batch(encode(MetricBatch("c", "n", NOW, samples)))
