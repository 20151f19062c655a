"""One line of config: an app exporter and a /health endpoint become series, alerts, API values and files."""
from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from http.server import BaseHTTPRequestHandler
from pathlib import Path

from schemas import AlertStatus
from sinks import read_records
from swarmwatch.server import free_port
from tests.support import first_alerts, start_http_server, wait_for
from tests.test_producer_scrape import app_exporter  # noqa: F401 - the fixture


class _Down(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802
        self.send_response(503)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


STORED = {"app_requests_total:rate", "app_latency_seconds:p50", "http.up", "scrape.up", "cpu.percent"}


def _stored(store: Path) -> set[str]:
    """The metric names the file sinks have written for box-1 so far."""
    try:
        return {r["metric"] for r in read_records(store, "metrics", node="box-1")}
    except OSError:  # nothing written yet
        return set()


def _latest(api_port: int) -> dict[str, float]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{api_port}/api/nodes/lab/box-1", timeout=5) as r:
            return json.loads(r.read())["latest"]
    except OSError:
        return {}


async def test_up_with_scrape_and_check_shows_series_raises_endpoint_down_and_writes_files(
    tmp_path: Path, app_exporter: int  # noqa: F811
) -> None:
    down = start_http_server(_Down)
    health_url = f"http://127.0.0.1:{down.server_address[1]}/health"
    rules = tmp_path / "rules.yaml"  # endpoint_down with a short `for`, so the test need not wait 30 s
    rules.write_text("rules:\n  - {name: endpoint_down, metric: http.up, op: '<', threshold: 0.5, severity: critical, "
                     "for: 1s}\n")
    port, api_port, data = free_port(), free_port(), tmp_path / "data"
    config = tmp_path / "swarmwatch.yaml"  # the one line: producer.scrape and producer.checks
    config.write_text(json.dumps({"producer": {
        "scrape": [{"url": f"http://127.0.0.1:{app_exporter}/metrics", "interval": "0.5s"}],
        "checks": [{"url": health_url, "interval": "0.5s"}]}}))
    proc = subprocess.Popen(
        [sys.executable, "-m", "swarmwatch", "up", "--config", str(config), "--data-dir", str(data), "--nats-port",
         str(port), "--cluster", "lab", "--node", "box-1", "--interval", "0.5s", "--rules", str(rules),
         "--api-port", str(api_port)],
        env=dict(os.environ), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 60
        alerts = await first_alerts(f"nats://127.0.0.1:{port}", "sw.alerts.critical.lab.box-1.endpoint_down", deadline)
        latest: dict[str, float] = {}
        while time.monotonic() < deadline and not any(k.startswith("app_requests_total:rate") for k in latest):
            latest = await asyncio.to_thread(_latest, api_port)
            await asyncio.sleep(0.5)
        # the file sinks flush on their own clock: wait until the store holds what is checked below, then stop
        await wait_for(lambda: _stored(data / "store") >= STORED, 30, "the scraped and checked series in the store")
    finally:
        proc.send_signal(signal.SIGINT)
        out = proc.communicate(timeout=60)[0].decode()
        down.shutdown()
        down.server_close()
    assert proc.returncode == 0, out
    assert alerts and alerts[0].status is AlertStatus.FIRING, out[-2000:]
    assert (alerts[0].details or {}).get("series", "").startswith("http.up{target=")
    rate_keys = [k for k in latest if k.startswith("app_requests_total:rate")]
    assert rate_keys and latest[rate_keys[0]] > 0, sorted(latest)[:40]
    assert any(k.startswith("http.up") and v == 0.0 for k, v in latest.items())
    names = {r["metric"] for r in read_records(data / "store", "metrics", node="box-1")}
    assert STORED <= names, sorted(names)[:40]


def test_up_refuses_a_bad_scrape_or_check_url_before_starting(tmp_path: Path) -> None:
    for flag, url, message in (("--scrape", "ftp://x/metrics", "scrape url 'ftp://x/metrics'"),
                               ("--http-check", "x/health", "http check url 'x/health'")):
        r = subprocess.run([sys.executable, "-m", "swarmwatch", "up", "--data-dir", str(tmp_path), flag, url],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 2 and message in r.stderr and "Traceback" not in r.stderr
