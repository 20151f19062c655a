"""The dashboard travels in time: a past range shows the fleet, alerts and health as they were, and its URL reproduces the view."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import nats
import pytest

from schemas import encode, subjects
from sinks.api import ApiServer
from sinks.parquet import ParquetFormat
from sinks.rows import utc_date
from sinks.segments import partition_dir, segment_name, write_atomic
from swarmwatch.server import EmbeddedServer
from tests.test_dashboard_browser import CHROMIUM, Browser, _agg, browser  # noqa: F401  (browser is a fixture)

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="chromium not found (see .ci/install-system-deps.sh)")

PAST = (time.time() // 86_400.0) * 86_400.0 - 86_400.0 + 10 * 3600.0  # yesterday 10:00 UTC
OLD_NODES = [f"old-{i:02d}" for i in range(5)]


def _iso(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def _put(root: Path, kind: str, rows: list[dict[str, Any]]) -> None:
    t = rows[0]["start"] if kind == "agg" else rows[0]["ts"]
    path = partition_dir(root, "parquet", kind, utc_date(t), "lab") / segment_name(kind, rows[0]["_seq"], rows[-1]["_seq"], "parquet")
    write_atomic(path, lambda f: ParquetFormat().write(f, kind, rows))


def past_store(root: Path) -> None:
    """An hour of 10 s aggregates of five nodes that are gone now; old-03 turns critical at 10:30, resolved at 11:30."""
    rows, seq = [], 0
    for k in range(1, 361):
        end = PAST + 10 * k
        for i, n in enumerate(OLD_NODES):
            seq += 1
            cpu = 97.0 if n == "old-03" and k > 180 else 30.0 + i
            for metric, v, unit in (("cpu.percent", cpu, "%"), ("mem.percent", 40.0, "%")):
                rows.append({"window_s": 10.0, "start": end - 10, "end": end, "cluster": "lab", "node": n, "metric": metric,
                             "labels": None, "unit": unit, "count": 10, "min": v, "max": v, "mean": v, "sum": 10 * v, "p50": v,
                             "p95": v, "p99": v, "last": v, "late": 0, "closed_by": "watermark", "_seq": seq})
    _put(root, "agg", rows)
    alert = {"id": "cpu-old-03", "severity": "critical", "kind": "threshold", "rule": "cpu_critical", "cluster": "lab",
             "node": "old-03", "started_at": PAST + 1800, "summary": "cpu 97% > 95%", "metric": "cpu.percent", "threshold": 95.0,
             "details": None}
    _put(root, "alerts", [{**alert, "ts": PAST + 1800, "status": "firing", "ended_at": None, "value": 97.0, "_seq": 50_001},
                          {**alert, "ts": PAST + 5400, "status": "resolved", "ended_at": PAST + 5400, "value": 20.0, "_seq": 50_002}])
    _put(root, "health", [{"ts": PAST + 60 * m, "cluster": "lab", "overall_health": 60.0 + m / 2, "peer_count": 5, "expected_peers": 5,
                           "connection_success_rate": 1.0, "avg_latency": 5.0, "bandwidth_usage": 0.0, "components": {}, "nodes": {},
                           "_seq": 60_000 + m} for m in range(61)])


async def test_a_past_range_shows_the_fleet_alerts_and_health_as_they_were_and_its_url_reproduces_it(
    nats_server: EmbeddedServer, nc: Any, browser: Browser, tmp_path: Path,  # noqa: F811
) -> None:
    store = tmp_path / "store"
    past_store(store)
    conn = await nats.connect(nats_server.url)
    api = ApiServer(conn, port=0, backfill_s=0, alert_backfill_s=0, store_root=store)
    await api.start()
    try:
        now = time.time()
        for i in range(3):  # today's fleet: other nodes
            await nc.publish(subjects.agg(10, "lab", f"live-{i}"), encode(_agg(f"live-{i}", now, 20)))
        await nc.flush()
        since, until = PAST, PAST + 3600
        url = f"{api.url}/?since={_iso(since)}&until={_iso(until)}&node=old-02"
        await browser.open(url)
        assert await browser.wait_for("document.getElementById('c-total').textContent === '5'")
        names = await browser.wait_for("[...document.querySelectorAll('#tbody .tr')].filter(r => r.style.display !== 'none').map(r => r.dataset.node)")
        assert sorted(names) == OLD_NODES
        assert await browser.eval("document.getElementById('c-critical').textContent") == "1"  # old-03 was critical at 11:00
        text = await browser.wait_for("document.getElementById('alert-list').innerText")
        assert "cpu_critical · old-03" in text and "resolved" not in text  # resolved only later, at 11:30
        assert await browser.eval("!document.getElementById('tt-banner').hidden")
        assert _iso(since).replace("T", " ") in await browser.eval("document.getElementById('tt-text').textContent")
        assert await browser.wait_for("document.getElementById('node-title').textContent === 'old-02'")
        assert await browser.wait_for("document.querySelectorAll('#charts .uplot').length >= 2")  # charts from the store
        cpu_points = await browser.eval("document.querySelector('#charts [data-group=cpu] .uplot') ? 1 : 0")
        assert cpu_points == 1
        assert "at the end of the range" in await browser.wait_for("document.getElementById('health-note').textContent")
        search = await browser.eval("location.search")
        assert f"since={_iso(since)}" in search and f"until={_iso(until)}" in search and "node=old-02" in search

        # back to live: today's fleet
        await browser.eval("(() => { const r = document.getElementById('range'); r.value = ''; r.dispatchEvent(new Event('change')); })()")
        assert await browser.wait_for("document.getElementById('c-total').textContent === '3'")
        assert "since" not in await browser.eval("location.search")
        # a custom range picked in the page (UTC) goes to the URL
        await browser.eval(
            "(() => { const r = document.getElementById('range'); r.value = 'custom'; r.dispatchEvent(new Event('change')); })();"
            f"document.getElementById('t-from').value = '{_iso(since)[:19]}'; document.getElementById('t-to').value = '{_iso(since + 900)[:19]}';"
            "document.getElementById('t-go').click()"
        )
        assert await browser.wait_for("document.getElementById('c-total').textContent === '5'")
        assert await browser.eval("document.getElementById('c-critical').textContent") == "0"  # 10:15: nothing fired yet
        assert f"until={_iso(since + 900)}" in await browser.eval("location.search")
        assert browser.console == []
    finally:
        await api.stop()
        await conn.close()


async def test_snapshot_api_bounds_the_range_and_needs_a_store(nats_server: EmbeddedServer, tmp_path: Path) -> None:
    store = tmp_path / "store"
    past_store(store)
    api = ApiServer(None, port=0, store_root=store)
    bare = ApiServer(None, port=0)
    await api.start()
    await bare.start()
    try:
        async with httpx.AsyncClient() as c:
            r = (await c.get(f"{api.url}/api/history/snapshot", params={"since": PAST, "until": PAST + 2000})).json()
            assert r["fleet"]["nodes"] == 5 and r["fleet"]["active_alerts"] == 1
            assert [a["id"] for a in r["alerts"]["active"]] == ["cpu-old-03"]
            assert {row["node"]: row["cpu"] for row in r["items"]}["old-03"] == 97.0
            assert (await c.get(f"{api.url}/api/history/snapshot", params={"since": 0, "until": PAST})).status_code == 400
            assert (await c.get(f"{bare.url}/api/history/snapshot", params={"since": PAST, "until": PAST + 60})).status_code == 404
    finally:
        await api.stop()
        await bare.stop()
