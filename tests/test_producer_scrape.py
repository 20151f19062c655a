"""Prometheus scrape bridge: exporters' families become samples in the node's batch (rates, quantiles, caps)."""
from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
import sys
import textwrap
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import nats
import pytest

from producers.options import sidecar_sources
from producers.scrape import ExpositionMapper, Scraper, ScrapeTarget, bucket_quantile, quantile_name
from schemas.codec import decode_batch
from swarmwatch.server import EmbeddedServer, free_port
from tests.support import wait_for


def by_name(samples: list, name: str) -> list:
    return [s for s in samples if s.name == name]


def _wait_port(port: int, proc: subprocess.Popen[bytes], timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"exporter exited: {proc.stderr.read().decode() if proc.stderr else ''}"
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"nothing listens on port {port} after {timeout_s} s")


COUNTER_TEXT = """\
# TYPE req_total counter
req_total{path="/a"} {a}
req_total{path="/b"} 5
# TYPE temp gauge
temp 21.5
"""


def test_counter_becomes_a_rate_and_a_reset_gives_no_rate() -> None:
    m = ExpositionMapper(ScrapeTarget("http://h:1/metrics", name="app"))
    first = m.convert(COUNTER_TEXT.replace("{a}", "100"), 10.0)
    assert by_name(first, "req_total:rate") == []  # nothing to subtract yet
    assert [(s.value, s.labels) for s in by_name(first, "temp")] == [(21.5, {"instance": "app"})]
    second = m.convert(COUNTER_TEXT.replace("{a}", "120"), 12.0)
    rates = {s.labels["path"]: s.value for s in by_name(second, "req_total:rate")}
    assert rates == {"/a": 10.0, "/b": 0.0}
    assert by_name(second, "req_total:rate")[0].unit == "/s"
    third = m.convert(COUNTER_TEXT.replace("{a}", "3"), 14.0)  # the app restarted
    assert {s.labels["path"] for s in by_name(third, "req_total:rate")} == {"/b"}
    assert m.rates.resets == 1
    fourth = m.convert(COUNTER_TEXT.replace("{a}", "7"), 16.0)
    assert {s.labels["path"]: s.value for s in by_name(fourth, "req_total:rate")}["/a"] == 2.0


HIST = """\
# TYPE lat_seconds histogram
lat_seconds_bucket{le="0.1"} {b1}
lat_seconds_bucket{le="0.5"} {b2}
lat_seconds_bucket{le="1.0"} {b3}
lat_seconds_bucket{le="+Inf"} {b3}
lat_seconds_count {b3}
lat_seconds_sum {s}
"""


def _hist(b1: int, b2: int, b3: int, s: float) -> str:
    return HIST.replace("{b1}", str(b1)).replace("{b2}", str(b2)).replace("{b3}", str(b3)).replace("{s}", str(s))


def test_histogram_quantiles_cover_only_the_observations_between_two_scrapes() -> None:
    m = ExpositionMapper(ScrapeTarget("http://h:1/metrics", quantiles=(0.5, 0.95)))
    assert [s for s in m.convert(_hist(1000, 1000, 1000, 50.0), 0.0) if ":p" in s.name] == []
    # 100 new observations, all between 0.5 and 1.0: the old fast ones must not drag the median down
    out = m.convert(_hist(1000, 1000, 1100, 125.0), 1.0)
    p50 = by_name(out, "lat_seconds:p50")[0].value
    p95 = by_name(out, "lat_seconds:p95")[0].value
    assert 0.5 < p50 <= 1.0 and p50 < p95 <= 1.0
    assert by_name(out, "lat_seconds:mean")[0].value == pytest.approx(0.75)
    assert by_name(out, "lat_seconds_count:rate")[0].value == pytest.approx(100.0)
    quiet = m.convert(_hist(1000, 1000, 1100, 125.0), 2.0)  # nothing observed: no quantile, no mean
    assert [s.name for s in quiet if ":p" in s.name or ":mean" in s.name] == []


def test_bucket_quantile_interpolates_like_histogram_quantile() -> None:
    inf = float("inf")
    buckets = [(1.0, 10.0), (2.0, 20.0), (inf, 20.0)]
    assert bucket_quantile(0.5, buckets) == pytest.approx(1.0)
    assert bucket_quantile(0.75, buckets) == pytest.approx(1.5)
    assert bucket_quantile(0.25, buckets) == pytest.approx(0.5)
    assert bucket_quantile(0.99, [(1.0, 1.0), (inf, 100.0)]) == 1.0  # in +Inf: the highest finite bound
    assert bucket_quantile(0.5, [(1.0, 0.0), (inf, 0.0)]) is None
    assert quantile_name(0.5) == "p50" and quantile_name(0.999) == "p99.9"


def test_summary_quantiles_and_mean() -> None:
    text = """\
# TYPE rpc_seconds summary
rpc_seconds{quantile="0.5"} 0.2
rpc_seconds{quantile="0.99"} 0.9
rpc_seconds_count {c}
rpc_seconds_sum {s}
"""
    m = ExpositionMapper(ScrapeTarget("http://h:1/metrics"))
    m.convert(text.replace("{c}", "10").replace("{s}", "2"), 0.0)
    out = m.convert(text.replace("{c}", "20").replace("{s}", "5"), 2.0)
    assert by_name(out, "rpc_seconds:p50")[0].value == 0.2
    assert by_name(out, "rpc_seconds:p99")[0].value == 0.9
    assert by_name(out, "rpc_seconds:mean")[0].value == pytest.approx(0.3)
    assert by_name(out, "rpc_seconds_count:rate")[0].value == pytest.approx(5.0)


def test_allow_deny_relabel_and_caps() -> None:
    text = "".join(f"# TYPE g{i} gauge\ng{i}{{k=\"v\",secret=\"x\"}} {i}\n" for i in range(10))
    target = ScrapeTarget("http://h:1/metrics", allow=("g*",), deny=("g9",), labels={"job": "app"},
                          drop_labels=("secret",), max_series=5, prefix="app.")
    m = ExpositionMapper(target)
    out = m.convert(text, 0.0)
    assert len(out) == 5 and m.last_dropped == 4  # g0..g8 pass the lists; 5 kept, 4 over the cap
    assert out[0].name == "app.g0" and out[0].labels == {"k": "v", "job": "app", "instance": "h:1"}
    wide = "# TYPE w gauge\nw{" + ",".join(f'l{i}="x"' for i in range(16)) + "} 1\n"
    m2 = ExpositionMapper(ScrapeTarget("http://h:1/metrics"))
    assert m2.convert(wide, 0.0) == [] and m2.last_dropped == 1  # 16 labels + instance: over the cap
    federated = ExpositionMapper(ScrapeTarget("http://h:1/metrics", name="fed")).convert(
        '# TYPE up gauge\nup{instance="10.0.0.7:9100"} 1\n', 0.0)
    assert federated[0].labels == {"instance": "fed", "exported_instance": "10.0.0.7:9100"}


def test_unparsable_exposition_is_refused_with_the_target_named() -> None:
    m = ExpositionMapper(ScrapeTarget("http://h:1/metrics"))
    with pytest.raises(ValueError, match="h:1/metrics"):
        m.convert("this is { not prometheus\n", 0.0)


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"url": "ftp://x/metrics"}, "not an http:// or https:// URL"),
        ({"url": "http://x:1/m", "interval": "soon"}, "interval 'soon'"),
        ({"url": "http://x:1/m", "allow": 3}, "'allow' must be a list of strings"),
        ({"url": "http://x:1/m", "max_series": 0}, "max_series 0 must be >= 1"),
        ({"url": "http://x:1/m", "relabel": {}}, "unknown key(s) ['relabel']"),
        ({"interval": "1s"}, "needs at least a 'url'"),
    ],
)
def test_bad_scrape_entries_are_refused_naming_the_value(entry: dict, message: str, tmp_path: Path) -> None:
    import yaml

    cfg = tmp_path / "sidecar.yaml"
    cfg.write_text(yaml.safe_dump({"scrape": [entry]}))
    with pytest.raises(ValueError) as info:
        sidecar_sources(str(cfg))
    assert message in str(info.value)


def test_sidecar_config_and_flags_combine(tmp_path: Path) -> None:
    cfg = tmp_path / "sidecar.yaml"
    cfg.write_text("scrape:\n  - {url: 'http://127.0.0.1:9100/metrics', interval: 1s, allow: [node_cpu_*]}\n"
                   "checks:\n  - {url: 'http://127.0.0.1:8080/health', expect_status: 200, body_match: ok}\n")
    targets, checks = sidecar_sources(str(cfg), ["http://127.0.0.1:8000/metrics"], [], "5s", None)
    assert [(t.name, t.interval_s) for t in targets] == [("127.0.0.1:9100", 1.0), ("127.0.0.1:8000", 5.0)]
    assert targets[0].allow == ("node_cpu_*",) and targets[1].timeout_s == 5.0
    assert checks[0].expect_status == (200,) and checks[0].body_match == "ok"


APP = textwrap.dedent("""
    import sys, time
    from prometheus_client import Counter, Histogram, Gauge, start_http_server
    reqs = Counter("app_requests", "requests", ["route"])
    lat = Histogram("app_latency_seconds", "latency", buckets=(0.01, 0.05, 0.1, 0.5, 1.0))
    g = Gauge("app_queue_depth", "queue")
    reqs.labels(route="/infer")  # every family exists before the port opens: the first scrape already sees them
    start_http_server(int(sys.argv[1]), addr="127.0.0.1")
    i = 0
    while True:
        reqs.labels(route="/infer").inc(10)
        lat.observe(0.03 if i % 10 else 0.4)
        g.set(i % 7)
        i += 1
        time.sleep(0.01)
""")


@pytest.fixture
def app_exporter() -> Iterator[int]:
    """A prometheus_client app counting requests and timing them, on a free port."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-c", APP, str(port)], stderr=subprocess.PIPE)
    try:
        _wait_port(port, proc)
        yield port
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.fixture
def node_exporter() -> Iterator[int]:
    """Debian's prometheus-node-exporter on a free port (skips when it is not installed)."""
    exe = shutil.which("prometheus-node-exporter") or shutil.which("node_exporter")
    if exe is None:
        pytest.skip("prometheus-node-exporter is not installed (.ci/install-system-deps.sh installs it)")
    port = free_port()
    proc = subprocess.Popen([exe, f"--web.listen-address=127.0.0.1:{port}"], stderr=subprocess.PIPE)
    try:
        _wait_port(port, proc)
        yield port
    finally:
        proc.terminate()
        proc.wait(10)


async def _scrape_until_up(scraper: Scraper, timeout_s: float = 20.0) -> list:
    """Scrape target 0 until one scrape succeeds (a loaded machine can miss the 0.5 s deadline once)."""
    deadline = time.monotonic() + timeout_s
    while True:
        out = await scraper.scrape_once(0)
        if by_name(out, "scrape.up")[0].value == 1.0 or time.monotonic() > deadline:
            return out


def _observed(port: int) -> float:
    """How many latencies the app has observed so far (read straight from its exposition)."""
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    return float(next(ln.split()[1] for ln in body.splitlines() if ln.startswith("app_latency_seconds_count ")))


async def test_prometheus_client_app_yields_rates_and_quantiles(app_exporter: int) -> None:
    scraper = Scraper([ScrapeTarget(f"http://127.0.0.1:{app_exporter}/metrics", 0.5, name="app")])
    first = await _scrape_until_up(scraper)
    assert by_name(first, "scrape.up")[0].value == 1.0
    # the quantiles cover what was observed between two scrapes: wait for at least 20 observations
    # (two of them slow) rather than a fixed time, which a starved app may spend without observing any
    seen = _observed(app_exporter)
    await wait_for(lambda: _observed(app_exporter) >= seen + 20, what="20 observations by the app")
    out = await _scrape_until_up(scraper)
    assert by_name(out, "scrape.up")[0].value == 1.0
    (rate,) = by_name(out, "app_requests_total:rate")
    assert rate.labels == {"route": "/infer", "instance": "app"} and rate.value > 100
    p50 = by_name(out, "app_latency_seconds:p50")[0].value
    p99 = by_name(out, "app_latency_seconds:p99")[0].value
    assert 0.01 <= p50 <= 0.05 and 0.1 <= p99 <= 0.5
    assert 0 <= by_name(out, "app_queue_depth")[0].value < 7
    assert by_name(out, "process_resident_memory_bytes")  # the client's default collectors come along
    assert scraper.samples()[-len(out):] == out  # queued for the next batch, once


async def test_node_exporter_cpu_memory_and_network_arrive(node_exporter: int) -> None:
    scraper = Scraper([ScrapeTarget(f"http://127.0.0.1:{node_exporter}/metrics", 1.0)])
    await scraper.scrape_once(0)
    await asyncio.sleep(1.0)
    out = await scraper.scrape_once(0)
    assert by_name(out, "scrape.up")[0].value == 1.0
    cpu = by_name(out, "node_cpu_seconds_total:rate")
    assert cpu and {"cpu", "mode", "instance"} <= set(cpu[0].labels or {})
    assert sum(s.value for s in cpu if s.labels["mode"] == "idle") >= 0
    assert by_name(out, "node_memory_MemAvailable_bytes")[0].value > 0
    assert by_name(out, "node_network_receive_bytes_total:rate")
    assert by_name(out, "scrape.dropped")[0].value == 0


async def test_a_target_that_is_down_reports_up_zero() -> None:
    scraper = Scraper([ScrapeTarget(f"http://127.0.0.1:{free_port()}/metrics", 1.0, timeout_s=0.5)])
    out = await scraper.scrape_once(0)
    assert [(s.name, s.value) for s in out if s.name in ("scrape.up", "scrape.samples")] == [
        ("scrape.up", 0.0), ("scrape.samples", 0.0)]
    assert scraper.failures == 1


async def test_produce_publishes_scraped_samples_in_the_nodes_own_batch(nats_server: EmbeddedServer,
                                                                        app_exporter: int) -> None:
    nc = await nats.connect(nats_server.url)
    try:
        sub = await nc.subscribe("sw.metrics.c1.scraped")
        proc = subprocess.Popen(
            [sys.executable, "-m", "producers", "--nats", nats_server.url, "--cluster", "c1", "--node", "scraped",
             "--interval", "200ms", "--no-gpu", "--no-probes", "--scrape", f"http://127.0.0.1:{app_exporter}/metrics",
             "--scrape-interval", "200ms"],
            stderr=subprocess.PIPE,
        )
        try:
            names: set[str] = set()
            deadline = time.monotonic() + 30
            # the scraped rate, and the node's own metrics riding in the same batches
            while not {"app_requests_total:rate", "cpu.percent"} <= names:
                assert time.monotonic() < deadline, f"no scraped rate or CPU % in the node's batches; saw {sorted(names)[:20]}"
                msg = await sub.next_msg(timeout=10)
                batch = decode_batch(msg.data)
                names |= {s.name for s in batch.samples}
        finally:
            proc.terminate()
            proc.wait(20)
    finally:
        await nc.close()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--scrape", "ftp://x/metrics"], "scrape url 'ftp://x/metrics' is not an http:// or https:// URL"),
        (["--http-check", "localhost/health"], "http check url 'localhost/health' is not an http:// or https:// URL"),
        (["--scrape", "http://x:1/m", "--scrape-interval", "often"], "interval 'often'"),
        (["--config", "/nonexistent/sidecar.yaml"], "sidecar config '/nonexistent/sidecar.yaml' does not exist"),
    ],
)
def test_produce_refuses_bad_scrape_and_check_options(args: list[str], message: str) -> None:
    from typer.testing import CliRunner

    from swarmwatch.cli import app

    result = CliRunner().invoke(app, ["produce", "--nats", "nats://127.0.0.1:1", *args])
    text = result.output + (result.stderr if result.stderr_bytes is not None else "")
    assert result.exit_code == 2 and message in text and "Traceback" not in text


def test_allow_list_filters_before_parsing_and_matches_either_counter_name() -> None:
    text = """\
# HELP node_cpu_seconds_total Seconds.
# TYPE node_cpu_seconds_total counter
node_cpu_seconds_total{cpu="0",mode="idle"} 10
# TYPE node_memory_MemAvailable_bytes gauge
node_memory_MemAvailable_bytes 1e9
# TYPE go_gc_duration_seconds summary
go_gc_duration_seconds{quantile="0.5"} 0.001
go_gc_duration_seconds_sum 1
go_gc_duration_seconds_count 10
untyped_thing 3
"""
    t = ScrapeTarget("http://h:1/metrics", allow=("node_cpu_seconds_total", "node_memory_*", "untyped_*"))
    kept = t.prefilter(text)
    assert "go_gc" not in kept and "node_cpu_seconds_total{" in kept and "untyped_thing 3" in kept
    m = ExpositionMapper(t)
    m.convert(text, 0.0)
    out = m.convert(text.replace("} 10", "} 12"), 1.0)
    assert {s.name for s in out} == {"node_cpu_seconds_total:rate", "node_memory_MemAvailable_bytes", "untyped_thing"}
    denied = ScrapeTarget("http://h:1/metrics", deny=("node_cpu_seconds",))
    assert "node_cpu" not in denied.prefilter(text) and "go_gc_duration_seconds_count 10" in denied.prefilter(text)
