"""Cardinality caps per node and per cluster: a flood of names from one node is refused, logged,
counted and alerted, and never crowds out the other nodes' series."""
from __future__ import annotations

import logging
import time

import pytest

from processors import AnomalyOperator, TumblingWindows
from processors.cardinality import CARDINALITY_RULE, CardinalityLimiter
from schemas import Alert, AlertStatus, MetricBatch, Sample, SeriesStats, WindowAggregate
from sinks.api.state import FleetState

T0 = time.time() - 3600


def test_a_node_at_its_cap_gets_new_series_refused_while_its_series_are_active() -> None:
    lim = CardinalityLimiter("t", max_per_node=3, max_per_cluster=100, idle_s=60)
    assert all(lim.seen("c", "a", k, 0.0) for k in "xyz")
    assert not lim.seen("c", "a", "w", 10.0) and lim.refused == 1
    assert lim.seen("c", "a", "x", 10.0)  # known series stay
    assert lim.seen("c", "b", "w", 10.0)  # another node has its own budget


def test_the_least_recently_seen_idle_series_gives_way() -> None:
    lim = CardinalityLimiter("t", max_per_node=3, max_per_cluster=100, idle_s=60)
    for k in "xyz":
        lim.seen("c", "a", k, 0.0)
    lim.seen("c", "a", "x", 50.0)  # x is fresh; y is now the least recently seen
    assert lim.seen("c", "a", "w", 70.0)
    assert lim.pop_evicted() == [("c", "a", "y")] and lim.evictions == 1
    assert lim.count("c", "a") == 3


def test_the_cluster_cap_evicts_the_clusters_least_recently_seen_idle_series() -> None:
    lim = CardinalityLimiter("t", max_per_node=10, max_per_cluster=4, idle_s=60)
    for k in "pq":
        lim.seen("c", "old", k, 0.0)
    for k in "rs":
        lim.seen("c", "busy", k, 100.0)
    assert lim.seen("c", "new", "t", 100.0)  # 'old' is idle: its p gives way
    assert lim.pop_evicted() == [("c", "old", "p")]
    assert lim.seen("c", "new", "u", 100.0)
    assert not lim.seen("c", "new", "v", 100.0)  # the rest are active: refused
    assert lim.cluster_count("c") == 4 and lim.seen("d", "n", "v", 100.0)  # other clusters have their own cap


def _flood(node: str, ts: float, start: int, n: int) -> MetricBatch:
    return MetricBatch("c1", node, ts, [Sample(f"junk.m{start + i:06d}", 1.0) for i in range(n)])


def _normal(node: str, ts: float) -> MetricBatch:
    return MetricBatch("c1", node, ts, [Sample("cpu.percent", 10.0), Sample("mem.percent", 20.0)])


def test_windows_refuse_a_flood_from_one_node_log_it_once_alert_and_keep_aggregating_the_others(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="processors.cardinality")
    w = TumblingWindows(windows_s=(10.0,), max_series_per_node=100, max_series_per_cluster=1_000)
    out = []
    for k in range(30):
        now = T0 + k
        out += w.on_metrics(_normal("good", now), now)
        out += w.on_metrics(_flood("flooder", now, k * 1_000, 1_000), now)
        out += w.on_tick(now)
    assert w.stats.extra["refused_series"] == 30 * 1_000 - 100
    assert w.limiter.count("c1", "flooder") == 100 and w.limiter.count("c1", "good") == 2
    lines = [r for r in caplog.records if "cardinality limit of windows" in r.getMessage()]
    assert len(lines) == 1 and "c1/flooder" in lines[0].getMessage()  # rate-limited: one line a minute
    alerts = [e.message for e in out if isinstance(e.message, Alert) and e.message.rule == CARDINALITY_RULE]
    assert [(a.node, a.status) for a in alerts] == [("flooder", AlertStatus.FIRING)]
    aggs = [e.message for e in out if isinstance(e.message, WindowAggregate) and e.message.node == "good"]
    assert aggs and {s.metric for s in aggs[-1].series} == {"cpu.percent", "mem.percent"}
    # quiet for quiet_s: the alert resolves
    later = [e.message for e in w.on_tick(T0 + 30 + w.limiter.quiet_s + 1) if isinstance(e.message, Alert)]
    assert [(a.node, a.status, a.rule) for a in later] == [("flooder", AlertStatus.RESOLVED, CARDINALITY_RULE)]


def test_windows_restore_keeps_the_firing_cardinality_alert() -> None:
    w = TumblingWindows(windows_s=(10.0,), max_series_per_node=10)
    w.on_metrics(_flood("flooder", T0, 0, 50), T0)
    w.on_tick(T0)
    w2 = TumblingWindows(windows_s=(10.0,), max_series_per_node=10)
    w2.restore(w.snapshot())
    resolved = [e.message for e in w2.on_tick(T0 + 10_000) if isinstance(e.message, Alert)]
    assert [a.status for a in resolved] == [AlertStatus.RESOLVED]


def test_anomaly_detection_still_follows_a_new_node_after_another_flooded_names() -> None:
    op = AnomalyOperator(max_series=1_000, max_series_per_node=50)
    for k in range(5):
        op.on_metrics(_flood("flooder", T0 + k, k * 1_000, 1_000), T0 + k)
    assert op.stats.extra["series_refused"] == 5_000 - 50 and len(op) == 50
    op.on_metrics(_normal("late-joiner", T0 + 10), T0 + 10)
    assert op.detector("c1", "late-joiner", "cpu.percent") is not None
    op2 = AnomalyOperator(max_series=1_000, max_series_per_node=50)
    op2.restore(op.snapshot())
    assert len(op2) == 52 and op2.limiter.count("c1", "flooder") == 50


def test_the_api_keeps_history_for_every_node_when_one_floods_names() -> None:
    st = FleetState(max_series_per_node=20, max_history_series=100)
    now = time.time()
    for k in range(10):
        flood = [SeriesStats(f"junk.m{k * 50 + i}", 1, 1, 1, 1, 1, 1, 1, 1, 1) for i in range(50)]
        st.apply_agg(WindowAggregate("c1", "flooder", 10.0, now - 100 + 10 * k, now - 90 + 10 * k, flood))
    st.apply_agg(WindowAggregate("c1", "good", 10.0, now - 10, now, [SeriesStats("cpu.percent", 1, 5, 5, 5, 5, 5, 5, 5, 5)]))
    assert len(st.nodes[("c1", "flooder")].history) <= 20
    assert ("cpu.percent", ()) in st.nodes[("c1", "good")].history
    assert st.counters.refused_history_series > 0


def test_the_api_latest_values_of_a_node_that_flooded_make_room_once_the_flood_is_idle() -> None:
    from sinks.api.state import LATEST_IDLE_S

    st = FleetState(max_series_per_node=10)
    now = time.time() - 2 * LATEST_IDLE_S
    st.apply_metrics(_flood("n1", now, 0, 50))
    assert len(st.nodes[("c1", "n1")].latest) == 10 and st.counters.refused_series == 40
    st.apply_metrics(_normal("n1", now + 1))  # the flood is still fresh: refused
    assert ("cpu.percent", ()) not in st.nodes[("c1", "n1")].latest
    st.apply_metrics(_normal("n1", now + LATEST_IDLE_S + 1))  # idle now: it gives way
    latest = st.nodes[("c1", "n1")].latest
    assert latest[("cpu.percent", ())] == 10.0 and latest[("mem.percent", ())] == 20.0
    assert st.counters.evicted_latest_series == 10


def test_threshold_rules_page_at_most_the_per_node_cap_for_a_flood_of_label_variants() -> None:
    from processors import Rule, ThresholdRules

    rule = Rule.model_validate({"name": "disk_full", "metric": "disk.percent", "threshold": 90, "severity": "critical"})
    op = ThresholdRules([rule], max_series_per_node=20)
    now = T0
    flood = MetricBatch("c1", "flooder", now, [Sample("disk.percent", 99.0, labels={"mount": f"/junk{i}"}) for i in range(500)])
    out = list(op.on_metrics(flood, now))
    fired = [e.message for e in out if isinstance(e.message, Alert) and e.message.rule == "disk_full"]
    assert len(fired) == 20 and op.stats.extra["series_refused"] == 480
    other = MetricBatch("c1", "good", now, [Sample("disk.percent", 97.0, labels={"mount": "/"})])
    assert [e.message.node for e in op.on_metrics(other, now)] == ["good"]  # another node still pages
    ticks = [e.message for e in op.on_tick(now) if isinstance(e.message, Alert)]
    assert [(a.rule, a.node, a.status) for a in ticks] == [(CARDINALITY_RULE, "flooder", AlertStatus.FIRING)]
    op2 = ThresholdRules([rule], max_series_per_node=20)
    op2.restore(op.snapshot())
    assert len(op2.firing()) == 21 and op2.limiter.count("c1", "flooder") == 20


def test_one_shot_series_of_a_flood_are_forgotten_after_five_idle_minutes_not_an_hour() -> None:
    from processors.anomaly.operator import FEW_POINTS_TTL_S

    op = AnomalyOperator(max_series_per_node=50)
    op.on_metrics(_flood("flooder", T0, 0, 50), T0)
    for k in range(5):
        op.on_metrics(_normal("good", T0 + k), T0 + k)
    list(op.on_tick(T0 + FEW_POINTS_TTL_S + 10))
    assert op.limiter.count("c1", "flooder") == 0 and len(op) == 2  # the good node's series stay
    assert op.detector("c1", "good", "cpu.percent") is not None
