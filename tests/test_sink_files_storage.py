"""File sinks: partitioned layout, both formats reading back equal, rotation, temp files, retention."""
from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from schemas import (
    Alert,
    AlertKind,
    AlertStatus,
    Event,
    HealthScore,
    MetricBatch,
    Sample,
    SeriesStats,
    Severity,
    TrustScore,
    WindowAggregate,
    encode,
    subjects,
)
from sinks.files import FileSink, FileSinkSettings
from sinks.reader import read_records
from sinks.retention import apply_retention
from sinks.rows import utc_date
from sinks.segments import get_format, list_segments, partition_dir, segment_name, write_atomic
from swarmwatch.streams import ensure_streams

DAY = 86_400.0
TODAY0 = (time.time() // DAY) * DAY  # today 00:00 UTC
D1 = TODAY0 - 3 * DAY + 3600.0  # three days ago, 01:00 UTC
D2 = TODAY0 - 2 * DAY + 7200.0  # two days ago, 02:00 UTC


async def wait_until(pred: Callable[[], Any], timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.05)


def batch(cluster: str, node: str, ts: float, n: int = 2) -> MetricBatch:
    return MetricBatch(
        cluster, node, ts,
        [Sample(f"m{i}", float(i) + 0.5, unit="%" if i == 0 else None, labels={"core": str(i)} if i == 1 else None)
         for i in range(n)],
    )


async def publish_all(js: Any) -> dict[str, int]:
    """One message of every kind on two clusters and two days; returns rows expected per kind."""
    for cl, ts in (("eu-1", D1), ("us-2", D2)):
        await js.publish(subjects.metrics(cl, "n1"), encode(batch(cl, "n1", ts, 3)))
        await js.publish(subjects.events(cl, "n1", "training.update"),
                         encode(Event(cl, "n1", ts, "training.update", {"loss": 0.25, "nested": {"a": [1, 2]}})))
        agg = WindowAggregate(cl, "n1", 10.0, ts, ts + 10, [
            SeriesStats("cpu", 3, 1.0, 3.0, 2.0, 6.0, 2.0, 3.0, 3.0, 3.0),
            SeriesStats("lat", 2, 5.0, 7.0, 6.0, 12.0, 6.0, 7.0, 7.0, 7.0, labels={"peer": "p1"}, unit="ms"),
        ])
        await js.publish(subjects.agg(10, cl, "n1"), encode(agg))
        al = Alert(f"cpu_high:{cl}:n1:1", AlertStatus.FIRING, Severity.WARNING, AlertKind.THRESHOLD, "cpu_high",
                   cl, "n1", ts, "cpu above 85%", metric="cpu", value=91.0, threshold=85.0, details={"for_s": 0})
        await js.publish(subjects.alerts("warning", cl, "n1", "cpu_high"), encode(al))
        await js.publish(subjects.trust(cl, "n1"), encode(TrustScore(cl, "n1", ts, 7, 0.9, evidence={"dev": 0.1})))
        await js.publish(subjects.health(cl), encode(HealthScore(cl, ts, 87.5, peer_count=4, components={"latency": 90.0})))
    return {"metrics": 6, "events": 2, "agg": 4, "alerts": 2, "trust": 2, "health": 2}


async def run_sinks(nc: Any, root: Path, n_msgs: int, settings: FileSinkSettings | None = None) -> list[FileSink]:
    sinks = [FileSink(nc, root, fmt, settings or FileSinkSettings(flush_interval_s=0.2)) for fmt in ("json", "parquet")]
    for s in sinks:
        await s.start()
    await wait_until(lambda: all(s.stats.acked_msgs >= n_msgs for s in sinks))
    for s in sinks:
        await s.stop()
    return sinks


async def test_records_land_in_date_and_cluster_partitions_and_both_formats_read_back_equal(nc: Any, tmp_path: Path) -> None:
    js = nc.jetstream()
    await ensure_streams(js)
    expected = await publish_all(js)
    root = tmp_path / "store"
    await run_sinks(nc, root, 12)

    for fmt, ext in (("json", "jsonl"), ("parquet", "parquet")):
        for kind in expected:
            for cl, ts in (("eu-1", D1), ("us-2", D2)):
                d = partition_dir(root, fmt, kind, utc_date(ts), cl)
                assert [p.suffix for p in d.iterdir()] == [f".{ext}"], (fmt, kind, cl)
    assert utc_date(D1) != utc_date(D2)

    for kind, n in expected.items():
        js_rows = read_records(root, kind, fmt="json")
        pq_rows = read_records(root, kind, fmt="parquet")
        assert len(js_rows) == n, kind
        assert js_rows == pq_rows, kind

    m = read_records(root, "metrics", fmt="parquet", cluster="eu-1")
    assert [(r["metric"], r["value"], r["unit"], r["labels"]) for r in m] == [
        ("m0", 0.5, "%", None), ("m1", 1.5, None, {"core": "1"}), ("m2", 2.5, None, None)
    ]
    assert {r["ts"] for r in m} == {D1} and {r["node"] for r in m} == {"n1"}
    ev = read_records(root, "events")[0]
    assert ev["payload"] == {"loss": 0.25, "nested": {"a": [1, 2]}} and ev["kind"] == "training.update"
    agg = read_records(root, "agg", cluster="us-2")
    assert [(r["metric"], r["count"], r["p95"], r["labels"], r["unit"], r["window_s"]) for r in agg] == [
        ("cpu", 3, 3.0, None, None, 10.0), ("lat", 2, 7.0, {"peer": "p1"}, "ms", 10.0)
    ]
    al = read_records(root, "alerts", cluster="eu-1")[0]
    assert (al["status"], al["severity"], al["kind"], al["value"], al["details"]) == ("firing", "warning", "threshold", 91.0, {"for_s": 0})
    assert read_records(root, "health")[0]["components"] == {"latency": 90.0}
    assert read_records(root, "trust")[0]["evidence"] == {"dev": 0.1}


async def test_reader_filters_by_time_cluster_and_node(nc: Any, tmp_path: Path) -> None:
    js = nc.jetstream()
    await ensure_streams(js)
    for i in range(6):
        await js.publish(subjects.metrics("c1", f"n{i % 2}"), encode(batch("c1", f"n{i % 2}", D1 + i * 60, 1)))
    await js.publish(subjects.metrics("c2", "n0"), encode(batch("c2", "n0", D1, 1)))
    root = tmp_path / "store"
    await run_sinks(nc, root, 7)
    for fmt in ("json", "parquet"):
        got = read_records(root, "metrics", since=D1 + 60, until=D1 + 240, cluster="c1", fmt=fmt)
        assert [r["ts"] for r in got] == [D1 + 60, D1 + 120, D1 + 180]
        assert [r["node"] for r in read_records(root, "metrics", node="n1", cluster="c1", fmt=fmt)] == ["n1"] * 3
        assert len(read_records(root, "metrics", fmt=fmt)) == 7
        assert read_records(root, "metrics", since=TODAY0 + DAY, fmt=fmt) == []


async def test_rotation_by_size_rolls_several_segments_without_losing_or_repeating_rows(nc: Any, tmp_path: Path) -> None:
    js = nc.jetstream()
    await ensure_streams(js)
    for i in range(60):
        await js.publish(subjects.metrics("c1", "n1"), encode(batch("c1", "n1", D1 + i, 2)))
    root = tmp_path / "store"
    sinks = [FileSink(nc, root, fmt, FileSinkSettings(flush_interval_s=30.0, max_records=20)) for fmt in ("json", "parquet")]
    for s in sinks:
        await s.start()
    # size alone triggers flushes here: the 30 s age limit is never reached
    await wait_until(lambda: all(s.stats.acked_msgs >= 50 for s in sinks))
    for s in sinks:
        await s.stop()
    for fmt in ("json", "parquet"):
        segs = list_segments(root, fmt, "metrics")
        assert len(segs) >= 3, fmt
        rows = read_records(root, "metrics", fmt=fmt)
        assert len(rows) == 120
        assert sorted({r["_seq"] for r in rows}) == list(range(1, 61))


async def test_half_written_temp_file_is_ignored_by_readers_and_removed_at_start(nc: Any, tmp_path: Path) -> None:
    js = nc.jetstream()
    await ensure_streams(js)
    await js.publish(subjects.metrics("c1", "n1"), encode(batch("c1", "n1", D1, 2)))
    root = tmp_path / "store"
    await run_sinks(nc, root, 1)
    temps = []
    for fmt, ext in (("json", "jsonl"), ("parquet", "parquet")):
        d = partition_dir(root, fmt, "metrics", utc_date(D1), "c1")
        t = d / f".{segment_name('metrics', 2, 9, ext)}.123.abcd.tmp"
        t.write_bytes(b'{"ts": 1, "cluster": "c1", "no' if fmt == "json" else b"PAR1\x00\x00garbage")
        temps.append(t)
        rows = read_records(root, "metrics", fmt=fmt)
        assert [r["_seq"] for r in rows] == [1, 1]
    s = FileSink(nc, root, "json", FileSinkSettings(flush_interval_s=0.2))
    await s.start()
    await s.stop()
    assert not temps[0].exists() and temps[1].exists()  # each sink cleans only its own format


def test_reader_returns_a_message_written_twice_once(tmp_path: Path) -> None:
    """A crash between a write and its ack, then a redelivery with a different flush boundary."""
    root = tmp_path / "store"
    for fmt in ("json", "parquet"):
        f = get_format(fmt)
        d = partition_dir(root, fmt, "metrics", utc_date(D1), "c1")
        rows = [{"ts": D1 + s, "cluster": "c1", "node": "n1", "metric": f"m{j}", "labels": None, "value": float(s),
                 "unit": None, "_seq": s} for s in range(1, 9) for j in range(2)]
        for first, last in ((1, 5), (3, 8)):
            part = [r for r in rows if first <= r["_seq"] <= last]
            write_atomic(d / segment_name("metrics", first, last, f.ext), lambda fh, part=part: f.write(fh, "metrics", part))
        got = read_records(root, "metrics", fmt=fmt)
        assert [(r["_seq"], r["metric"]) for r in got] == [(s, f"m{j}") for s in range(1, 9) for j in range(2)]


async def test_retention_deletes_date_partitions_older_than_the_setting(nc: Any, tmp_path: Path) -> None:
    js = nc.jetstream()
    await ensure_streams(js)
    old = 1_577_880_000.0  # 2020-01-01T12:00Z
    await js.publish(subjects.metrics("c1", "n1"), encode(batch("c1", "n1", old, 1)))
    await js.publish(subjects.metrics("c1", "n1"), encode(batch("c1", "n1", D2, 1)))
    root = tmp_path / "store"
    keep_all = FileSink(nc, root, "parquet", FileSinkSettings(flush_interval_s=0.1))
    await keep_all.start()
    await wait_until(lambda: keep_all.stats.acked_msgs >= 2)
    await keep_all.stop()
    assert (root / "parquet" / "metrics" / "date=2020-01-01").is_dir()

    settings = FileSinkSettings(flush_interval_s=0.1, retention_days=30, retention_interval_s=0.2)
    s = FileSink(nc, root, "parquet", settings)
    await s.start()
    assert s.stats.retention_deleted == 1  # at start
    assert not (root / "parquet" / "metrics" / "date=2020-01-01").exists()
    await js.publish(subjects.metrics("c1", "n1"), encode(batch("c1", "n1", old + 60, 1)))  # arrives late: not stored
    await wait_until(lambda: s.stats.acked_msgs >= 1)
    await s.stop()
    assert s.stats.expired == 1
    assert not (root / "parquet" / "metrics" / "date=2020-01-01").exists()
    assert [r["ts"] for r in read_records(root, "metrics")] == [D2]
    assert not [p for p in (root / "parquet" / "metrics").iterdir() if p.name.startswith(".")]


def test_apply_retention_keeps_the_day_that_is_still_inside_the_window(tmp_path: Path) -> None:
    base = tmp_path / "json"
    for date in ("2026-01-01", "2026-01-02", "2026-01-03"):
        (base / "alerts" / f"date={date}" / "cluster=c").mkdir(parents=True)
    now = 1_767_484_800.0  # 2026-01-04T00:00Z
    assert apply_retention(base, 2, now=now) == 1  # 2026-01-01 ended two days before now; 01-02 did not
    assert sorted(p.name for p in (base / "alerts").iterdir()) == ["date=2026-01-02", "date=2026-01-03"]
    with pytest.raises(ValueError, match="retention_days"):
        apply_retention(base, 0)


async def test_message_with_an_unsafe_cluster_name_is_refused_not_written_outside_the_root(nc: Any, tmp_path: Path) -> None:
    js = nc.jetstream()
    await ensure_streams(js)
    bad = WindowAggregate("../../escape", "n1", 10.0, D1, D1 + 10, [SeriesStats("cpu", 1, 1, 1, 1, 1, 1, 1, 1, 1)])
    await js.publish("sw.agg.10s.x.n1", encode(bad))
    await js.publish(subjects.trust("c1", "n1"), encode(TrustScore("c1", "n1", D1, 1, 1.0)))
    root = tmp_path / "a" / "b" / "store"
    s = FileSink(nc, root, "json", FileSinkSettings(flush_interval_s=0.1))
    await s.start()
    await wait_until(lambda: s.stats.acked_msgs >= 2)
    await s.stop()
    assert s.stats.invalid == 1
    assert sorted(p.name for p in (root / "json").iterdir()) == ["trust"]
    assert not (tmp_path / "a" / "escape").exists() and not (tmp_path / "escape").exists()


async def test_compaction_merges_a_closed_days_segments_and_reads_back_the_same_rows(nc: Any, tmp_path: Path) -> None:
    from sinks.compaction import compact

    js = nc.jetstream()
    await ensure_streams(js)
    today = TODAY0 + 60.0
    for i in range(30):
        await js.publish(subjects.metrics("c1", "n1"), encode(batch("c1", "n1", D1 + i, 3)))
    for i in range(5):
        await js.publish(subjects.metrics("c1", "n1"), encode(batch("c1", "n1", min(today + i, time.time()), 3)))
    root = tmp_path / "store"
    await run_sinks(nc, root, 35, FileSinkSettings(flush_interval_s=0.2, max_records=12, compact_interval_s=None))
    for fmt in ("json", "parquet"):
        f = get_format(fmt)
        before = read_records(root, "metrics", fmt=fmt)
        old = [s for s in list_segments(root, fmt, "metrics") if s.date == utc_date(D1)]
        assert len(old) >= 5
        # a redelivered flush wrote messages 4..9 a second time, in a segment of its own
        dup = [r for r in f.read(old[0].path, "metrics") + f.read(old[1].path, "metrics") + f.read(old[2].path, "metrics")
               if 4 <= r["_seq"] <= 9]
        write_atomic(old[0].path.parent / segment_name("metrics", 4, 9, f.ext), lambda fh, dup=dup: f.write(fh, "metrics", dup))
        n_today = len([s for s in list_segments(root, fmt, "metrics") if s.date != utc_date(D1)])

        merged_away = compact(root, fmt)

        segs = list_segments(root, fmt, "metrics")
        old_after = [s for s in segs if s.date == utc_date(D1)]
        assert [(s.first_seq, s.last_seq) for s in old_after] == [(1, 30)]
        assert merged_away == len(old) + 1
        assert len(segs) - 1 == n_today  # today's partition is still being written: left alone
        after = read_records(root, "metrics", fmt=fmt)
        assert after == before
        assert len([r for r in f.read(old_after[0].path, "metrics")]) == 90
