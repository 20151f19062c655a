"""The FastAPI application: REST, WebSocket, /metrics, /health and the dashboard.

``create_app(state, token=None, hub=None)`` builds it over a FleetState. With a
token (at least 16 characters), /api/*, /ws and /metrics need it
(``Authorization: Bearer <token>``; a browser's WebSocket offers the subprotocol
``bearer.<base64url(token)>``); a token in the URL is not accepted, so it never
lands in logs or history. The dashboard's static files, /health and the OpenAPI
docs stay open. Requests with a foreign ``Origin`` or ``Host`` are refused
(sinks/api/security.py), and wrong tokens are throttled per client address.

Every handler is ``async``: it reads FleetState on the event-loop thread that
also applies live messages to it, so no lock is needed and no thread sees a
half-applied message.
"""
from __future__ import annotations

import asyncio
import hmac
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import orjson
from fastapi import FastAPI, HTTPException, Query, Request, WebSocket, WebSocketDisconnect
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, Response
from fastapi.staticfiles import StaticFiles

from sinks.api.history import install_history_routes, stored_history
from sinks.api.exposition import DEFAULT_STATS, SelectorError, negotiate, render, render_bytes
from sinks.api.live import STREAM_TYPES, Hub, TooManyClients
from sinks.api.state import POINT_FIELDS, STATUSES, FleetState
from sinks.api.security import WS_PROTOCOL, LoginLimiter, OriginGuard, check_token_strength, token_of
from sinks.api.timerange import TimeRangeError, parse_range

STATIC_DIR = Path(__file__).resolve().parent.parent / "static"
MAX_PAGE = 10_000
MAX_POINTS = 5_000  # per series in one history answer; longer ones are thinned evenly
DEFAULT_MAX_RANGE_S = 7 * 86_400.0  # longest since..until of one history query
_STATUS_RANK = {s: i for i, s in enumerate(reversed(STATUSES))}  # unresponsive first


def _json(obj: Any, status_code: int = 200) -> Response:
    return Response(orjson.dumps(obj, option=orjson.OPT_SERIALIZE_NUMPY), status_code=status_code, media_type="application/json")


def _thin(points: list[list[float]], limit: int) -> list[list[float]]:
    if len(points) <= limit:
        return points
    step = len(points) / limit
    return [points[int(i * step)] for i in range(limit - 1)] + [points[-1]]


def create_app(
    state: FleetState,
    token: str | None = None,
    hub: Hub | None = None,
    *,
    metric_stats: Sequence[str] = DEFAULT_STATS,
    nats_connected: Callable[[], bool] | None = None,
    store_root: str | Path | None = None,
    allowed_hosts: Sequence[str] = ("*",),
    allowed_origins: Sequence[str] = (),
    max_range_s: float = DEFAULT_MAX_RANGE_S,
    login_limiter: LoginLimiter | None = None,
) -> FastAPI:
    """The HTTP service over ``state``; ``hub`` feeds /ws (a private one is made if None).

    ``store_root``: the file sinks' directory; history older than the in-memory
    ring is read from its stored aggregates. ``allowed_hosts``: Host headers
    served (ApiServer passes loopback names for a loopback bind);
    ``allowed_origins``: browser origins besides the API's own that may call it;
    ``max_range_s``: the longest time range one history query may ask for.
    """
    if token is not None and not token:
        raise ValueError("token must be a non-empty string, or None for no authentication")
    check_token_strength(token)
    if not max_range_s > 0:
        raise ValueError(f"max_range_s must be > 0, got {max_range_s!r}")
    limiter = login_limiter or LoginLimiter()
    hub = hub or Hub(state)
    render(state, metric_stats)  # fail now on a bad stat name
    app = FastAPI(
        title="swarmwatch",
        version="0.1.0",
        description="Fleet state from swarmwatch: nodes, metric history, alerts, cluster health, live WebSocket, Prometheus /metrics.",
        docs_url=None,  # served below from vendored Swagger UI files: the docs work offline, like the dashboard
        redoc_url=None,
    )
    app.state.fleet = state
    app.state.hub = hub
    app.state.login_limiter = limiter
    from starlette.middleware.trustedhost import TrustedHostMiddleware

    app.add_middleware(TrustedHostMiddleware, allowed_hosts=list(allowed_hosts))
    app.add_middleware(OriginGuard, allowed_origins=list(allowed_origins), on_refuse=lambda: state.counters.refuse("origin"))  # runs first

    def check(headers: Any, client: Any) -> int:
        """200 if allowed, 401 for a missing or wrong token, 429 for a client with too many wrong ones."""
        if token is None:
            return 200
        addr = client.host if client is not None else "?"
        if limiter.retry_after(addr) > 0:
            limiter.refused += 1
            state.counters.refuse("throttled")
            return 429
        got = token_of(headers)
        if got is not None and hmac.compare_digest(got.encode(), token.encode()):
            return 200
        limiter.fail(addr)
        state.counters.refuse("token")
        return 401

    def require(request: Request) -> None:
        code = check(request.headers, request.client)
        if code == 429:
            wait = limiter.retry_after(request.client.host if request.client else "?")
            raise HTTPException(
                status_code=429,
                detail=f"too many wrong access tokens from this address; try again in {wait:.0f} s",
                headers={"Retry-After": str(max(1, round(wait)))},
            )
        if code == 401:
            raise HTTPException(
                status_code=401,
                detail="missing or wrong access token; send 'Authorization: Bearer <token>' (tokens in the URL are not accepted)",
                headers={"WWW-Authenticate": "Bearer"},
            )

    def times(since: str | None, until: str | None) -> tuple[float, float]:
        try:
            s, u = parse_range(since, until, time.time())
        except TimeRangeError as exc:
            raise HTTPException(status_code=400, detail=str(exc)) from None
        if u - s > max_range_s:
            raise HTTPException(
                status_code=400,
                detail=f"time range since..until is {(u - s) / 86_400.0:.1f} days; at most {max_range_s / 86_400.0:g} days per query",
            )
        return s, u

    @app.get("/health", summary="Liveness of the service", tags=["service"])
    async def health() -> Response:
        connected = None if nats_connected is None else bool(nats_connected())
        ok = connected is not False
        body = {
            "status": "ok" if ok else "degraded",
            "nats_connected": connected,
            "backfilling": state.backfilling,
            "nodes": len(state.nodes),
            "active_alerts": len(state.active_alerts),
            "websocket_clients": len(hub.clients),
        }
        return _json(body, 200 if ok else 503)

    @app.get("/metrics", summary="Prometheus exposition: text 0.0.4 or OpenMetrics, optionally filtered by match[]", tags=["service"])
    async def metrics(
        request: Request,
        format: str | None = Query(None, description="text or openmetrics; default from the Accept header"),
    ) -> Response:
        require(request)
        match = request.query_params.getlist("match[]")
        try:
            body, ctype = render_bytes(state, metric_stats, fmt=negotiate(request.headers.get("accept"), format), match=match)
        except (SelectorError, ValueError) as exc:
            raise HTTPException(status_code=400, detail=str(exc)) from None
        return Response(body, headers={"Content-Type": ctype})

    @app.get("/api/fleet", summary="Fleet overview: node counts by status, clusters, health", tags=["fleet"])
    async def fleet(request: Request) -> Response:
        require(request)
        return _json(state.fleet_counts())

    @app.get("/api/nodes", summary="Nodes with status, health, trust and key values", tags=["nodes"])
    async def nodes(
        request: Request,
        cluster: str | None = None,
        status: str | None = Query(None, description="ok, warning, critical or unresponsive"),
        q: str | None = Query(None, description="substring of the node name"),
        sort: str = Query("status", description="status, node, cluster, cpu, mem, disk, gpu, latency, trust, health, last_seen"),
        offset: int = Query(0, ge=0),
        limit: int = Query(MAX_PAGE, ge=1, le=MAX_PAGE),
    ) -> Response:
        require(request)
        if status is not None and status not in STATUSES:
            raise HTTPException(400, f"status {status!r} is invalid; expected one of {', '.join(STATUSES)}")
        rows = [state.node_summary(st) for st in state.nodes.values() if cluster is None or st.cluster == cluster]
        if status is not None:
            rows = [r for r in rows if r["status"] == status]
        if q:
            ql = q.lower()
            rows = [r for r in rows if ql in r["node"].lower()]
        if sort == "status":
            rows.sort(key=lambda r: (_STATUS_RANK[r["status"]], r["cluster"], r["node"]))
        elif sort in ("node", "cluster"):
            rows.sort(key=lambda r: (r[sort], r["node"]))
        elif rows and sort in rows[0]:
            rows.sort(key=lambda r: (r[sort] is None, -(r[sort] or 0.0), r["node"]))
        elif rows:
            raise HTTPException(400, f"sort {sort!r} is invalid")
        return _json({"total": len(rows), "offset": offset, "items": rows[offset : offset + limit], "fleet": state.fleet_counts()})

    @app.get("/api/nodes/{cluster}/{node}", summary="One node: latest values, aggregates, status, trust, health, alerts", tags=["nodes"])
    async def node_detail(request: Request, cluster: str, node: str) -> Response:
        require(request)
        st = state.get_node(cluster, node)
        if st is None:
            raise HTTPException(404, f"node {node!r} in cluster {cluster!r} is not known")
        return _json(state.node_detail(st))

    @app.get("/api/nodes/{cluster}/{node}/history", summary="Aggregate history of metrics of one node over a time range", tags=["nodes"])
    async def node_history(
        request: Request,
        cluster: str,
        node: str,
        metric: list[str] = Query(..., description="metric name (all label variants) or exact series key; repeat for several"),
        since: str | None = Query(None, description="UNIX s, ISO 8601 or a duration ago (1h); default until-1h"),
        until: str | None = Query(None, description="UNIX s, ISO 8601, 'now' or a duration ago; default now"),
    ) -> Response:
        require(request)
        st = state.get_node(cluster, node)
        if st is None and store_root is None:
            raise HTTPException(404, f"node {node!r} in cluster {cluster!r} is not known")
        s, u = times(since, until)
        series = state.history(st, metric, s, u) if st is not None else {}  # a node gone from the fleet: the store only
        source = "memory"
        if store_root is not None:
            oldest = min((pts[0][0] for pts in series.values() if pts), default=math.inf)
            if s < oldest - ((st.window_s if st is not None else 0.0) or 0.0):
                stored = await asyncio.to_thread(stored_history, store_root, cluster, node, metric, s, min(u, oldest - 1e-6))
                if stored:
                    source = "files+memory" if st is not None else "files"
                    for key, pts in stored.items():
                        series[key] = pts + series.get(key, [])
        return _json(
            {
                "cluster": cluster,
                "node": node,
                "window_s": (st.window_s or None) if st is not None else None,
                "since": s,
                "until": u,
                "fields": list(POINT_FIELDS),
                "source": source,
                "series": {k: _thin(v, MAX_POINTS) for k, v in series.items()},
            }
        )

    @app.get("/api/alerts", summary="Active alerts, recent alert events, or both", tags=["alerts"])
    async def alerts(
        request: Request,
        active: bool | None = Query(None, description="true: firing now; false: recent events (firing and resolved); absent: both"),
        cluster: str | None = None,
        node: str | None = None,
        severity: str | None = None,
        limit: int = Query(500, ge=1, le=10_000),
    ) -> Response:
        require(request)
        items = state.alerts_view(active, limit=10_000)
        if cluster is not None:
            items = [a for a in items if a["cluster"] == cluster]
        if node is not None:
            items = [a for a in items if a["node"] == node]
        if severity is not None:
            items = [a for a in items if a["severity"] == severity]
        return _json({"total": len(items), "items": items[:limit]})

    @app.get("/api/clusters", summary="Clusters with their latest health", tags=["clusters"])
    async def clusters(request: Request) -> Response:
        require(request)
        out = []
        for c in sorted({c for c, _ in state.nodes} | set(state.clusters)):
            hv = state.health_view(c, since=math.inf)
            out.append({"cluster": c, "nodes": sum(1 for k in state.nodes if k[0] == c), "health": None if hv is None else hv["latest"]})
        return _json(out)

    @app.get("/api/clusters/{cluster}/health", summary="Cluster health: latest score and history over a time range", tags=["clusters"])
    async def cluster_health(request: Request, cluster: str, since: str | None = None, until: str | None = None) -> Response:
        require(request)
        s, u = times(since, until)
        hv = state.health_view(cluster, s, u)
        if hv is None:
            raise HTTPException(404, f"no health score for cluster {cluster!r} yet")
        return _json(hv)

    @app.websocket("/ws")
    async def ws(websocket: WebSocket) -> None:
        """Live stream: ``{"type": "agg"|"alert"|"health"|"trust"|"dropped", "data": ...}``.

        Send ``{"subscribe": {"types": [...], "cluster": c, "node": n}}`` to filter;
        cluster/node filter aggregates and trust (cluster also health), alerts always all.
        """
        code = check(websocket.headers, websocket.client)
        if code != 200:
            await websocket.close(code=1008, reason="too many wrong access tokens" if code == 429 else "missing or wrong access token")
            return
        try:
            client = hub.register()
        except TooManyClients as exc:
            await websocket.close(code=1013, reason=str(exc)[:120])
            return
        offered = [p.strip() for p in (websocket.headers.get("sec-websocket-protocol") or "").split(",")]
        await websocket.accept(subprotocol=WS_PROTOCOL if WS_PROTOCOL in offered else None)

        async def reader() -> None:
            while True:
                raw = await websocket.receive_text()
                try:
                    msg = orjson.loads(raw)
                    sub = msg["subscribe"]
                    types = sub.get("types")
                    if types is not None:
                        bad = [t for t in types if t not in STREAM_TYPES]
                        if bad:
                            raise ValueError(f"unknown type(s) {bad}; expected {sorted(STREAM_TYPES)}")
                        client.types = frozenset(types)
                    client.cluster = sub.get("cluster") or None
                    client.node = sub.get("node") or None
                    reply = {"type": "subscribed", "data": {"types": sorted(client.types), "cluster": client.cluster, "node": client.node}}
                except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError, ValueError) as exc:
                    reply = {"type": "error", "data": {"message": f"bad subscribe message: {exc}"}}
                try:
                    client.queue.put_nowait(orjson.dumps(reply))
                except asyncio.QueueFull:
                    client.dropped += 1

        rtask = asyncio.create_task(reader())
        try:
            await websocket.send_text(orjson.dumps({"type": "hello", "data": state.fleet_counts()}).decode())
            while True:
                get = asyncio.ensure_future(client.queue.get())
                done, _ = await asyncio.wait({get, rtask}, return_when=asyncio.FIRST_COMPLETED)
                if get not in done:
                    get.cancel()
                    break
                if client.dropped:
                    n, client.dropped = client.dropped, 0
                    await websocket.send_text(orjson.dumps({"type": "dropped", "data": {"count": n}}).decode())
                await websocket.send_text(get.result().decode())
                client.sent += 1
        except (WebSocketDisconnect, RuntimeError, ConnectionError):
            pass
        finally:
            hub.unregister(client)
            rtask.cancel()
            try:
                await rtask
            except (asyncio.CancelledError, WebSocketDisconnect, RuntimeError, ConnectionError):
                pass

    @app.get("/docs", include_in_schema=False)
    async def docs() -> Response:
        return get_swagger_ui_html(
            openapi_url="openapi.json",
            title="swarmwatch API",
            swagger_js_url="static/vendor/swagger/swagger-ui-bundle.js",
            swagger_css_url="static/vendor/swagger/swagger-ui.css",
            swagger_favicon_url="data:,",
        )

    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-cache"})

    install_history_routes(app, store_root=store_root, require=require, times=times)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    return app
