"""Anomaly alerts as specifications: how data arrives never pages, and live equals backtest."""
from __future__ import annotations

import numpy as np

from schemas import AlertStatus, MetricBatch, Sample

from processors.anomaly import AnomalyOperator, make_detector
from processors.anomaly.base import DEFAULT_THRESHOLD

T_0050 = 1_767_228_600.0  # 2026-01-01 00:50:00 UTC: ten minutes before a top of the hour


def rounded(x: object) -> object:
    if isinstance(x, float):
        return float(f"{x:.9g}")
    if isinstance(x, dict):
        return {k: rounded(v) for k, v in x.items()}
    if isinstance(x, list):
        return [rounded(v) for v in x]
    return x


def firing(emits: list) -> list:
    return [e.message for e in emits if e.message.status is AlertStatus.FIRING]


def run(op: AnomalyOperator, node: str, series: dict[str, np.ndarray], t0: float, step_s: float = 1.0, lag_s: float = 0.2) -> list:
    n = len(next(iter(series.values())))
    out = []
    for i in range(n):
        ts = t0 + i * step_s
        b = MetricBatch("c1", node, ts, [Sample(k, float(v[i])) for k, v in series.items()])
        out += firing(list(op.on_metrics(b, ts + lag_s)))
    return out


def test_constant_series_never_alert_across_the_first_tops_of_the_hour() -> None:
    op = AnomalyOperator()
    n = 2 * 3600 + 600  # 00:50 .. 03:00, at 1 s
    constants = {"cpu.count": np.full(n, 2.0), "mem.total_bytes": np.full(n, 8.3e9), "swap.total_bytes": np.zeros(n), "disk.total_bytes": np.full(n, 1e12)}
    assert run(op, "idle", constants, T_0050) == []


def test_backtest_of_a_constant_series_starting_at_odd_minutes_flags_nothing() -> None:
    for start in (T_0050, T_0050 - 50 * 60 + 13 * 60 + 17, T_0050 + 5 * 3600 - 50 * 60 + 41 * 60):
        ts = start + np.arange(3 * 3600)
        for name in ("default", "seasonal", "sequence", "extremes"):
            assert make_detector(name).score_many(np.full(len(ts), 5.0), ts).max() == 0.0


def test_calendar_contexts_count_only_after_two_full_days() -> None:
    rng = np.random.default_rng(1)
    ts = T_0050 + np.arange(0, 2 * 86_400, 60.0)  # 1-minute samples, two days minus nothing
    v = 50 + rng.normal(0, 1, len(ts))
    v[(ts - T_0050) % 86_400 < 3600] += 30  # the first hour of each day is busy
    s = make_detector("seasonal").score_many(v, ts)
    assert s.max() == 0.0  # a first morning, a first top of the hour: not anomalies


def test_a_broker_outage_replayed_from_the_spool_teaches_nothing_and_pages_nothing() -> None:
    rng = np.random.default_rng(2)
    n = 4600
    lat = 20 + rng.uniform(-1, 1, n)
    op = AnomalyOperator()
    out = []
    for i in range(n):
        ts = T_0050 + i
        arrival = ts + 0.2
        if 4000 <= i < 4060:  # broker down: the producer spools
            continue
        if i == 4060:  # broker back: the spool replays, oldest first, then live data
            for j in range(4000, 4060):
                out += firing(list(op.on_metrics(MetricBatch("c1", "n1", T_0050 + j, [Sample("rpc.latency_ms", float(lat[j]))]), arrival + (j - 4000) * 0.05)))
        out += firing(list(op.on_metrics(MetricBatch("c1", "n1", ts, [Sample("rpc.latency_ms", float(lat[i]))]), arrival)))
    assert out == []
    assert op.stats.extra["late_skipped"] >= 50  # replayed samples older than late_after_s
    # every replayed sample that arrived late was neither scored nor learned
    det = op.detector("c1", "n1", "rpc.latency_ms")
    assert det is not None
    assert det.inner.members[0].n == n - op.stats.extra["late_skipped"]  # type: ignore[attr-defined]


def test_after_a_gap_data_is_scored_against_the_baseline_from_before() -> None:
    rng = np.random.default_rng(3)
    op = AnomalyOperator()
    before = {"rpc.latency_ms": 20 + rng.uniform(-1, 1, 4000), "net.bytes_recv_total": np.cumsum(rng.uniform(900, 1100, 4000))}
    assert run(op, "n1", before, T_0050) == []
    det = op.detector("c1", "n1", "rpc.latency_ms")
    assert det is not None
    high = det.baseline()["high"]
    # ten minutes of silence, then the same healthy data: no alert, and the counter does not report the gap's average
    after = {"rpc.latency_ms": 20 + rng.uniform(-1, 1, 300), "net.bytes_recv_total": before["net.bytes_recv_total"][-1] + 6e5 + np.cumsum(rng.uniform(900, 1100, 300))}
    assert run(op, "n1", after, T_0050 + 4000 + 600) == []
    assert op.stats.extra["gaps"] >= 2
    assert det.baseline()["high"] == high  # the baseline from before the gap still holds
    # and a real step after the gap is caught against it
    step = {"rpc.latency_ms": np.full(5, 60.0)}
    fired = run(op, "n1", step, T_0050 + 4000 + 600 + 300)
    assert [a.metric for a in fired] == ["rpc.latency_ms"]


def test_sub_millisecond_jitter_changes_never_page_but_a_latency_step_does() -> None:
    rng = np.random.default_rng(4)
    op = AnomalyOperator()
    jitter = np.round(1.55 + rng.uniform(-0.01, 0.01, 4300), 3)
    jitter[4000:] = np.round(1.72 + rng.uniform(-0.01, 0.01, 300), 3)  # 1.55 -> 1.72 ms
    assert run(op, "n1", {"peer.jitter_ms": jitter}, T_0050) == []
    lat = 0.8 + rng.uniform(-0.05, 0.05, 4300)
    lat[4000:] = 25.0  # a real latency step
    fired = run(op, "n2", {"peer.latency_ms": lat}, T_0050)
    assert len(fired) == 1 and fired[0].started_at <= T_0050 + 4002


def test_live_operator_and_backtest_run_the_same_detector_at_the_same_threshold() -> None:
    rng = np.random.default_rng(5)
    v = 50 + rng.normal(0, 2, 3000)
    v[2500:2510] = 90.0
    ts = T_0050 + np.arange(3000) * 60.0
    op = AnomalyOperator()
    for x, t in zip(v, ts):
        op.on_metrics(MetricBatch("c1", "n1", float(t), [Sample("app.queue_depth", float(x))]), float(t))
    live = op.detector("c1", "n1", "app.queue_depth")
    offline = make_detector("default")
    offline.score_many(v, ts)
    assert live is not None and live.threshold == offline.threshold == DEFAULT_THRESHOLD
    assert rounded(live.snapshot()) == rounded(offline.snapshot())  # same state, up to float summation order


def test_one_odd_short_step_does_not_turn_every_later_step_into_a_gap() -> None:
    op = AnomalyOperator()
    stamps = [T_0050, T_0050 + 0.01] + [T_0050 + k for k in range(1, 400)]
    for i, ts in enumerate(stamps):
        op.on_metrics(MetricBatch("c1", "n1", ts, [Sample("rpc.latency_ms", 20.0 + i % 3)]), ts + 0.2)
        if i == 50:
            early = op.stats.extra.get("gaps", 0)
    assert early <= 10  # the usual interval recovers within seconds
    assert op.stats.extra.get("gaps", 0) == early  # and then regular steps are not gaps


def test_a_quantised_series_does_not_alert_until_it_leaves_its_levels() -> None:
    rng = np.random.default_rng(6)
    levels = rng.choice([2.0, 3.0, 4.0], size=2 * 3600 + 300, p=[0.2, 0.6, 0.2])  # e.g. runnable tasks, open sockets
    levels[-10:] = 40.0
    fired = run(AnomalyOperator(), "n1", {"app.queue_depth": levels}, T_0050)
    assert [(a.metric, a.started_at) for a in fired] == [("app.queue_depth", T_0050 + len(levels) - 9)]  # its 2nd sample
