"""The API under attack from a web page the user opens, and from token guessers (real server, real HTTP)."""
from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import httpx
import orjson
import pytest
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import InvalidStatus

from schemas import SeriesStats, WindowAggregate
from sinks.api import ApiServer, FleetState
from sinks.api.security import MIN_TOKEN_LEN, LoginLimiter, ws_token_protocol

TOKEN = "a-long-enough-api-token-42"


def _state() -> FleetState:
    st = FleetState()
    now = time.time()
    st.apply_agg(WindowAggregate("c1", "n1", 10.0, now - 10, now, [SeriesStats("cpu.percent", 1, 5, 5, 5, 5, 5, 5, 5, 5)]))
    return st


@pytest.fixture
async def open_api() -> AsyncIterator[ApiServer]:
    server = ApiServer(None, port=0, state=_state())
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@pytest.fixture
async def token_api() -> AsyncIterator[ApiServer]:
    server = ApiServer(None, port=0, state=_state(), token=TOKEN)
    server.app.state.login_limiter.max_failures = 5
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


async def test_a_foreign_host_header_is_refused_so_dns_rebinding_cannot_read_the_api(open_api: ApiServer) -> None:
    async with httpx.AsyncClient(base_url=open_api.url, timeout=10) as c:
        assert (await c.get("/api/nodes")).status_code == 200
        r = await c.get("/api/nodes", headers={"Host": f"evil.example:{open_api.bound_port}"})
        assert r.status_code == 400 and "n1" not in r.text
        assert (await c.get("/api/nodes", headers={"Host": f"localhost:{open_api.bound_port}"})).status_code == 200


async def test_a_foreign_origin_cannot_open_the_websocket_or_call_the_api(open_api: ApiServer) -> None:
    ws_url = open_api.url.replace("http", "ws") + "/ws"
    with pytest.raises(InvalidStatus) as info:
        async with ws_connect(ws_url, origin="http://evil.example"):  # type: ignore[arg-type]
            pass
    assert info.value.response.status_code == 403
    async with ws_connect(ws_url, origin=open_api.url) as ws:  # type: ignore[arg-type]  # the dashboard's own origin
        assert orjson.loads(await asyncio.wait_for(ws.recv(), 5))["type"] == "hello"
    async with httpx.AsyncClient(base_url=open_api.url, timeout=10) as c:
        assert (await c.get("/api/nodes", headers={"Origin": "http://evil.example"})).status_code == 403
        assert (await c.get("/api/nodes", headers={"Origin": "null"})).status_code == 403
        assert (await c.get("/api/nodes", headers={"Origin": open_api.url})).status_code == 200
        assert 'swarmwatch_api_auth_refused_total{reason="origin"} 3.0' in (await c.get("/metrics")).text


def test_a_short_api_token_is_refused_with_the_minimum_length() -> None:
    with pytest.raises(ValueError, match=f"at least {MIN_TOKEN_LEN}"):
        ApiServer(None, port=0, token="short-token")
    with pytest.raises(ValueError, match=f"at least {MIN_TOKEN_LEN}"):
        ApiServer(None, host="0.0.0.0", port=0, token="x" * (MIN_TOKEN_LEN - 1))


async def test_a_token_in_the_url_is_not_accepted_but_headers_and_the_websocket_subprotocol_are(token_api: ApiServer) -> None:
    async with httpx.AsyncClient(base_url=token_api.url, timeout=10) as c:
        assert (await c.get("/api/nodes", params={"token": TOKEN})).status_code == 401
        assert (await c.get("/api/nodes", headers={"X-Swarmwatch-Token": TOKEN})).status_code == 200
    ws_url = token_api.url.replace("http", "ws") + "/ws"
    with pytest.raises(InvalidStatus):
        async with ws_connect(ws_url + f"?token={TOKEN}"):
            pass
    async with ws_connect(ws_url, subprotocols=["swarmwatch", ws_token_protocol(TOKEN)]) as ws:  # type: ignore[list-item]
        assert ws.subprotocol == "swarmwatch"
        assert orjson.loads(await asyncio.wait_for(ws.recv(), 5))["type"] == "hello"


async def test_repeated_wrong_tokens_are_throttled_even_when_the_right_one_follows(token_api: ApiServer) -> None:
    async with httpx.AsyncClient(base_url=token_api.url, timeout=10) as c:
        for i in range(5):
            assert (await c.get("/api/nodes", headers={"Authorization": f"Bearer guess-{i:020d}"})).status_code == 401
        r = await c.get("/api/nodes", headers={"Authorization": f"Bearer {TOKEN}"})
        assert r.status_code == 429 and int(r.headers["Retry-After"]) >= 1
    assert token_api.state.counters.auth_refused == {"token": 5, "throttled": 1}  # counted, on /metrics
    ws_url = token_api.url.replace("http", "ws") + "/ws"
    with pytest.raises(Exception):  # closed before accept: refused
        async with ws_connect(ws_url, additional_headers={"Authorization": f"Bearer {TOKEN}"}) as ws:
            await asyncio.wait_for(ws.recv(), 5)


def test_the_login_limiter_forgets_failures_after_its_window() -> None:
    lim = LoginLimiter(max_failures=3, window_s=60.0)
    for t in (0.0, 1.0, 2.0):
        lim.fail("1.2.3.4", now=t)
    assert lim.retry_after("1.2.3.4", now=3.0) == pytest.approx(57.0)
    assert lim.retry_after("5.6.7.8", now=3.0) == 0.0  # other clients unaffected
    assert lim.retry_after("1.2.3.4", now=60.5) == 0.0


async def test_history_queries_have_a_bounded_range(open_api: ApiServer) -> None:
    async with httpx.AsyncClient(base_url=open_api.url, timeout=10) as c:
        r = await c.get("/api/nodes/c1/n1/history", params={"metric": "cpu.percent", "since": "0"})
        assert r.status_code == 400 and "at most 7 days" in r.json()["detail"]
        r = await c.get("/api/clusters/c1/health", params={"since": "30d"})
        assert r.status_code == 400
        r = await c.get("/api/nodes/c1/n1/history", params={"metric": "cpu.percent", "since": "6d"})
        assert r.status_code == 200


async def test_metrics_speaks_openmetrics_by_accept_header_or_format_and_filters_by_match(open_api: ApiServer) -> None:
    async with httpx.AsyncClient(base_url=open_api.url, timeout=10) as c:
        r = await c.get("/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"})
        assert r.headers["content-type"].startswith("application/openmetrics-text") and r.text.endswith("# EOF\n")
        r = await c.get("/metrics", params={"format": "openmetrics"})
        assert r.text.endswith("# EOF\n")
        r = await c.get("/metrics", params={"match[]": 'swarmwatch_node_metric{stat="mean"}'})
        lines = [ln for ln in r.text.splitlines() if not ln.startswith("#")]
        assert len(lines) == 1 and 'metric="cpu.percent"' in lines[0]
        assert (await c.get("/metrics", params={"match[]": "{"})).status_code == 400
        assert (await c.get("/metrics", params={"format": "xml"})).status_code == 400


async def test_a_reverse_proxys_host_and_a_listed_origin_can_be_allowed_in_the_config(tmp_path: object) -> None:
    from swarmwatch.config import load_config

    cfg = tmp_path / "sw.yaml"  # type: ignore[operator]
    cfg.write_text("sinks:\n  api_allowed_hosts: [monitor.example.com]\n  api_allowed_origins: ['https://grafana.example.com']\n")
    sc = load_config(cfg).sinks
    server = ApiServer(None, port=0, state=_state(), extra_allowed_hosts=sc.api_allowed_hosts, allowed_origins=sc.api_allowed_origins)
    await server.start()
    try:
        async with httpx.AsyncClient(base_url=server.url, timeout=10) as c:
            assert (await c.get("/api/nodes", headers={"Host": "monitor.example.com"})).status_code == 200
            assert (await c.get("/api/nodes", headers={"Host": "other.example.com"})).status_code == 400
            assert (await c.get("/api/nodes", headers={"Origin": "https://grafana.example.com"})).status_code == 200
            assert (await c.get("/api/nodes", headers={"Origin": "https://evil.example.com"})).status_code == 403
    finally:
        await server.stop()


async def test_a_health_score_with_odd_node_entries_cannot_break_the_fleet_table(open_api: ApiServer) -> None:
    from schemas import HealthScore

    open_api.state.apply_health(HealthScore("c1", time.time(), 50.0, nodes={"n1": {"quality": "<b>x</b>", "status": ["x"]}}))
    async with httpx.AsyncClient(base_url=open_api.url, timeout=10) as c:
        for sort in ("health", "status", "node"):
            r = await c.get("/api/nodes", params={"sort": sort})
            assert r.status_code == 200, sort
        row = r.json()["items"][0]
        assert row["health"] is None and row["connection"] is None
