"""The API's history from the file sinks' store, read through :mod:`sinks.query` (DuckDB over the Parquet/JSON segments).

``stored_history`` serves a node's metric history older than the in-memory
ring; the ``/api/history/*`` routes let the dashboard travel in time: the
fleet, alerts and cluster health as they were over a past range.
"""
from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import orjson
from fastapi import HTTPException, Query, Request
from fastapi.responses import Response


def stored_history(
    root: str | Path, cluster: str, node: str, metrics: Sequence[str], since: float, until: float
) -> dict[str, list[list[float]]]:
    """History points of one node from the stored aggregates (finest window only), oldest first per series.

    ``metrics`` are metric names (all their label variants) or exact series
    keys (``disk.percent{mount=/}``). A point is ``[end s, mean, min, max, p95, last, count]``.
    """
    from sinks.query import AT, StoreQuery, at

    names = list(metrics)
    if not names:
        return {}
    marks = ", ".join("?" for _ in names)
    with StoreQuery(root, since=since, until=until, clusters=[cluster]) as q:
        rows = q.arrow(
            f"""WITH a AS (SELECT * FROM aggregates WHERE cluster = ? AND node = ? AND "end" >= {AT} AND "end" <= {AT}
                             AND (metric IN ({marks}) OR series IN ({marks})))
                SELECT series, epoch_ns("end") AS end_ns, mean, min, max, p95, last, count FROM a
                WHERE window_s = (SELECT min(window_s) FROM a) ORDER BY series, "end", _seq""",
            [cluster, node, at(since), at(until), *names, *names],
        ).to_pylist()
    out: dict[str, list[list[float]]] = {}
    for r in rows:
        out.setdefault(r["series"], []).append(
            [r["end_ns"] / 1e9, r["mean"], r["min"], r["max"], r["p95"], r["last"], float(r["count"])]
        )
    return out


MAX_RANGE_S = 31 * 86_400.0  # a time-travel view covers at most a month
MAX_ALERT_EVENTS = 2000
MAX_HEALTH_POINTS = 2000


def _rank(alert: dict[str, Any]) -> str:
    from sinks.api.state import STATUS_CRITICAL, STATUS_OK, STATUS_UNRESPONSIVE, STATUS_WARNING, UNRESPONSIVE_RULES

    if alert["rule"] in UNRESPONSIVE_RULES or alert["kind"] == "liveness":
        return STATUS_UNRESPONSIVE
    return {"critical": STATUS_CRITICAL, "warning": STATUS_WARNING}.get(alert["severity"], STATUS_OK)


def fleet_snapshot(root: str | Path, since: float, until: float, cluster: str | None = None) -> dict[str, Any]:
    """The fleet as it was over [since, until] (UNIX s), from the store: what the dashboard shows, in the past.

    - ``items``: one row per node seen in the range (the fleet table's columns):
      key metrics are the mean of the node's last finest-window aggregate ending
      by ``until``; ``status`` comes from the alerts firing at ``until``; trust
      is the last score by ``until``; ``last_seen`` the end of its last window.
    - ``fleet``: counts by status, clusters, alerts active at ``until``, latest health per cluster.
    - ``alerts``: ``active`` (firing at ``until``) and ``events`` (fired or resolved in the range, newest first).
    - ``health``: per cluster, ``[ts, overall_health]`` points in the range.
    """
    from sinks.api.state import KEY_METRICS, STATUSES
    from sinks.query import AT, StoreQuery, at

    cl = "" if cluster is None else " AND cluster = ?"
    cp: list[Any] = [] if cluster is None else [cluster]
    keys = sorted({n for names in KEY_METRICS.values() for n in names})
    marks = ", ".join("?" for _ in keys)
    with StoreQuery(root, since=since, until=until, clusters=None if cluster is None else [cluster]) as q:
        latest = q.rows(
            f"""WITH a AS (SELECT cluster, node, window_s, "end", metric, mean, _seq FROM aggregates
                            WHERE "end" >= {AT} AND "end" <= {AT}{cl}),
                     w AS (SELECT cluster, node, min(window_s) AS w, max("end") AS last_end FROM a GROUP BY cluster, node),
                     k AS (SELECT a.cluster, a.node, a.metric, arg_max(a.mean, a."end") AS mean, max(a.mean) AS hi
                           FROM a JOIN w USING (cluster, node) WHERE a.window_s = w.w AND a.metric IN ({marks})
                           GROUP BY a.cluster, a.node, a.metric)
                SELECT w.cluster, w.node, epoch(w.last_end) AS last_seen, k.metric, k.mean
                FROM w LEFT JOIN k USING (cluster, node)""",
            [at(since), at(until), *cp, *keys],
        )
        alerts = q.records("alerts", f"started_at <= {AT} AND ts >= {AT}" + cl, [at(until), at(since - 86_400.0), *cp], order="ts, _seq")
        trust = q.rows(
            f"SELECT cluster, node, arg_max(trust, ts) AS trust FROM trust WHERE ts <= {AT} AND ts >= {AT}{cl} GROUP BY ALL",
            [at(until), at(since), *cp],
        )
        health = q.rows(
            f"SELECT cluster, epoch(ts) AS ts, overall_health FROM health WHERE ts >= {AT} AND ts <= {AT}{cl} ORDER BY ts",
            [at(since), at(until), *cp],
        )
    nodes: dict[tuple[str, str], dict[str, Any]] = {}
    best: dict[tuple[str, str], dict[str, float]] = {}
    for r in latest:
        key = (r["cluster"], r["node"])
        nodes.setdefault(key, {"cluster": r["cluster"], "node": r["node"], "status": "ok", "last_seen": r["last_seen"],
                               "trust": None, "health": None, "connection": None, "alerts": 0})
        if r["metric"] is not None and r["mean"] is not None:
            best.setdefault(key, {})[r["metric"]] = r["mean"]
    for key, row in nodes.items():
        vals = best.get(key, {})
        for col, names in KEY_METRICS.items():
            v = next((vals[n] for n in names if n in vals), None)
            row[col] = None if v is None else round(v, 3)
    # alert state at `until`: the last message of each alert id up to then
    last: dict[str, dict[str, Any]] = {}
    events: list[dict[str, Any]] = []
    for a in alerts:
        if a["ts"] <= until:
            last[a["id"]] = a
            if a["ts"] >= since:
                events.append(a)
    active = [a for a in last.values() if a["status"] == "firing"]
    order = {s: i for i, s in enumerate(reversed(STATUSES))}  # unresponsive worst
    for a in active:
        row = nodes.get((a["cluster"], a["node"]))
        if row is None:
            continue
        row["alerts"] += 1
        st = _rank(a)
        if order[st] < order[row["status"]]:
            row["status"] = st
    for t in trust:
        row = nodes.get((t["cluster"], t["node"]))
        if row is not None and t["trust"] is not None:
            row["trust"] = round(t["trust"], 4)
    counts = dict.fromkeys(STATUSES, 0)
    for row in nodes.values():
        counts[row["status"]] += 1
    hist: dict[str, list[list[float]]] = {}
    for h in health:
        hist.setdefault(h["cluster"], []).append([h["ts"], h["overall_health"]])
    for c, pts in hist.items():
        if len(pts) > MAX_HEALTH_POINTS:
            step = len(pts) / MAX_HEALTH_POINTS
            hist[c] = [pts[int(i * step)] for i in range(MAX_HEALTH_POINTS - 1)] + [pts[-1]]
    events.sort(key=lambda a: a["ts"], reverse=True)
    active.sort(key=lambda a: a["started_at"] or 0.0, reverse=True)
    return {
        "since": since,
        "until": until,
        "fleet": {
            "nodes": len(nodes),
            "clusters": sorted({c for c, _ in nodes} | set(hist)),
            "status": counts,
            "active_alerts": len(active),
            "health": {c: pts[-1][1] for c, pts in hist.items() if pts},
        },
        "items": sorted(nodes.values(), key=lambda r: (r["cluster"], r["node"])),
        "alerts": {"active": active, "events": events[:MAX_ALERT_EVENTS]},
        "health": hist,
    }


def install_history_routes(app: Any, *, store_root: str | Path | None, require: Callable[[Any], None],
                           times: Callable[[str | None, str | None], tuple[float, float]]) -> None:
    """``GET /api/history/snapshot``: the fleet, alerts and health as they were over a past range (needs a store)."""
    @app.get("/api/history/snapshot", summary="The fleet, alerts and cluster health as they were over a past range", tags=["history"])
    async def snapshot(
        request: Request,
        since: str | None = Query(None, description="UNIX s, ISO 8601 or a duration ago (1h); default until-1h"),
        until: str | None = Query(None, description="UNIX s, ISO 8601, 'now' or a duration ago; default now"),
        cluster: str | None = None,
    ) -> Response:
        require(request)
        if store_root is None:
            raise HTTPException(404, "no file store is configured for this API (start it with the store root, as `swarmwatch up` does)")
        s, u = times(since, until)
        if u - s > MAX_RANGE_S:
            raise HTTPException(400, f"the range is {u - s:.0f} s; at most {MAX_RANGE_S:.0f} s (31 days) per view")
        if cluster is not None:
            from schemas import check_token

            try:
                check_token(cluster, "cluster")
            except ValueError as exc:
                raise HTTPException(400, str(exc)) from None
        body = await asyncio.to_thread(fleet_snapshot, store_root, s, u, cluster)
        return Response(orjson.dumps(body), media_type="application/json")
