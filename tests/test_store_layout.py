"""The Parquet store's layout: typed timestamps, compact encodings, hourly compaction of the open day, old files still read."""
from __future__ import annotations

import math
import random
import time
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from sinks.compaction import compact
from sinks.parquet import LEGACY_SCHEMAS, ParquetFormat, choose_encodings, file_layout, ns_to_seconds, rows_to_table, seconds_to_ns
from sinks.reader import read_records, row_order
from sinks.rows import utc_date
from sinks.segments import list_segments, partition_dir, segment_name, write_atomic

DAY = 86_400.0
TODAY0 = (time.time() // DAY) * DAY
OLD_DAY = TODAY0 - 5 * DAY


def metric_rows(seq0: int, n_msgs: int, t0: float, node: str = "n1", series: int = 4) -> list[dict[str, Any]]:
    rng = random.Random(seq0)
    rows = []
    for m in range(n_msgs):
        ts = t0 + m + rng.random() * 1e-3
        for k in range(series):
            rows.append({"ts": ts, "cluster": "c1", "node": node, "metric": f"m{k % 2}", "labels": {"core": str(k)} if k >= 2 else None,
                         "value": rng.gauss(50.0, 10.0) if k else 2.0, "unit": "%", "_seq": seq0 + m})
    return rows


def write_segment(root: Path, rows: list[dict[str, Any]], ts: float, legacy: bool = False) -> Path:
    d = partition_dir(root, "parquet", "metrics", utc_date(ts), "c1")
    path = d / segment_name("metrics", rows[0]["_seq"], rows[-1]["_seq"], "parquet")
    if legacy:  # what the sink wrote before typed timestamps: float seconds, default encodings
        table = pa.Table.from_pylist(rows, schema=LEGACY_SCHEMAS["metrics"])
        write_atomic(path, lambda f: pq.write_table(table, f, compression="zstd"))
    else:
        write_atomic(path, lambda f: ParquetFormat().write(f, "metrics", rows))
    return path


def test_float_seconds_survive_the_nanosecond_timestamp_exactly() -> None:
    rng = random.Random(1)
    values = [time.time() + rng.uniform(-1e7, 1e7) for _ in range(20_000)] + [0.0, 1.5, 1796420947.5461013, None]
    back = ns_to_seconds(seconds_to_ns(values)).to_pylist()
    assert back == values


def test_new_segments_store_times_as_utc_nanosecond_timestamps_with_dictionary_names(tmp_path: Path) -> None:
    path = write_segment(tmp_path, metric_rows(1, 50, OLD_DAY), OLD_DAY)
    f = pq.ParquetFile(path)
    assert f.schema_arrow.field("ts").type == pa.timestamp("ns", tz="UTC")
    assert file_layout(path) == 2
    col = {f.metadata.row_group(0).column(i).path_in_schema: f.metadata.row_group(0).column(i) for i in range(f.metadata.num_columns)}
    for name in ("node", "metric", "labels.key_value.key", "labels.key_value.value", "unit"):
        assert "RLE_DICTIONARY" in col[name].encodings, name


def test_each_numeric_column_takes_the_encoding_zstd_makes_smallest() -> None:
    rng = random.Random(3)
    n = 5000
    rows = [{"ts": 1.7e9 + i, "cluster": "c", "node": "n", "metric": "m", "labels": None, "unit": None, "_seq": i + 1,
             "value": 50.0 + rng.gauss(0, 1)} for i in range(n)]
    chosen = choose_encodings("metrics", rows_to_table("metrics", rows))
    assert chosen["value"] == "BYTE_STREAM_SPLIT"  # noisy floats
    assert chosen["ts"] == "DELTA_BINARY_PACKED" and chosen["_seq"] == "DELTA_BINARY_PACKED"  # regular steps
    for r in rows:
        r["value"] = rng.choice((1.0, 2.5, 7.25, 1e6 + 0.125))
    assert choose_encodings("metrics", rows_to_table("metrics", rows))["value"] == "DICT"  # few distinct values


def test_reader_reads_old_float_second_files_and_new_ones_together(tmp_path: Path) -> None:
    old = metric_rows(1, 20, OLD_DAY)
    new = metric_rows(21, 20, OLD_DAY + 20)
    write_segment(tmp_path, old, OLD_DAY, legacy=True)
    write_segment(tmp_path, new, OLD_DAY + 20)
    got = read_records(tmp_path, "metrics")
    assert got == sorted(old + new, key=row_order("metrics"))
    window = read_records(tmp_path, "metrics", since=OLD_DAY + 10, until=OLD_DAY + 30)
    assert {r["_seq"] for r in window} == set(range(11, 31))


def test_compaction_turns_old_files_into_the_new_layout_sorted_by_series(tmp_path: Path) -> None:
    rows = metric_rows(1, 30, OLD_DAY)
    for i in range(0, 30, 5):
        write_segment(tmp_path, rows[i * 4:(i + 5) * 4], OLD_DAY, legacy=i % 2 == 0)
    before = read_records(tmp_path, "metrics")
    assert compact(tmp_path, "parquet") == 6
    [seg] = list_segments(tmp_path, "parquet", "metrics")
    assert file_layout(seg.path) == 2
    stored = pq.read_table(seg.path)
    keys = [(n, m, str(lab)) for n, m, lab in zip(stored["node"].to_pylist(), stored["metric"].to_pylist(), stored["labels"].to_pylist())]
    assert keys == sorted(keys, key=lambda k: (k[0], k[1], k[2] != "None", k[2]))  # one series after the other
    assert read_records(tmp_path, "metrics") == before


def test_the_open_day_is_compacted_hourly_and_settled_files_are_not_rewritten(tmp_path: Path) -> None:
    now = time.time()
    t0 = max(TODAY0, now - 600)
    seq = 1
    for _ in range(20):  # the first "hour": 20 flushes
        write_segment(tmp_path, metric_rows(seq, 2, t0 + seq), t0)
        seq += 2
    assert compact(tmp_path, "parquet") == 0  # by default the open day is left alone
    assert compact(tmp_path, "parquet", open_day=True, settled_records=100) == 20
    [first] = list_segments(tmp_path, "parquet", "metrics")
    mtime = first.path.stat().st_mtime_ns
    for _ in range(10):  # the next "hour"
        write_segment(tmp_path, metric_rows(seq, 2, t0 + seq), t0)
        seq += 2
    assert compact(tmp_path, "parquet", open_day=True, settled_records=100) == 10
    segs = list_segments(tmp_path, "parquet", "metrics")
    assert [(s.first_seq, s.last_seq) for s in segs] == [(1, 40), (41, 60)]
    assert segs[0].path.stat().st_mtime_ns == mtime  # 160 rows >= 100: settled, not merged again
    assert len(read_records(tmp_path, "metrics")) == 30 * 2 * 4
