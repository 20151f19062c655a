"""The dashboard in headless Chromium (Debian's /usr/bin/chromium), driven over the DevTools protocol.

It must list the fleet's nodes, draw charts for the selected node, and show an
alert that fires while the page is open, pushed over the WebSocket.
"""
from __future__ import annotations

import asyncio
import base64
import itertools
import json
import os
import shutil
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import nats
import pytest
from websockets.asyncio.client import connect as ws_connect

from schemas import Alert, AlertKind, AlertStatus, SeriesStats, Severity, WindowAggregate, encode, subjects
from sinks.api import ApiServer
from swarmwatch.server import EmbeddedServer

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="chromium not found: apt-get install -y chromium chromium-driver (see .ci/install-system-deps.sh)"
)
NODES = 40


class Browser:
    """A headless Chromium page spoken to over the Chrome DevTools Protocol."""

    def __init__(self, profile: Path) -> None:
        self.profile = profile
        self.proc: subprocess.Popen[bytes] | None = None
        self.ws: Any = None
        self.ids = itertools.count(1)
        self.console: list[str] = []

    async def start(self) -> None:
        self.proc = subprocess.Popen(
            [CHROMIUM, "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
             "--remote-debugging-port=0", f"--user-data-dir={self.profile}", "--window-size=1280,1000", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        port_file = self.profile / "DevToolsActivePort"
        deadline = time.monotonic() + 30
        while not port_file.exists() or not port_file.read_text().strip():
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise RuntimeError("chromium did not open its DevTools port")
            await asyncio.sleep(0.1)
        port = int(port_file.read_text().split()[0])
        async with httpx.AsyncClient() as c:
            for _ in range(100):
                targets = (await c.get(f"http://127.0.0.1:{port}/json/list")).json()
                pages = [t for t in targets if t["type"] == "page"]
                if pages:
                    break
                await asyncio.sleep(0.1)
        self.ws = await ws_connect(pages[0]["webSocketDebuggerUrl"], max_size=64 * 1024 * 1024)
        await self.call("Runtime.enable")

    async def call(self, method: str, **params: Any) -> dict[str, Any]:
        i = next(self.ids)
        await self.ws.send(json.dumps({"id": i, "method": method, "params": params}))
        while True:
            msg = json.loads(await asyncio.wait_for(self.ws.recv(), 30))
            if msg.get("method") == "Runtime.exceptionThrown":
                self.console.append(str(msg["params"]["exceptionDetails"]))
            if msg.get("id") == i:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg["result"]

    async def eval(self, expr: str) -> Any:
        r = await self.call("Runtime.evaluate", expression=expr, returnByValue=True)
        if "exceptionDetails" in r:
            raise RuntimeError(f"{expr}: {r['exceptionDetails']}")
        return r["result"].get("value")

    async def wait_for(self, expr: str, timeout_s: float = 15.0) -> Any:
        deadline = time.monotonic() + timeout_s
        last_error = ""
        while True:
            try:
                v = await self.eval(expr)
            except RuntimeError as exc:  # e.g. the page is still loading
                v, last_error = None, str(exc)
            if v:
                return v
            if time.monotonic() > deadline:
                raise AssertionError(f"page never satisfied {expr!r}; last error: {last_error}; page errors: {self.console}")
            await asyncio.sleep(0.1)

    async def open(self, url: str, timeout_s: float = 60.0) -> None:
        """Navigate to ``url`` and wait until that page has loaded (its load event fired).

        Loading is the readiness signal the checks after it build on: on a starved machine a
        fresh renderer can take longer than any one check's own wait, so it is waited for
        separately, and a navigation Chromium refuses fails here, naming why.
        """
        origin = url.split("/", 3)[:3]
        nav = await self.call("Page.navigate", url=url)
        assert "errorText" not in nav, f"navigation to {url} failed: {nav['errorText']}"
        await self.wait_for(f"location.origin === {'/'.join(origin)!r} && document.readyState === 'complete'", timeout_s)

    async def screenshot(self, path: Path) -> None:
        r = await self.call("Page.captureScreenshot", format="png")
        path.write_bytes(base64.b64decode(r["data"]))

    async def close(self) -> None:
        if self.ws is not None:
            await self.ws.close()
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture
async def browser(tmp_path: Path) -> AsyncIterator[Browser]:
    b = Browser(tmp_path / "chromium-profile")
    b.profile.mkdir()
    await b.start()
    try:
        yield b
    finally:
        await b.close()


def _agg(node: str, end: float, cpu: float) -> WindowAggregate:
    s = [
        SeriesStats("cpu.percent", 10, cpu - 3, cpu + 3, cpu, cpu * 10, cpu, cpu + 2, cpu + 3, cpu, unit="%"),
        SeriesStats("mem.percent", 10, 50, 52, 51, 510, 51, 52, 52, 51, unit="%"),
        SeriesStats("net.avg_latency_ms", 10, 10, 30, 20, 200, 20, 28, 30, 21, unit="ms"),
    ]
    return WindowAggregate("lab", node, 10.0, end - 10, end, s)


async def test_dashboard_lists_the_nodes_and_shows_a_live_alert(nats_server: EmbeddedServer, nc: Any, browser: Browser, tmp_path: Path) -> None:
    conn = await nats.connect(nats_server.url)
    api = ApiServer(conn, port=0, backfill_s=0, alert_backfill_s=0)
    await api.start()
    try:
        end = float(int(time.time()) // 10 * 10)
        for k in range(6):
            for i in range(NODES):
                await nc.publish(subjects.agg(10, "lab", f"node-{i:02d}"), encode(_agg(f"node-{i:02d}", end - 50 + 10 * k, 20 + i + k)))
        await nc.flush()
        deadline = time.monotonic() + 10
        while len(api.state.nodes) < NODES or any(st.agg_end < end for st in api.state.nodes.values()):
            assert time.monotonic() < deadline, "API never saw the fleet"
            await asyncio.sleep(0.05)

        await browser.open(api.url + "/")
        assert await browser.wait_for(f"document.getElementById('c-total').textContent === '{NODES}'")
        # the virtualised table renders the visible rows; every node is in the node map
        names = await browser.wait_for("[...document.querySelectorAll('#tbody .tr')].filter(r => r.style.display !== 'none').map(r => r.dataset.node)")
        assert "node-00" in names and len(names) >= 5
        assert await browser.eval("document.querySelectorAll('#heatmap i').length") == NODES
        await browser.eval("document.getElementById('search').value = 'node-3'; document.getElementById('search').dispatchEvent(new Event('input'))")
        assert await browser.wait_for("document.getElementById('fleet-count').textContent === '10 of 40 nodes'")
        # charts of the selected node are drawn with uPlot
        assert await browser.wait_for("document.querySelectorAll('#charts .uplot').length >= 3")
        await browser.wait_for("document.getElementById('conn').classList.contains('live')")
        assert await browser.eval("document.getElementById('node-title').textContent") == "node-00"  # first row is selected
        # a new aggregate of the selected node moves its charts, live
        await nc.publish(subjects.agg(10, "lab", "node-00"), encode(_agg("node-00", end + 10, 77.0)))
        await nc.flush()
        assert await browser.wait_for("document.querySelector('#charts [data-group=cpu] h3 .muted').textContent === '77%'", 10)

        alert = Alert(
            id="cpu-critical-lab-node-07", status=AlertStatus.FIRING, severity=Severity.CRITICAL, kind=AlertKind.THRESHOLD,
            rule="cpu_critical", cluster="lab", node="node-07", started_at=time.time(), summary="cpu.percent 97% > 95%",
        )
        await nc.publish(subjects.alerts("critical", "lab", "node-07", alert.rule), encode(alert))
        await nc.flush()
        text = await browser.wait_for("document.getElementById('alert-list').innerText.includes('cpu_critical · node-07') && document.getElementById('alert-list').innerText", 10)
        assert "97% > 95%" in text
        assert await browser.wait_for("document.getElementById('toasts').innerText.includes('node-07')", 5)
        assert await browser.wait_for("document.getElementById('c-critical').textContent === '1'", 10)
        assert browser.console == []
        if os.environ.get("SWARMWATCH_SCREENSHOT_DIR"):
            await browser.screenshot(Path(os.environ["SWARMWATCH_SCREENSHOT_DIR"]) / "dashboard-test.png")
    finally:
        await api.stop()
        await conn.close()


HOLD_WEBSOCKET = """
window.__holdWs = true;
const RealWebSocket = window.WebSocket;
window.WebSocket = function (url, protocols) { return new RealWebSocket(window.__holdWs ? 'ws://127.0.0.1:9/' : url, protocols); };
window.WebSocket.prototype = RealWebSocket.prototype;
"""


def _firing(node: str) -> Alert:
    return Alert(
        id=f"cpu-critical-lab-{node}", status=AlertStatus.FIRING, severity=Severity.CRITICAL, kind=AlertKind.THRESHOLD,
        rule="cpu_critical", cluster="lab", node=node, started_at=time.time(), summary="cpu.percent 97% > 95%",
    )


async def _publish_node(nc: Any, node: str) -> None:
    """One 10 s aggregate of ``node``, flushed: the dashboard's fleet then counts it."""
    await nc.publish(subjects.agg(10, "lab", node), encode(_agg(node, time.time(), 30)))
    await nc.flush()


async def _reconnects_and_shows_the_alert(browser: Browser) -> None:
    """The page's WebSocket is live again and the alert list shows n0's critical CPU alert."""
    await browser.wait_for("document.getElementById('conn').classList.contains('live')", 30)
    assert await browser.wait_for("document.getElementById('alert-list').innerText.includes('cpu_critical · n0')", 10)


async def test_an_alert_that_fires_before_the_websocket_connects_is_shown_once_it_does(nats_server: EmbeddedServer, nc: Any, browser: Browser) -> None:
    conn = await nats.connect(nats_server.url)
    api = ApiServer(conn, port=0, backfill_s=0, alert_backfill_s=0)
    await api.start()
    try:
        await _publish_node(nc, "n0")
        # the page loads its alert list, but its WebSocket cannot connect yet (it is pointed at a closed port until released)
        await browser.call("Page.enable")
        await browser.call("Page.addScriptToEvaluateOnNewDocument", source=HOLD_WEBSOCKET)
        await browser.open(api.url + "/")
        await browser.wait_for("document.getElementById('c-total').textContent === '1'")
        await browser.wait_for("document.getElementById('alert-list').innerText.includes('no active alerts')")
        alert = _firing("n0")
        await nc.publish(subjects.alerts("critical", "lab", "n0", alert.rule), encode(alert))
        await nc.flush()
        deadline = time.monotonic() + 10
        while alert.id not in api.state.active_alerts:  # fired, with no WebSocket client to push it to
            assert time.monotonic() < deadline, "API never saw the alert"
            await asyncio.sleep(0.05)
        assert not api.hub.clients
        await browser.eval("window.__holdWs = false")
        await _reconnects_and_shows_the_alert(browser)
    finally:
        await api.stop()
        await conn.close()


async def test_an_alert_that_fires_while_the_websocket_is_down_is_shown_after_it_reconnects(nats_server: EmbeddedServer, nc: Any, browser: Browser) -> None:
    conn = await nats.connect(nats_server.url)
    api = ApiServer(conn, port=0, backfill_s=0, alert_backfill_s=0)
    await api.start()
    try:
        await _publish_node(nc, "n0")
        await browser.open(api.url + "/")
        await browser.wait_for("document.getElementById('c-total').textContent === '1'")
        await browser.wait_for("document.getElementById('conn').classList.contains('live')")
        await browser.wait_for("document.getElementById('alert-list').innerText.includes('no active alerts')")
        # the server goes away (the page's WebSocket drops) and comes back on the same port, having seen an alert meanwhile
        state, port = api.state, api.bound_port
        await api.stop()
        await browser.wait_for("document.getElementById('conn').classList.contains('down')")
        state.apply_alert(_firing("n0"))
        api = ApiServer(conn, port=port, state=state, backfill_s=0, alert_backfill_s=0)
        await api.start()
        await _reconnects_and_shows_the_alert(browser)
    finally:
        await api.stop()
        await conn.close()


async def test_dashboard_fits_a_phone_screen(nats_server: EmbeddedServer, nc: Any, browser: Browser) -> None:
    conn = await nats.connect(nats_server.url)
    api = ApiServer(conn, port=0, backfill_s=0, alert_backfill_s=0)
    await api.start()
    try:
        now = time.time()
        for i in range(5):
            await nc.publish(subjects.agg(10, "lab", f"n{i}"), encode(_agg(f"n{i}", now, 30)))
        await nc.flush()
        await browser.call("Emulation.setDeviceMetricsOverride", width=390, height=844, deviceScaleFactor=2, mobile=True)
        await browser.open(api.url + "/")
        await browser.wait_for("document.getElementById('c-total').textContent === '5'")
        assert await browser.wait_for("document.querySelectorAll('#charts .uplot').length >= 1")
        # nothing wider than the screen: no horizontal scrolling
        assert await browser.eval("document.documentElement.scrollWidth") <= 390
    finally:
        await api.stop()
        await conn.close()


async def test_api_docs_render_from_bundled_files(nats_server: EmbeddedServer, browser: Browser) -> None:
    conn = await nats.connect(nats_server.url)
    api = ApiServer(conn, port=0, backfill_s=0, alert_backfill_s=0)
    await api.start()
    try:
        await browser.open(api.url + "/docs")
        ops = await browser.wait_for("document.querySelectorAll('.opblock').length", 20)
        assert ops >= 9
        scripts = await browser.eval("[...document.scripts].map(s => s.src).filter(Boolean)")
        assert scripts and all(s.startswith(api.url) for s in scripts)  # nothing from a CDN
    finally:
        await api.stop()
        await conn.close()
