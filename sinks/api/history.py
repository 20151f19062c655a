"""The API's history from the file sinks' store, read through :mod:`sinks.query` (DuckDB over the Parquet/JSON segments).

``stored_history`` serves a node's metric history older than the in-memory
ring; the ``/api/history/*`` routes let the dashboard travel in time: the
fleet, alerts and cluster health as they were over a past range.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path


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
