"""The HTTP API and WebSocket over a real nats-server: what is published shows up, live."""
from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import nats
import orjson
import pytest
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import InvalidStatus

from schemas import Alert, AlertKind, AlertStatus, HealthScore, MetricBatch, Sample, SeriesStats, Severity, TrustScore, WindowAggregate, encode, subjects
from sinks.api import ApiServer, FleetState
from sinks.api.live import LiveFeed
from swarmwatch.server import EmbeddedServer
from swarmwatch.streams import ensure_streams

TOKEN = "s3cret-token-0123456789"


def agg(node: str, end: float, cpu: float, cluster: str = "c1", window_s: float = 10.0) -> WindowAggregate:
    series = [
        SeriesStats("cpu.percent", 10, cpu - 2, cpu + 2, cpu, cpu * 10, cpu, cpu + 1, cpu + 2, cpu, unit="%"),
        SeriesStats("mem.percent", 10, 40, 41, 40.5, 405, 40.5, 41, 41, 40.5, unit="%"),
    ]
    return WindowAggregate(cluster, node, window_s, end - window_s, end, series)


def firing(node: str, rule: str = "cpu_high", sev: Severity = Severity.WARNING, cluster: str = "c1") -> Alert:
    return Alert(
        id=f"{rule}-{cluster}-{node}", status=AlertStatus.FIRING, severity=sev, kind=AlertKind.THRESHOLD, rule=rule,
        cluster=cluster, node=node, started_at=time.time(), summary=f"{rule} on {node}", metric="cpu.percent", value=97.0, threshold=95.0,
    )


async def eventually(check: Callable[[], Awaitable[bool]], timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.05)


@pytest.fixture
async def api(nats_server: EmbeddedServer) -> AsyncIterator[ApiServer]:
    conn = await nats.connect(nats_server.url)
    await ensure_streams(conn.jetstream())
    server = ApiServer(conn, port=0, backfill_s=0, alert_backfill_s=0)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()
        await conn.close()


@pytest.fixture
async def http(api: ApiServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=api.url, timeout=10) as c:
        yield c


async def test_published_nodes_appear_with_status_values_trust_and_health(api: ApiServer, http: httpx.AsyncClient, nc: Any) -> None:
    now = time.time()
    for i in range(3):
        await nc.publish(subjects.agg(10, "c1", f"n{i}"), encode(agg(f"n{i}", now, 20.0 + i)))
    await nc.publish(subjects.metrics("c1", "n0"), encode(MetricBatch("c1", "n0", now, [Sample("disk.percent", 71.0, "%", {"mount": "/"})])))
    await nc.publish(subjects.trust("c1", "n1"), encode(TrustScore("c1", "n1", now, 7, 0.42)))
    await nc.publish(subjects.health("c1"), encode(HealthScore("c1", now, 77.0, peer_count=3, nodes={"n2": {"status": "degraded", "quality": 55.0}})))
    await nc.publish(subjects.alerts("critical", "c1", "n2", "disk_full"), encode(firing("n2", "disk_full", Severity.CRITICAL)))
    await nc.flush()

    async def ready() -> bool:
        r = await http.get("/api/nodes")
        return r.json()["total"] == 3 and r.json()["fleet"]["active_alerts"] == 1

    await eventually(ready)
    body = (await http.get("/api/nodes")).json()
    rows = {r["node"]: r for r in body["items"]}
    assert body["items"][0]["node"] == "n2"  # worst status first
    assert rows["n2"]["status"] == "critical" and rows["n0"]["status"] == "ok"
    assert rows["n0"]["cpu"] == 20.0 and rows["n0"]["disk"] == 71.0
    assert rows["n1"]["trust"] == 0.42
    assert rows["n2"]["health"] == 55.0 and rows["n2"]["connection"] == "degraded"
    assert body["fleet"]["status"] == {"ok": 2, "warning": 0, "critical": 1, "unresponsive": 0}

    only = (await http.get("/api/nodes", params={"status": "critical"})).json()
    assert [r["node"] for r in only["items"]] == ["n2"]
    detail = (await http.get("/api/nodes/c1/n2")).json()
    assert detail["active_alerts"][0]["rule"] == "disk_full"
    assert detail["aggregates"]["cpu.percent"]["mean"] == 22.0
    health = (await http.get("/api/clusters/c1/health")).json()
    assert health["latest"]["overall_health"] == 77.0 and len(health["history"]) == 1


async def test_history_returns_the_stored_aggregates_in_the_range(api: ApiServer, http: httpx.AsyncClient, nc: Any) -> None:
    end = float(int(time.time()) // 10 * 10)
    for k in range(6):
        await nc.publish(subjects.agg(10, "c1", "n1"), encode(agg("n1", end - 50 + 10 * k, float(k))))
    await nc.flush()

    async def six() -> bool:
        st = api.state.get_node("c1", "n1")
        return st is not None and st.agg_end == end

    await eventually(six)
    r = await http.get("/api/nodes/c1/n1/history", params={"metric": ["cpu.percent", "mem.percent"], "since": str(end - 25), "until": str(end)})
    body = r.json()
    assert body["fields"][:2] == ["t", "mean"]
    assert [p[1] for p in body["series"]["cpu.percent"]] == [3.0, 4.0, 5.0]
    assert len(body["series"]["mem.percent"]) == 3
    bad = await http.get("/api/nodes/c1/n1/history", params={"metric": "cpu.percent", "since": "yesterday-ish"})
    assert bad.status_code == 400 and "yesterday-ish" in bad.json()["detail"]
    assert (await http.get("/api/nodes/c1/nope/history", params={"metric": "x"})).status_code == 404


async def test_alerts_endpoint_separates_active_from_recent(api: ApiServer, http: httpx.AsyncClient, nc: Any) -> None:
    a = firing("n1")
    await nc.publish(subjects.alerts("warning", "c1", "n1", a.rule), encode(a))
    b = firing("n2", "mem_high")
    await nc.publish(subjects.alerts("warning", "c1", "n2", b.rule), encode(b))
    resolved = Alert(**{**{f: getattr(b, f) for f in b.__struct_fields__}, "status": AlertStatus.RESOLVED, "ended_at": time.time()})
    await nc.publish(subjects.alerts("warning", "c1", "n2", b.rule), encode(resolved))
    await nc.flush()

    async def settled() -> bool:
        return len((await http.get("/api/alerts", params={"active": "false"})).json()["items"]) == 3

    await eventually(settled)
    active = (await http.get("/api/alerts", params={"active": "true"})).json()["items"]
    assert [x["id"] for x in active] == [a.id]
    recent = (await http.get("/api/alerts", params={"active": "false"})).json()["items"]
    assert recent[0]["status"] == "resolved" and recent[0]["id"] == b.id


def _publish_blocking(server: EmbeddedServer, subject: str, payload: bytes) -> None:
    """PUB from a raw connection, waiting for the server's PONG without yielding to the event loop."""
    with socket.create_connection((server.host, server.port), timeout=5) as s:
        f = s.makefile("rb")
        assert f.readline().startswith(b"INFO ")
        s.sendall(b'CONNECT {"verbose":false,"pedantic":false}\r\nPUB ' + subject.encode() + b" %d\r\n" % len(payload) + payload + b"\r\nPING\r\n")
        assert f.readline() == b"PONG\r\n"


async def test_live_feed_subscriptions_are_confirmed_when_start_returns(nats_server: EmbeddedServer, nc: Any) -> None:
    state = FleetState()
    feed = LiveFeed(nc, state, backfill_s=0, alert_backfill_s=0)
    await feed.start()
    try:
        # published from another connection before this loop runs again: only a subscription the server already has sees it
        a = firing("n1")
        _publish_blocking(nats_server, subjects.alerts("warning", "c1", "n1", a.rule), encode(a))
        await eventually(_async_true(lambda: a.id in state.active_alerts))
    finally:
        await feed.stop()


async def test_websocket_receives_an_alert_within_a_second_of_it_firing(api: ApiServer, nc: Any) -> None:
    async with ws_connect(api.url.replace("http", "ws") + "/ws") as ws:
        hello = orjson.loads(await asyncio.wait_for(ws.recv(), 5))
        assert hello["type"] == "hello"
        a = firing("n9", "cpu_critical", Severity.CRITICAL)
        sent = time.monotonic()
        await nc.publish(subjects.alerts("critical", "c1", "n9", a.rule), encode(a))
        await nc.flush()
        msg = orjson.loads(await asyncio.wait_for(ws.recv(), 1.0))
        assert time.monotonic() - sent < 1.0
        assert msg["type"] == "alert" and msg["data"]["id"] == a.id and msg["data"]["status"] == "firing"


async def test_websocket_streams_aggregates_and_health_and_filters_by_node(api: ApiServer, nc: Any) -> None:
    async with ws_connect(api.url.replace("http", "ws") + "/ws") as ws:
        await asyncio.wait_for(ws.recv(), 5)  # hello
        await ws.send(orjson.dumps({"subscribe": {"types": ["agg", "health"], "node": "n2"}}).decode())
        ack = orjson.loads(await asyncio.wait_for(ws.recv(), 5))
        assert ack == {"type": "subscribed", "data": {"types": ["agg", "health"], "cluster": None, "node": "n2"}}
        now = time.time()
        await nc.publish(subjects.agg(10, "c1", "n1"), encode(agg("n1", now, 1.0)))
        await nc.publish(subjects.agg(10, "c1", "n2"), encode(agg("n2", now, 2.0)))
        await nc.publish(subjects.health("c1"), encode(HealthScore("c1", now, 66.0)))
        await nc.flush()
        got = [orjson.loads(await asyncio.wait_for(ws.recv(), 5)) for _ in range(2)]
        assert got[0]["type"] == "agg" and got[0]["data"]["node"] == "n2"
        assert got[0]["data"]["series"]["cpu.percent"]["mean"] == 2.0
        assert got[1]["type"] == "health" and got[1]["data"]["overall_health"] == 66.0


async def test_a_slow_websocket_client_loses_messages_and_is_told(api: ApiServer) -> None:
    hub = api.hub
    hub.queue_size = 5
    async with ws_connect(api.url.replace("http", "ws") + "/ws") as slow:
        await asyncio.wait_for(slow.recv(), 5)  # hello
        await eventually(_async_true(lambda: len(hub.clients) == 1))
        # publish a burst synchronously: the sender task cannot drain in between
        delivered = [hub.publish("alert", {"n": i}, "c1", "n1") for i in range(50)]
        assert sum(delivered) == 5
        assert api.state.counters.ws_dropped == 45
        first = orjson.loads(await asyncio.wait_for(slow.recv(), 5))
        assert first == {"type": "dropped", "data": {"count": 45}}
        rest = [orjson.loads(await asyncio.wait_for(slow.recv(), 5))["data"]["n"] for _ in range(5)]
        assert rest == [0, 1, 2, 3, 4]


def _async_true(f: Callable[[], bool]) -> Callable[[], Awaitable[bool]]:
    async def g() -> bool:
        return f()

    return g


async def test_metrics_and_health_endpoints(api: ApiServer, http: httpx.AsyncClient, nc: Any) -> None:
    await nc.publish(subjects.agg(10, "c1", "n1"), encode(agg("n1", time.time(), 12.5)))
    await nc.publish(subjects.dlq("processor"), b'{"stage":"processor"}')
    await nc.publish(
        subjects.self_metrics("processor"),
        encode(MetricBatch("swarmwatch", "processor", time.time(), [Sample("swarmwatch.processor.lag_s", 1.5), Sample("swarmwatch.operator.dropped", 3, labels={"operator": "windows"})])),
    )
    await nc.flush()

    async def seen() -> bool:
        return "swarmwatch_consumer_lag_seconds" in (await http.get("/metrics")).text and api.state.counters.dlq.get("processor") == 1

    await eventually(seen)
    r = await http.get("/metrics")
    assert r.headers["content-type"].startswith("text/plain; version=0.0.4")
    from prometheus_client.parser import text_string_to_metric_families

    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value for f in text_string_to_metric_families(r.text) for s in f.samples}
    assert samples[("swarmwatch_node_metric", (("cluster", "c1"), ("metric", "cpu.percent"), ("node", "n1"), ("stat", "mean")))] == 12.5
    assert samples[("swarmwatch_consumer_lag_seconds", (("component", "processor"), ("metric", "swarmwatch.processor.lag_s")))] == 1.5
    assert samples[("swarmwatch_self_total", (("component", "processor"), ("metric", "swarmwatch.operator.dropped"), ("operator", "windows")))] == 3
    assert samples[("swarmwatch_api_dead_letters_total", (("stage", "processor"),))] == 1
    h = (await http.get("/health")).json()
    assert h["status"] == "ok" and h["nats_connected"] is True and h["nodes"] == 1
    docs = await http.get("/docs")
    assert docs.status_code == 200
    spec = (await http.get("/openapi.json")).json()
    assert "/api/nodes/{cluster}/{node}/history" in spec["paths"]
    page = await http.get("/")
    assert page.status_code == 200 and "uPlot.iife.min.js" in page.text
    assert (await http.get("/static/vendor/uPlot.iife.min.js")).status_code == 200


async def test_token_is_required_for_data_but_not_for_health(nats_server: EmbeddedServer) -> None:
    conn = await nats.connect(nats_server.url)
    server = ApiServer(conn, host="127.0.0.1", port=0, token=TOKEN, backfill_s=0, alert_backfill_s=0)
    await server.start()
    try:
        async with httpx.AsyncClient(base_url=server.url, timeout=10) as c:
            assert (await c.get("/health")).status_code == 200
            for path in ("/api/nodes", "/metrics", "/api/alerts"):
                r = await c.get(path)
                assert r.status_code == 401, path
            assert (await c.get("/api/nodes", headers={"Authorization": "Bearer wrong"})).status_code == 401
            assert (await c.get("/api/nodes", headers={"Authorization": f"Bearer {TOKEN}"})).status_code == 200
            assert (await c.get("/metrics", params={"token": TOKEN})).status_code == 401  # never from the URL
        ws_url = server.url.replace("http", "ws") + "/ws"
        with pytest.raises(InvalidStatus):
            async with ws_connect(ws_url):
                pass
        async with ws_connect(ws_url, additional_headers={"Authorization": f"Bearer {TOKEN}"}) as ws:
            assert orjson.loads(await asyncio.wait_for(ws.recv(), 5))["type"] == "hello"
    finally:
        await server.stop()
        await conn.close()


def test_binding_beyond_loopback_without_a_token_is_refused() -> None:
    with pytest.raises(ValueError, match="0.0.0.0"):
        ApiServer(None, host="0.0.0.0", port=0)
    with pytest.raises(ValueError, match="192.168.1.10"):
        ApiServer(None, host="192.168.1.10", port=0, token="")
    ApiServer(None, host="0.0.0.0", port=0, token=TOKEN)  # with a token: allowed
    ApiServer(None, host="::1", port=0)
    ApiServer(None, host="localhost", port=0)


async def test_the_listening_socket_is_tcp_so_asyncio_disables_nagle_on_connections(api: ApiServer) -> None:
    import socket

    [sock] = [s for srv in api._server.servers for s in srv.sockets]
    assert sock.proto == socket.IPPROTO_TCP  # with proto 0, keep-alive answers waited ~40 ms on delayed ACKs


async def test_a_taken_port_is_a_clear_error(api: ApiServer) -> None:
    other = ApiServer(None, port=api.bound_port or 0)
    with pytest.raises(OSError, match=str(api.bound_port)):
        await other.start()


async def test_state_is_backfilled_from_the_derived_stream_at_start(nats_server: EmbeddedServer, nc: Any) -> None:
    js = nc.jetstream()
    await ensure_streams(js)
    end = float(int(time.time()) // 10 * 10)
    for k in range(5):
        await js.publish(subjects.agg(10, "c1", "old"), encode(agg("old", end - 40 + 10 * k, float(k))))
    a = firing("old", "disk_full", Severity.CRITICAL)
    await js.publish(subjects.alerts("critical", "c1", "old", a.rule), encode(a))
    await js.publish(subjects.health("c1"), encode(HealthScore("c1", end, 91.0)))
    state = FleetState()
    conn = await nats.connect(nats_server.url)
    server = ApiServer(conn, port=0, state=state)
    await server.start()
    try:
        assert server.feed is not None
        await asyncio.wait_for(server.feed.backfill_done.wait(), 30)
        # a live message that arrives after the backfill still lands, in order
        await nc.publish(subjects.agg(10, "c1", "old"), encode(agg("old", end + 10, 5.0)))
        await nc.flush()
        await eventually(_async_true(lambda: (st := state.get_node("c1", "old")) is not None and st.agg_end == end + 10))
        st = state.get_node("c1", "old")
        assert st is not None
        assert [p[1] for p in state.history(st, ["cpu.percent"])["cpu.percent"]] == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]
        assert st.status() == "critical"
        assert state.clusters["c1"].latest is not None and state.clusters["c1"].latest.overall_health == 91.0
        assert state.backfilled == 7
        async with httpx.AsyncClient(base_url=server.url) as c:
            assert (await c.get("/health")).json()["backfilling"] is False
    finally:
        await server.stop()
        await conn.close()


async def test_history_older_than_memory_comes_from_the_stored_files(nats_server: EmbeddedServer, nc: Any, tmp_path: Any) -> None:
    from sinks.files import FileSink, FileSinkSettings

    js = nc.jetstream()
    await ensure_streams(js)
    old_end = float(int(time.time()) // 10 * 10) - 7200
    for k in range(3):  # two hours ago: stored in files, not backfilled into memory
        await js.publish(subjects.agg(10, "c1", "n1"), encode(agg("n1", old_end + 10 * k, 100.0 + k)))
    root = tmp_path / "store"
    sink = FileSink(nc, root, "json", FileSinkSettings(flush_interval_s=0.2))
    await sink.start()
    await eventually(_async_true(lambda: bool(list(root.glob("json/agg/**/*.jsonl")))), 20)
    await sink.stop()

    conn = await nats.connect(nats_server.url)
    server = ApiServer(conn, port=0, backfill_s=0, alert_backfill_s=0, store_root=root)
    await server.start()
    try:
        now_end = float(int(time.time()) // 10 * 10)
        await nc.publish(subjects.agg(10, "c1", "n1"), encode(agg("n1", now_end, 7.0)))
        await nc.flush()
        await eventually(_async_true(lambda: server.state.get_node("c1", "n1") is not None))
        async with httpx.AsyncClient(base_url=server.url) as c:
            recent = (await c.get("/api/nodes/c1/n1/history", params={"metric": "cpu.percent", "since": "10m"})).json()
            assert recent["source"] == "memory" and [p[1] for p in recent["series"]["cpu.percent"]] == [7.0]
            body = (await c.get("/api/nodes/c1/n1/history", params={"metric": "cpu.percent", "since": "3h"})).json()
        assert body["source"] == "files+memory"
        assert [p[1] for p in body["series"]["cpu.percent"]] == [100.0, 101.0, 102.0, 7.0]
    finally:
        await server.stop()
        await conn.close()
