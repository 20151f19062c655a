"""HTTP health checks: up/down, status, latency and TLS days left per target; the built-in endpoint_down rule."""
from __future__ import annotations

import shutil
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest

from processors import ThresholdRules, default_rules
from producers.checks import HealthChecker, HttpCheck
from producers.options import sidecar_sources
from schemas import AlertStatus, MetricBatch, Sample, Severity
from tests.support import http_server


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        if self.path == "/slow":
            time.sleep(1.5)
        if self.path == "/close":
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        status, body = {"/fail": (503, b"unavailable"), "/degraded": (200, b'{"status": "degraded"}')}.get(
            self.path, (200, b'{"status": "ok"}'))
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def _serve(context: ssl.SSLContext | None = None) -> Iterator[str]:
    with http_server(_Handler, context) as srv:
        yield f"{'https' if context else 'http'}://127.0.0.1:{srv.server_address[1]}"


@pytest.fixture
def server() -> Iterator[str]:
    """A local server: / ok, /slow answers after 1.5 s, /fail 503, /close hangs up, /degraded a bad body."""
    yield from _serve()


@pytest.fixture
def tls_server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """The same server over TLS with a self-signed certificate valid for 12 days (made by openssl)."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "12", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True, timeout=60)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    for url in _serve(ctx):
        yield url, cert


def values(samples: list[Sample]) -> dict[str, float]:
    return {s.name: s.value for s in samples}


async def _run(check: HttpCheck) -> tuple[object, dict[str, float]]:
    checker = HealthChecker([check])
    result = await checker.check_once(0)
    samples = checker.samples()
    assert all(s.labels == {"target": check.name} for s in samples)
    return result, values(samples)


async def test_a_healthy_endpoint_is_up_with_status_and_latency(server: str) -> None:
    result, v = await _run(HttpCheck(server + "/health", 1.0, name="api"))
    assert v["http.up"] == 1.0 and v["http.status_code"] == 200 and 0 < v["http.latency_ms"] < 1000
    assert "http.tls_days_left" not in v  # plain http


async def test_a_failing_endpoint_is_down_with_its_status(server: str) -> None:
    result, v = await _run(HttpCheck(server + "/fail", 1.0))
    assert v["http.up"] == 0.0 and v["http.status_code"] == 503
    assert "status 503" in result.reason  # type: ignore[attr-defined]


async def test_a_slow_endpoint_times_out_and_is_down(server: str) -> None:
    t0 = time.monotonic()
    result, v = await _run(HttpCheck(server + "/slow", 5.0, timeout_s=0.3))
    assert time.monotonic() - t0 < 1.4  # the check does not wait for the slow answer
    assert v["http.up"] == 0.0 and v["http.status_code"] == 0
    assert "timed out" in result.reason  # type: ignore[attr-defined]


async def test_a_connection_closed_without_answer_is_down(server: str) -> None:
    result, v = await _run(HttpCheck(server + "/close", 1.0))
    assert v["http.up"] == 0.0 and v["http.status_code"] == 0
    assert "closed" in result.reason or "reset" in result.reason.lower()  # type: ignore[attr-defined]


async def test_refused_connection_is_down() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    result, v = await _run(HttpCheck(f"http://127.0.0.1:{port}/health", 1.0))
    assert v["http.up"] == 0.0 and "Refused" in result.reason  # type: ignore[attr-defined]


async def test_body_match_and_expected_status(server: str) -> None:
    _, ok = await _run(HttpCheck(server + "/health", 1.0, body_match=r'"status":\s*"ok"'))
    assert ok["http.up"] == 1.0
    result, bad = await _run(HttpCheck(server + "/degraded", 1.0, body_match=r'"status":\s*"ok"'))
    assert bad["http.up"] == 0.0 and bad["http.status_code"] == 200 and "body" in result.reason  # type: ignore[attr-defined]
    _, want_503 = await _run(HttpCheck(server + "/fail", 1.0, expect_status=(503,)))
    assert want_503["http.up"] == 1.0


async def test_tls_endpoint_reports_days_until_certificate_expiry(tls_server: tuple[str, Path]) -> None:
    url, cert = tls_server
    _, v = await _run(HttpCheck(url + "/health", 1.0, ca=str(cert)))
    assert v["http.up"] == 1.0 and 11.0 < v["http.tls_days_left"] <= 12.0
    _, unverified = await _run(HttpCheck(url + "/health", 1.0, tls_verify=False))
    assert unverified["http.up"] == 1.0 and 11.0 < unverified["http.tls_days_left"] <= 12.0


async def test_untrusted_certificate_is_down_and_says_why(tls_server: tuple[str, Path]) -> None:
    url, _ = tls_server
    result, v = await _run(HttpCheck(url + "/health", 1.0))
    assert v["http.up"] == 0.0 and "not trusted" in result.reason  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"url": "localhost:80"}, "not an http:// or https:// URL"),
        ({"url": "http://x/h", "expect_status": 999}, "expect_status 999 is not an HTTP status"),
        ({"url": "http://x/h", "body_match": "("}, "body_match '(' is not a regular expression"),
        ({"url": "http://x/h", "ca": "/nonexistent/ca.pem"}, "CA file '/nonexistent/ca.pem' does not exist"),
        ({"url": "http://x/h", "expect": 200}, "unknown key(s) ['expect']"),
    ],
)
def test_bad_check_entries_are_refused_naming_the_value(entry: dict, message: str, tmp_path: Path) -> None:
    import yaml

    cfg = tmp_path / "sidecar.yaml"
    cfg.write_text(yaml.safe_dump({"checks": [entry]}))
    with pytest.raises(ValueError) as info:
        sidecar_sources(str(cfg))
    assert message in str(info.value)


def test_endpoint_down_is_a_built_in_rule_with_for() -> None:
    (rule,) = [r for r in default_rules() if r.name == "endpoint_down"]
    assert rule.metric == "http.up" and rule.severity is Severity.CRITICAL and rule.for_s == 30.0
    op = ThresholdRules(default_rules())
    t0 = 1_700_000_000.0
    out = []
    for i in range(0, 45, 5):  # a check every 5 s: api down from t0, db always up
        samples = [Sample("http.up", 0.0, labels={"target": "api"}), Sample("http.up", 1.0, labels={"target": "db"})]
        out += [(i, e.message) for e in op.on_metrics(MetricBatch("c1", "n1", t0 + i, samples), now=0.0)]
    ((fired_at, alert),) = out
    assert fired_at == 30  # not before the condition held for 30 s
    assert alert.rule == "endpoint_down" and alert.status is AlertStatus.FIRING
    assert alert.started_at == t0 and "target=api" in alert.summary
    back = op.on_metrics(MetricBatch("c1", "n1", t0 + 50, [Sample("http.up", 1.0, labels={"target": "api"})]), now=0.0)
    assert [e.message.status for e in back] == [AlertStatus.RESOLVED]
