"""Hostile web pages and hostile data against the dashboard, in headless Chromium (see test_dashboard_browser)."""
from __future__ import annotations

import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from typing import Any

import nats
import pytest

from schemas import Alert, AlertKind, AlertStatus, Severity, encode, subjects
from sinks.api import ApiServer
from swarmwatch.server import EmbeddedServer
from tests.support import http_server, wait_for
from tests.test_dashboard_browser import Browser, _agg, browser, pytestmark  # noqa: F401  (fixture and skip marker)

TOKEN = "dashboard-token-0123456789"


@pytest.fixture
def other_site() -> Iterator[str]:
    """A page on another origin (another port), as any web site the user has open."""

    class Page(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            body = b"<!doctype html><title>elsewhere</title>"
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    with http_server(Page) as srv:
        yield f"http://127.0.0.1:{srv.server_port}/"


async def test_the_dashboard_takes_its_token_from_the_fragment_and_keeps_it_out_of_the_url(
    nats_server: EmbeddedServer, nc: Any, browser: Browser  # noqa: F811
) -> None:
    conn = await nats.connect(nats_server.url)
    api = ApiServer(conn, port=0, token=TOKEN, backfill_s=0, alert_backfill_s=0)
    await api.start()
    try:
        await nc.publish(subjects.agg(10, "lab", "n1"), encode(_agg("n1", time.time(), 30)))
        hostile = Alert(
            id="x1", status=AlertStatus.FIRING, severity=Severity.CRITICAL, kind=AlertKind.THRESHOLD, rule="cpu_critical",
            cluster="lab", node="n1", started_at=time.time(), summary='<img src=x onerror="window.__pwned=1">cpu',
        )
        await nc.publish(subjects.alerts("critical", "lab", "n1", "cpu_critical"), encode(hostile))
        await nc.flush()
        # the page reads the active alerts once at load, then follows the WebSocket: load it only when the API holds both
        await wait_for(lambda: ("lab", "n1") in api.state.nodes and "x1" in api.state.active_alerts, what="the API saw n1 and its alert")
        await browser.open(api.url + "/#token=" + TOKEN)
        assert await browser.wait_for("document.getElementById('c-total').textContent === '1'")
        await browser.wait_for("document.getElementById('conn').classList.contains('live')")  # WebSocket authenticated by subprotocol
        assert TOKEN not in await browser.eval("location.href")
        text = await browser.wait_for("document.getElementById('alert-list').innerText.includes('onerror') && document.getElementById('alert-list').innerText")
        assert '<img src=x onerror="window.__pwned=1">' in text  # shown as text
        assert await browser.eval("window.__pwned === undefined && document.querySelectorAll('#alert-list img').length === 0")
    finally:
        await api.stop()
        await conn.close()


async def test_a_page_on_another_origin_cannot_read_the_api_or_open_its_websocket(
    nats_server: EmbeddedServer, nc: Any, browser: Browser, other_site: str  # noqa: F811
) -> None:
    conn = await nats.connect(nats_server.url)
    api = ApiServer(conn, port=0, backfill_s=0, alert_backfill_s=0)  # the default: loopback, no token
    await api.start()
    try:
        await nc.publish(subjects.agg(10, "lab", "n1"), encode(_agg("n1", time.time(), 30)))
        await nc.flush()
        await browser.open(other_site)
        await browser.wait_for("document.title === 'elsewhere'")
        ws_url = api.url.replace("http", "ws") + "/ws"
        await browser.eval(
            f"window.__ws = 'pending'; const w = new WebSocket('{ws_url}');"
            "w.onmessage = () => { window.__ws = 'read'; }; w.onerror = () => { window.__ws = 'refused'; };"
        )
        assert await browser.wait_for("window.__ws !== 'pending' && window.__ws") == "refused"
        await browser.eval(
            f"window.__rest = 'pending'; fetch('{api.url}/api/nodes').then(r => r.text()).then(t => {{ window.__rest = t; }})"
            ".catch(() => { window.__rest = 'refused'; });"
        )
        assert await browser.wait_for("window.__rest !== 'pending' && window.__rest") == "refused"
    finally:
        await api.stop()
        await conn.close()
