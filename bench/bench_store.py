"""Bytes per sample of the Parquet store on real series, before and after compaction.

Inputs (each optional):

- ``--recorded DIR``: a store written by a real run (``swarmwatch up --data-dir X``
  then ``DIR = X/store``); its metrics rows are the producer's own series. They
  are written again as the sink writes them (one segment per ``--flush-s`` of
  messages) and compacted as the sink does every hour (``compact(open_day=True)``).
- ``--nab DIR``: NAB's CSV series (``timestamp,value``), each series a metric of
  one node (its category), one message per row.

For each input it prints: samples, files and bytes per sample of the flush
segments, after compaction, and of the layout before issue 13 (float seconds,
default encodings, rows in seq order, as the old compaction wrote them) and of
the current layout, both with all rows in one file (no day partitions).

    python bench/bench_store.py --recorded /path/to/store --nab /work/shared/evals/nab/data

Prints one JSON object.
"""
from __future__ import annotations

import argparse
import csv
import datetime as dt
import io
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from sinks.compaction import compact, write_sorted_parquet
from sinks.parquet import LEGACY_SCHEMAS, ParquetFormat, rows_to_table
from sinks.reader import read_records
from sinks.rows import utc_date
from sinks.segments import list_segments, partition_dir, segment_name, write_atomic


def _size(root: Path) -> tuple[int, int]:
    files = [p for p in (root / "parquet").rglob("*.parquet")]
    return len(files), sum(p.stat().st_size for p in files)


def _columns(root: Path, n: int) -> dict[str, float]:
    out: dict[str, float] = {}
    for seg in list_segments(root, "parquet", "metrics"):
        md = pq.ParquetFile(seg.path).metadata
        for g in range(md.num_row_groups):
            for i in range(md.num_columns):
                c = md.row_group(g).column(i)
                out[c.path_in_schema] = out.get(c.path_in_schema, 0.0) + c.total_compressed_size
    return {k: round(v / n, 4) for k, v in out.items()}


def measure(rows: list[dict[str, Any]], msgs_per_segment: int) -> dict[str, Any]:
    """Write ``rows`` (seq order) as flush segments, compact, and report sizes."""
    fmt = ParquetFormat()
    n = len(rows)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        # flush segments: rows of msgs_per_segment consecutive messages per partition
        part: list[dict[str, Any]] = []
        seqs: set[int] = set()

        def flush() -> None:
            by: dict[tuple[str, str], list[dict[str, Any]]] = {}
            for r in part:
                by.setdefault((utc_date(r["ts"]), r["cluster"]), []).append(r)
            for (date, cluster), rs in by.items():
                path = partition_dir(root, "parquet", "metrics", date, cluster) / segment_name("metrics", rs[0]["_seq"], rs[-1]["_seq"], "parquet")
                write_atomic(path, lambda f, rs=rs: fmt.write(f, "metrics", rs))

        for r in rows:
            if r["_seq"] not in seqs and len(seqs) >= msgs_per_segment:
                flush()
                part, seqs = [], set()
            part.append(r)
            seqs.add(r["_seq"])
        if part:
            flush()
        files_flush, bytes_flush = _size(root)
        t0 = time.perf_counter()
        compact(root, "parquet", open_day=True)
        compact_s = time.perf_counter() - t0
        files_after, bytes_after = _size(root)
        cols = _columns(root, n)
        back = read_records(root, "metrics")
        assert len(back) == n, (len(back), n)
    legacy = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(rows, schema=LEGACY_SCHEMAS["metrics"]), legacy, compression="zstd")
    one = io.BytesIO()
    write_sorted_parquet(one, "metrics", [rows_to_table("metrics", rows)])
    days = len({utc_date(r["ts"]) for r in rows})
    return {
        "samples": n,
        "messages": len({r["_seq"] for r in rows}),
        "series": len({(r["node"], r["metric"], json.dumps(r.get("labels"), sort_keys=True)) for r in rows}),
        "days": days,
        "flush_segments": files_flush,
        "bytes_per_sample_flush_segments": round(bytes_flush / n, 3),
        "files_after_compaction": files_after,
        "bytes_per_sample_after_compaction": round(bytes_after / n, 3),
        "bytes_per_sample_layout_1_one_file": round(len(legacy.getvalue()) / n, 3),
        "bytes_per_sample_layout_2_one_file": round(len(one.getvalue()) / n, 3),
        "compaction_s": round(compact_s, 2),
        "bytes_per_sample_by_column": cols,
    }


def recorded_rows(store: Path) -> list[dict[str, Any]]:
    rows = read_records(store, "metrics", fmt="json")
    rows.sort(key=lambda r: r["_seq"])
    return rows


def nab_rows(data: Path) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    seq = 0
    for f in sorted(data.glob("*/*.csv")):
        with open(f, newline="") as fh:
            for rec in csv.DictReader(fh):
                seq += 1
                ts = dt.datetime.fromisoformat(rec["timestamp"]).replace(tzinfo=dt.timezone.utc).timestamp()
                rows.append({"ts": ts, "cluster": "nab", "node": f.parent.name, "metric": f.stem, "labels": None,
                             "value": float(rec["value"]), "unit": None, "_seq": seq})
    return rows


def simulate_day(series: int, flush_s: int, nodes: int = 1) -> dict[str, Any]:
    """A day of ``nodes`` x ``series`` at 1 Hz flushed every ``flush_s`` s, compacted every hour as the sink does.

    Returns the files per kind and cluster the day holds at its end (after the
    last hourly pass and the one after the day closed).
    """
    import random

    rng = random.Random(13)
    day0 = (time.time() // 86_400.0) * 86_400.0 - 86_400.0
    fmt = ParquetFormat()
    level = [[rng.uniform(5, 80) for _ in range(series)] for _ in range(nodes)]
    peak = 0
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        seq = 0
        t_start = time.perf_counter()
        for t in range(0, 86_400, flush_s):
            rows = []
            for s_ in range(flush_s):
                for n in range(nodes):
                    seq += 1
                    ts = day0 + t + s_ + rng.random() * 0.01  # one time per message, a little tick jitter
                    for k in range(series):
                        level[n][k] = min(100.0, max(0.0, level[n][k] + rng.gauss(0, 0.6)))
                        rows.append({"ts": ts, "cluster": "sim", "node": f"n{n}", "metric": f"m{k % 10}",
                                     "labels": {"i": str(k // 10)} if k >= 10 else None, "value": round(level[n][k], 1), "unit": "%",
                                     "_seq": seq})
            path = partition_dir(root, "parquet", "metrics", utc_date(day0), "sim") / segment_name("metrics", rows[0]["_seq"], rows[-1]["_seq"], "parquet")
            write_atomic(path, lambda f, rows=rows: fmt.write(f, "metrics", rows))
            if (t + flush_s) % 3600 == 0:
                peak = max(peak, len(list_segments(root, "parquet", "metrics")))
                compact(root, "parquet", open_day=True)
        compact(root, "parquet", open_day=True)  # the pass after the day closed
        segs = list_segments(root, "parquet", "metrics")
        size = sum(s.path.stat().st_size for s in segs)
        n = seq * series
        return {"nodes": nodes, "series": series, "flush_s": flush_s, "samples": n, "flush_segments_written": 86_400 // flush_s,
                "most_files_before_an_hourly_pass": peak, "files_at_end_of_day": len(segs),
                "bytes_per_sample": round(size / n, 3), "seconds": round(time.perf_counter() - t_start, 1)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--recorded", type=Path, help="a real run's store directory (holding json/metrics)")
    ap.add_argument("--nab", type=Path, help="NAB data directory (category/*.csv)")
    ap.add_argument("--flush-s", type=float, default=2.0, help="seconds of 1 Hz messages per flush segment")
    ap.add_argument("--day", action="store_true", help="also simulate a day of hourly compaction (files per day)")
    ap.add_argument("--day-series", type=int, default=50)
    ap.add_argument("--day-flush-s", type=int, default=10)
    args = ap.parse_args()
    out: dict[str, Any] = {}
    if args.day:
        out["day"] = simulate_day(args.day_series, args.day_flush_s)
    if args.recorded:
        rows = recorded_rows(args.recorded)
        span = (max(r["ts"] for r in rows) - min(r["ts"] for r in rows)) if rows else 0.0
        out["recorded"] = {"span_s": round(span, 1), **measure(rows, max(1, int(args.flush_s)))}
    if args.nab:
        out["nab"] = measure(nab_rows(args.nab), 1000)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
