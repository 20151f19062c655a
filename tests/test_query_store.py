"""``swarmwatch query``: DuckDB views over the store, real timestamps, comparable labels, no duplicates, four output formats."""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from typer.testing import CliRunner

from schemas import series_key
from sinks.parquet import LEGACY_SCHEMAS
from sinks.query import StoreQuery
from sinks.rows import utc_date
from sinks.segments import get_format, partition_dir, segment_name, write_atomic
from swarmwatch.cli import app

DAY = 86_400.0
T0 = (time.time() // DAY) * DAY - 2 * DAY + 3600.0  # two days ago, 01:00 UTC


def samples(seq0: int, n_msgs: int, node: str = "n1") -> list[dict[str, Any]]:
    rows = []
    for m in range(n_msgs):
        seq = seq0 + m
        ts = T0 + seq + 0.25
        rows.append({"ts": ts, "cluster": "c1", "node": node, "metric": "cpu.percent", "labels": None, "value": float(seq), "unit": "%", "_seq": seq})
        rows.append({"ts": ts, "cluster": "c1", "node": node, "metric": "cpu.percent", "labels": {"core": "0"}, "value": seq + 0.5, "unit": "%", "_seq": seq})
    return rows


def put(root: Path, fmt: str, rows: list[dict[str, Any]], legacy: bool = False) -> None:
    f = get_format(fmt)
    path = partition_dir(root, fmt, "metrics", utc_date(T0), "c1") / segment_name("metrics", rows[0]["_seq"], rows[-1]["_seq"], f.ext)
    if legacy:
        write_atomic(path, lambda fh: pq.write_table(pa.Table.from_pylist(rows, schema=LEGACY_SCHEMAS["metrics"]), fh))
    else:
        write_atomic(path, lambda fh: f.write(fh, "metrics", rows))


def test_views_have_real_timestamps_and_labels_that_compare_without_null_tricks(tmp_path: Path) -> None:
    put(tmp_path, "parquet", samples(1, 10))
    with StoreQuery(tmp_path) as q:
        [types] = q.rows("SELECT typeof(ts) AS t, typeof(labels) AS l FROM samples LIMIT 1")
        assert types == {"t": "TIMESTAMPTZ_NS", "l": "MAP(VARCHAR, VARCHAR)"}
        assert q.rows("SELECT count(*) AS n FROM samples WHERE labels['core'] = '0'") == [{"n": 10}]
        assert q.rows("SELECT count(*) AS n FROM samples WHERE labels = MAP {}") == [{"n": 10}]
        assert q.rows("SELECT count(*) AS n FROM samples WHERE labels_key = ''") == [{"n": 10}]
        keys = {r["series"] for r in q.rows("SELECT DISTINCT series FROM samples")}
        assert keys == {series_key("cpu.percent", None), series_key("cpu.percent", {"core": "0"})}
        [first] = q.rows("SELECT epoch(min(ts)) AS s FROM samples")
        assert abs(first["s"] - (T0 + 1.25)) < 1e-6
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(T0 + 6))
        assert q.rows(f"SELECT count(DISTINCT _seq) AS n FROM samples WHERE ts >= '{since}'") == [{"n": 5}]


def test_rows_written_twice_are_returned_once_in_every_layout(tmp_path: Path) -> None:
    put(tmp_path, "parquet", samples(1, 30), legacy=True)  # an old compacted file, float-second layout
    put(tmp_path, "parquet", samples(4, 6))  # a redelivered flush inside it
    put(tmp_path, "parquet", samples(25, 16))  # a redelivery with other boundaries: 25..40, half new
    put(tmp_path, "parquet", samples(41, 5))
    with StoreQuery(tmp_path) as q:
        [r] = q.rows("SELECT count(*) AS n, count(DISTINCT (_seq, labels_key)) AS u, min(_seq) AS lo, max(_seq) AS hi FROM samples")
        assert r == {"n": 90, "u": 90, "lo": 1, "hi": 45}
        assert q.records("samples", "_seq = 26") == sorted(samples(26, 1), key=lambda x: x["labels"] is not None)


def test_a_json_lines_only_store_gives_the_same_views(tmp_path: Path) -> None:
    put(tmp_path, "json", samples(1, 10))
    put(tmp_path, "json", samples(5, 3))
    with StoreQuery(tmp_path) as q:
        assert q.rows("SELECT count(*) AS n, typeof(min(ts)) AS t FROM samples")[0]["n"] == 20
        assert q.rows("SELECT count(*) AS n FROM alerts") == [{"n": 0}]  # empty views exist, typed


def test_query_command_writes_table_csv_json_and_parquet(tmp_path: Path) -> None:
    store = tmp_path / "store"
    put(store, "parquet", samples(1, 20))
    sql = "SELECT node, series, quantile_cont(value, 0.5) AS p50, max(ts) AS last FROM samples GROUP BY ALL ORDER BY series"
    run = CliRunner().invoke
    table = run(app, ["query", sql, "--store", str(store)])
    assert table.exit_code == 0, table.output
    assert "cpu.percent{core=0}" in table.output and "(2 rows)" in table.output
    csv_out = run(app, ["query", sql, "--store", str(store), "--format", "csv"])
    assert csv_out.output.splitlines()[0] == '"node","series","p50","last"' and len(csv_out.output.splitlines()) == 3
    js = json.loads(run(app, ["query", sql, "--store", str(store), "-f", "json"]).output)
    assert js[0]["series"] == "cpu.percent" and js[0]["p50"] == 10.5 and js[0]["last"].endswith("Z")
    out = tmp_path / "r.parquet"
    res = run(app, ["query", sql, "--store", str(store), "-f", "parquet", "-o", str(out)])
    assert res.exit_code == 0 and pq.read_table(out).num_rows == 2


def test_query_command_names_bad_sql_and_a_missing_store(tmp_path: Path) -> None:
    put(tmp_path, "parquet", samples(1, 2))
    res = CliRunner().invoke(app, ["query", "SELECT nope FROM samples", "--store", str(tmp_path)])
    assert res.exit_code == 2 and "nope" in res.output and "Traceback" not in res.output
    res = CliRunner().invoke(app, ["query", "SELECT 1", "--store", str(tmp_path / "missing")])
    assert res.exit_code == 2 and "not a directory" in res.output


def test_a_segment_compacted_away_after_the_views_were_listed_is_read_from_its_merged_file(tmp_path: Path) -> None:
    from sinks.compaction import compact

    for i in range(1, 40, 10):
        put(tmp_path, "parquet", samples(i, 10))
    with StoreQuery(tmp_path) as q:
        assert compact(tmp_path, "parquet") == 4  # the four listed files are gone now
        assert q.rows("SELECT count(*) AS n FROM samples") == [{"n": 80}]
