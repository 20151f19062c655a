"""`swarmwatch ingest otlp`: the real OpenTelemetry SDK exports to it; batches land on sw.metrics.<cluster>.<node>."""
from __future__ import annotations

import asyncio
import gzip
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import nats
import pytest

from producers.otlp import OtlpMapper, OtlpReceiver, ResourceMapping, parse_request, to_token
from schemas.codec import decode_batch
from schemas.models import MetricBatch
from swarmwatch.server import EmbeddedServer

pytest.importorskip("opentelemetry.sdk.metrics", reason="opentelemetry-sdk is a test extra")

from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter  # noqa: E402
from opentelemetry.sdk.metrics import Counter, Histogram, MeterProvider  # noqa: E402
from opentelemetry.sdk.metrics.export import AggregationTemporality, PeriodicExportingMetricReader  # noqa: E402
from opentelemetry.sdk.resources import Resource  # noqa: E402


@pytest.fixture
async def receiver(nats_server: EmbeddedServer) -> AsyncIterator[tuple[OtlpReceiver, Any]]:
    nc = await nats.connect(nats_server.url)
    await nc.jetstream().add_stream(name="TELEMETRY", subjects=["sw.metrics.>", "sw.events.>"])
    rx = OtlpReceiver(nc, "127.0.0.1", 0)
    await rx.start()
    try:
        yield rx, nc
    finally:
        await rx.stop()
        await nc.close()


def _provider(url: str, interval_ms: int, delta: bool = False, **attrs: str) -> MeterProvider:
    temporality = {Counter: AggregationTemporality.DELTA, Histogram: AggregationTemporality.DELTA} if delta else None
    exporter = OTLPMetricExporter(endpoint=url + "/v1/metrics", preferred_temporality=temporality, timeout=5)
    reader = PeriodicExportingMetricReader(exporter, export_interval_millis=interval_ms)
    return MeterProvider(metric_readers=[reader], resource=Resource.create(attrs))


async def _batches(sub: Any, until: Any, timeout_s: float = 20.0) -> list[MetricBatch]:
    out: list[MetricBatch] = []
    deadline = time.monotonic() + timeout_s
    while not until(out):
        left = deadline - time.monotonic()
        assert left > 0, f"condition not met; got {[sorted({s.name for s in b.samples}) for b in out]}"
        try:
            msg = await sub.next_msg(timeout=left)
        except asyncio.TimeoutError:
            continue
        out.append(decode_batch(msg.data))
    return out


def _names(batches: list[MetricBatch]) -> set[str]:
    return {s.name for b in batches for s in b.samples}


async def test_sdk_demo_metrics_arrive_as_gauges_rates_and_quantiles(receiver: tuple[OtlpReceiver, Any]) -> None:
    rx, nc = receiver
    sub = await nc.subscribe("sw.metrics.train.worker-3-lab")
    provider = _provider(rx.url, 300, **{"service.name": "trainer", "service.namespace": "train",
                                          "host.name": "worker-3.lab"})
    try:
        meter = provider.get_meter("demo")
        steps = meter.create_counter("train.steps", unit="1")
        loss = meter.create_histogram("train.step_seconds", unit="s",
                                      explicit_bucket_boundaries_advisory=[0.01, 0.05, 0.1, 0.5, 1.0])
        queue = meter.create_up_down_counter("train.queue")
        meter.create_observable_gauge("train.loss", callbacks=[lambda _o: [_observation(0.42)]])
        t0 = time.monotonic()

        async def work() -> None:
            while True:
                steps.add(5, {"phase": "fwd"})
                loss.record(0.02)
                loss.record(0.2)
                queue.add(1)
                await asyncio.sleep(0.02)

        task = asyncio.create_task(work())
        try:
            first = await _batches(sub, lambda bs: len(bs) >= 1)
            first_s = time.monotonic() - t0
            batches = first + await _batches(sub, lambda bs: "train.steps:rate" in _names(bs)
                                             and "train.step_seconds:p50" in _names(bs))
        finally:
            task.cancel()
    finally:
        await asyncio.to_thread(provider.shutdown)  # its last export needs this loop to answer
    print(f"first OTLP batch {first_s:.2f} s after the SDK started (export interval 0.3 s)")
    b = batches[-1]
    assert (b.cluster, b.node) == ("train", "worker-3-lab")
    samples = [s for x in batches for s in x.samples]
    (gauge,) = {s.value for s in samples if s.name == "train.loss"}
    assert gauge == 0.42
    rate = next(s for s in samples if s.name == "train.steps:rate")
    assert rate.labels == {"phase": "fwd", "service": "trainer"} and rate.value > 0 and rate.unit == "1/s"
    assert any(s.name == "train.queue" and s.value > 0 for s in samples)  # up-down counter: a gauge
    p50 = next(s.value for s in samples if s.name == "train.step_seconds:p50")
    p99 = next(s.value for s in samples if s.name == "train.step_seconds:p99")
    assert 0.01 <= p50 <= 0.1 and 0.1 <= p99 <= 0.5
    assert rx.stats.rejected == 0 and rx.stats.failed == 0


def _observation(value: float) -> Any:
    from opentelemetry.metrics import Observation

    return Observation(value)


async def test_delta_temporality_gives_rates_from_the_first_export(receiver: tuple[OtlpReceiver, Any]) -> None:
    rx, nc = receiver
    sub = await nc.subscribe("sw.metrics.default.gpu-box")
    provider = _provider(rx.url, 60_000, delta=True, **{"host.name": "gpu-box"})
    try:
        meter = provider.get_meter("demo")
        meter.create_counter("tokens").add(1000)
        meter.create_histogram("latency_ms").record(40.0)
        await asyncio.to_thread(provider.force_flush, 10_000)
        batches = await _batches(sub, lambda bs: "tokens:rate" in _names(bs))
    finally:
        await asyncio.to_thread(provider.shutdown)  # its last export needs this loop to answer
    samples = {s.name: s for s in batches[0].samples}
    assert samples["tokens:rate"].value > 0
    assert samples["latency_ms:mean"].value == pytest.approx(40.0)
    assert "latency_ms:p50" in samples


async def test_otlp_json_is_accepted_and_bad_bodies_are_refused(receiver: tuple[OtlpReceiver, Any]) -> None:
    rx, nc = receiver
    sub = await nc.subscribe("sw.metrics.eu-1.val-7")
    now_ns = time.time_ns()
    body = {"resourceMetrics": [{
        "resource": {"attributes": [{"key": "service.namespace", "value": {"stringValue": "eu-1"}},
                                    {"key": "host.name", "value": {"stringValue": "val-7"}}]},
        "scopeMetrics": [{"metrics": [{"name": "validator.rank", "unit": "1", "gauge": {"dataPoints": [
            {"asInt": "3", "timeUnixNano": str(now_ns), "attributes": [
                {"key": "subnet", "value": {"intValue": "12"}}]}]}}]}],
    }]}
    async with httpx.AsyncClient(timeout=10) as client:
        r = await client.post(rx.url + "/v1/metrics", content=gzip.compress(json.dumps(body).encode()),
                              headers={"Content-Type": "application/json", "Content-Encoding": "gzip"})
        assert r.status_code == 200 and r.json() == {}
        (batch,) = await _batches(sub, lambda bs: len(bs) >= 1)
        (s,) = batch.samples
        assert (s.name, s.value, s.labels) == ("validator.rank", 3.0, {"subnet": "12"})
        assert batch.ts == pytest.approx(now_ns / 1e9)
        bad = await client.post(rx.url + "/v1/metrics", content=b"\xff\x00garbage",
                                headers={"Content-Type": "application/x-protobuf"})
        assert bad.status_code == 400
        wrong = await client.post(rx.url + "/v1/metrics", content=b"{}", headers={"Content-Type": "text/csv"})
        assert wrong.status_code == 400 and "text/csv" in wrong.text
        health = (await client.get(rx.url + "/health")).json()
    assert health["rejected"] == 2 and health["batches"] == 1


async def test_a_token_is_required_when_set(nats_server: EmbeddedServer) -> None:
    nc = await nats.connect(nats_server.url)
    rx = OtlpReceiver(nc, "127.0.0.1", 0, token="s3cret")
    await rx.start()
    try:
        async with httpx.AsyncClient(timeout=10) as client:
            r = await client.post(rx.url + "/v1/metrics", content=b"{}", headers={"Content-Type": "application/json"})
            assert r.status_code == 401
            ok = await client.post(rx.url + "/v1/metrics", content=b"{}",
                                   headers={"Content-Type": "application/json", "Authorization": "Bearer s3cret"})
            assert ok.status_code == 200
    finally:
        await rx.stop()
        await nc.close()


def test_binding_beyond_loopback_without_a_token_is_refused() -> None:
    with pytest.raises(ValueError, match="without an access token"):
        OtlpReceiver(None, "0.0.0.0", 4318)


def test_resource_mapping_is_configurable_and_names_become_tokens() -> None:
    m = ResourceMapping("fleet", "unknown", cluster_attrs=("deployment.environment",), node_attrs=("k8s.pod.name",))
    assert m.place({"deployment.environment": "prod eu", "k8s.pod.name": "infer-0"}) == ("prod-eu", "infer-0")
    assert m.place({"host.name": "ignored"}) == ("fleet", "unknown")
    assert to_token("web-1.example.com") == "web-1-example-com" and to_token("...") is None
    with pytest.raises(ValueError, match="cluster 'a.b'"):
        ResourceMapping("a.b")


def _sum_request(value: int, start_ns: int, t_ns: int) -> Any:
    body = {"resourceMetrics": [{"resource": {"attributes": [{"key": "host.name", "value": {"stringValue": "n1"}}]},
                                 "scopeMetrics": [{"metrics": [{"name": "reqs", "sum": {
                                     "isMonotonic": True, "aggregationTemporality": 2,
                                     "dataPoints": [{"asInt": str(value), "startTimeUnixNano": str(start_ns),
                                                     "timeUnixNano": str(t_ns)}]}}]}]}]}
    return parse_request(json.dumps(body).encode(), "application/json")


def test_cumulative_sum_restart_gives_no_rate_and_is_counted() -> None:
    mapper = OtlpMapper()
    s0 = 1_700_000_000_000_000_000
    rates = []
    for value, start, t in ((100, s0, s0 + 10**9), (150, s0, s0 + 2 * 10**9), (160, s0 + 5 * 10**9, s0 + 6 * 10**9),
                            (170, s0 + 5 * 10**9, s0 + 7 * 10**9)):
        (( _, samples),) = mapper.convert(_sum_request(value, start, t)).values()
        rates.append([s.value for s in samples])
    assert rates == [[], [50.0], [], [10.0]]  # the restart (new start time) is not a rate of 10/s
    assert mapper.rates.resets == 1


def test_cli_refuses_an_open_bind_without_a_token() -> None:
    from typer.testing import CliRunner

    from swarmwatch.cli import app

    result = CliRunner().invoke(app, ["ingest", "otlp", "--nats", "nats://127.0.0.1:1", "--api-host", "0.0.0.0"])
    text = result.output + (result.stderr if result.stderr_bytes is not None else "")
    assert result.exit_code == 2 and "without an access token" in text and "Traceback" not in text


async def test_ingest_otlp_command_publishes_what_the_sdk_exports(nats_server: EmbeddedServer) -> None:
    import signal
    import socket
    import subprocess
    import sys

    nc = await nats.connect(nats_server.url)
    await nc.jetstream().add_stream(name="TELEMETRY", subjects=["sw.metrics.>", "sw.events.>"])
    sub = await nc.subscribe("sw.metrics.infer.gpu-1")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "swarmwatch", "ingest", "otlp", "--nats", nats_server.url,
                             "--api-port", str(port), "--cluster-from", "deployment.environment"],
                            stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None and time.monotonic() < deadline, "receiver did not start"
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                await asyncio.sleep(0.1)
        provider = _provider(f"http://127.0.0.1:{port}", 60_000,
                             **{"deployment.environment": "infer", "host.name": "gpu-1", "service.name": "vllm"})
        provider.get_meter("demo").create_up_down_counter("inference.inflight").add(3)
        await asyncio.to_thread(provider.force_flush, 10_000)
        (batch,) = await _batches(sub, lambda bs: len(bs) >= 1)
        assert [(s.name, s.value, s.labels) for s in batch.samples] == [("inference.inflight", 3.0, {"service": "vllm"})]
        await asyncio.to_thread(provider.shutdown)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err.decode()
        assert b"stopped: requests=" in err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        await nc.close()
