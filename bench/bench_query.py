"""``swarmwatch query`` speed: one day of a fleet at 1 Hz, typical per-node percentile queries.

Writes a store of ``--nodes`` nodes x ``--series`` series x 86,400 s (one day)
in the layout hourly compaction produces (24 hourly segments per cluster,
written by ``sinks.compaction.write_sorted_parquet`` from time-ordered input),
then times queries through ``sinks.query.StoreQuery``: cold (a new connection,
views built) and warm (median of 3 more runs).

    python bench/bench_query.py --nodes 100 --series 40 [--store DIR] [--keep]

Prints one JSON object. ``--store`` reuses a store an earlier run kept.
"""
from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from sinks.compaction import write_sorted_parquet
from sinks.parquet import SCHEMAS, TIMESTAMP_TYPE
from sinks.rows import utc_date
from sinks.segments import partition_dir, segment_name, write_atomic

DAY0 = 1_796_342_400.0  # 2026-12-04 00:00 UTC
HOUR = 3600
CHUNK_S = 300  # seconds of the fleet per input table (stream order: time)


def _series(n: int) -> list[tuple[str, dict[str, str] | None, str]]:
    names = ["cpu.percent", "mem.percent", "disk.percent", "load.1m", "net.bytes_recv_per_s", "net.bytes_sent_per_s",
             "disk.read_bytes_per_s", "disk.write_bytes_per_s", "proc.count", "gpu.utilization_percent"]
    out: list[tuple[str, dict[str, str] | None, str]] = []
    i = 0
    while len(out) < n:
        name = names[i % len(names)]
        labels = None if i < len(names) else {"core": str(i // len(names) - 1)}
        out.append((name, labels, "%" if name.endswith("percent") else ""))
        i += 1
    return out


def _chunk(t0: int, seconds: int, nodes: int, series: list[tuple[str, dict[str, str] | None, str]], seq0: int,
           rng: np.random.Generator, level: np.ndarray) -> pa.Table:
    """``seconds`` of the fleet in stream order (message by message), values mean-reverting per series, 0.1 resolution."""
    s = len(series)
    msgs = seconds * nodes
    ts_s = t0 + np.repeat(np.arange(seconds), nodes) + rng.random(msgs) * 0.02  # each node's tick, a little jitter
    # a mean-reverting walk (AR(1) around each series' own mean), so no series sticks at 0 or 100
    noise = rng.normal(0.0, 1.0, size=(seconds, nodes, s))
    steps = np.empty_like(noise)
    x = level[0]
    for i in range(seconds):
        x = level[1] + 0.98 * (x - level[1]) + noise[i]
        steps[i] = x
    level[0] = x
    values = np.round(np.clip(steps, 0.0, 100.0), 1).reshape(-1)
    ts_ns = (np.round(ts_s * 1e6).astype(np.int64) * 1000)
    node_names = np.array([f"n{i:03d}" for i in range(nodes)])
    node_col = np.repeat(np.tile(node_names, seconds), s)
    metric = pa.DictionaryArray.from_arrays(pa.array(np.tile(np.arange(s, dtype=np.int32), msgs)), pa.array([m for m, _, _ in series]))
    labels = pa.array([lab for _, lab, _ in series] * msgs, pa.map_(pa.string(), pa.string()))
    unit = pa.DictionaryArray.from_arrays(pa.array(np.tile(np.arange(s, dtype=np.int32), msgs)), pa.array([u or None for _, _, u in series]))
    return pa.Table.from_arrays([
        pa.array(np.repeat(ts_ns, s)).cast(TIMESTAMP_TYPE),
        pa.array(np.full(msgs * s, "bench")).dictionary_encode().cast(pa.string()),
        pa.array(node_col),
        metric.cast(pa.string()),
        labels,
        pa.array(values),
        unit.cast(pa.string()),
        pa.array(np.repeat(np.arange(seq0, seq0 + msgs, dtype=np.int64), s)),
    ], schema=SCHEMAS["metrics"])


def build(root: Path, nodes: int, n_series: int, hours: int) -> dict[str, Any]:
    series = _series(n_series)
    rng = np.random.default_rng(13)
    mean = rng.uniform(5, 80, size=(nodes, n_series))
    level = np.stack([mean.copy(), mean])  # [current value, series mean]
    seq = 1
    t_start = time.perf_counter()
    for h in range(hours):
        t0 = int(DAY0) + h * HOUR
        first = seq

        def tables() -> Any:
            nonlocal seq
            for c in range(0, HOUR, CHUNK_S):
                t = _chunk(t0 + c, CHUNK_S, nodes, series, seq, rng, level)
                seq += CHUNK_S * nodes
                yield t

        # the name needs the seq range: write to a temp name, then rename (as compaction does, atomically)
        tmp = partition_dir(root, "parquet", "metrics", utc_date(t0), "bench") / f".hour-{h}.parquet"
        write_atomic(tmp, lambda f: write_sorted_parquet(f, "metrics", tables()))
        tmp.rename(tmp.with_name(segment_name("metrics", first, seq - 1, "parquet")))
    files = list((root / "parquet").rglob("*.parquet"))
    size = sum(p.stat().st_size for p in files)
    rows = nodes * n_series * HOUR * hours
    return {"rows": rows, "files": len(files), "bytes": size, "bytes_per_sample": round(size / rows, 3),
            "build_s": round(time.perf_counter() - t_start, 1)}


QUERIES = {
    "node_day_percentiles": "SELECT quantile_cont(value, [0.5, 0.95, 0.99]) AS q FROM samples "
                            "WHERE node = 'n042' AND metric = 'cpu.percent' AND labels = MAP {}",
    "node_hourly_p95": "SELECT time_bucket(INTERVAL 1 hour, ts) AS h, quantile_cont(value, 0.95) AS p95 FROM samples "
                       "WHERE node = 'n042' AND metric = 'cpu.percent' AND labels = MAP {} GROUP BY h ORDER BY h",
    "node_all_series_p95_last_hour": "SELECT series, quantile_cont(value, 0.95) AS p95 FROM samples "
                                     "WHERE node = 'n042' AND ts >= TIMESTAMPTZ '2026-12-04 23:00:00+00' GROUP BY series",
    "fleet_p95_per_node_one_metric": "SELECT node, quantile_cont(value, 0.95) AS p95 FROM samples "
                                     "WHERE metric = 'cpu.percent' AND labels = MAP {} GROUP BY node",
}


def time_queries(root: Path) -> dict[str, Any]:
    from sinks.query import StoreQuery

    out: dict[str, Any] = {}
    for name, sql in QUERIES.items():
        t0 = time.perf_counter()
        with StoreQuery(root) as q:
            first = q.arrow(sql)
            cold = time.perf_counter() - t0
            warm = []
            for _ in range(3):
                t1 = time.perf_counter()
                q.arrow(sql)
                warm.append(time.perf_counter() - t1)
        out[name] = {"cold_s": round(cold, 3), "warm_median_s": round(statistics.median(warm), 3), "rows": first.num_rows}
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--nodes", type=int, default=100)
    ap.add_argument("--series", type=int, default=40)
    ap.add_argument("--hours", type=int, default=24)
    ap.add_argument("--store", type=Path, help="reuse (or keep, with --keep) the store here")
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args()
    tmp = None
    root = args.store
    if root is None:
        tmp = tempfile.mkdtemp(prefix="bench-query-")
        root = Path(tmp)
    out: dict[str, Any] = {"nodes": args.nodes, "series_per_node": args.series, "hours": args.hours}
    try:
        if not (root / "parquet").is_dir():
            out["store"] = build(root, args.nodes, args.series, args.hours)
        out["queries"] = time_queries(root)
    finally:
        if tmp is not None and not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
