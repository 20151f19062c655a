"""FleetState: what the API shows, from the messages it was fed; bounded and idempotent."""
from __future__ import annotations

import time

import pytest

from schemas import Alert, AlertKind, AlertStatus, HealthScore, MetricBatch, Sample, SeriesStats, Severity, TrustScore, WindowAggregate
from sinks.api.exposition import render
from sinks.api.state import FleetState

NOW = time.time()


def agg(node: str, end: float, cpu: float, window_s: float = 10.0, cluster: str = "c1", extra: list[SeriesStats] | None = None) -> WindowAggregate:
    s = [SeriesStats("cpu.percent", 10, cpu - 1, cpu + 1, cpu, cpu * 10, cpu, cpu + 0.5, cpu + 0.9, cpu, unit="%")]
    return WindowAggregate(cluster, node, window_s, end - window_s, end, s + (extra or []))


def alert(node: str, rule: str, sev: Severity, status: AlertStatus = AlertStatus.FIRING, kind: AlertKind = AlertKind.THRESHOLD, id_: str | None = None) -> Alert:
    return Alert(id=id_ or f"{rule}-{node}", status=status, severity=sev, kind=kind, rule=rule, cluster="c1", node=node, started_at=NOW - 5, summary=f"{rule} on {node}")


def test_node_status_follows_its_firing_alerts_worst_first() -> None:
    st = FleetState()
    st.apply_agg(agg("n1", NOW, 50))
    n = st.get_node("c1", "n1")
    assert n is not None and n.status() == "ok"
    st.apply_alert(alert("n1", "cpu_high", Severity.WARNING))
    assert n.status() == "warning"
    st.apply_alert(alert("n1", "disk_full", Severity.CRITICAL))
    assert n.status() == "critical"
    st.apply_alert(alert("n1", "node_unresponsive", Severity.CRITICAL, kind=AlertKind.LIVENESS))
    assert n.status() == "unresponsive"
    st.apply_alert(alert("n1", "node_unresponsive", Severity.CRITICAL, AlertStatus.RESOLVED, AlertKind.LIVENESS))
    st.apply_alert(alert("n1", "disk_full", Severity.CRITICAL, AlertStatus.RESOLVED))
    assert n.status() == "warning"
    assert len(st.active_alerts) == 1


def test_info_alerts_leave_a_node_ok() -> None:
    st = FleetState()
    st.apply_alert(alert("n1", "restart", Severity.INFO))
    n = st.get_node("c1", "n1")
    assert n is not None and n.status() == "ok"


def test_a_duplicate_firing_after_resolution_does_not_reopen_the_alert() -> None:
    st = FleetState()
    st.apply_alert(alert("n1", "cpu_high", Severity.WARNING))
    st.apply_alert(alert("n1", "cpu_high", Severity.WARNING, AlertStatus.RESOLVED))
    assert st.apply_alert(alert("n1", "cpu_high", Severity.WARNING)) is False
    assert st.active_alerts == {}
    assert [a.status for a in st.recent_alerts] == [AlertStatus.FIRING, AlertStatus.RESOLVED]


def test_history_keeps_the_finest_window_and_skips_repeats() -> None:
    st = FleetState(history_points=5)
    st.apply_agg(agg("n1", NOW - 60, 10, window_s=60))
    for i in range(8):
        st.apply_agg(agg("n1", NOW - 70 + 10 * i, float(i)))
    st.apply_agg(agg("n1", NOW, 99, window_s=60))  # coarser: ignored
    st.apply_agg(agg("n1", NOW, 7))  # repeat of the newest: ignored
    n = st.get_node("c1", "n1")
    assert n is not None and n.window_s == 10
    pts = st.history(n, ["cpu.percent"])["cpu.percent"]
    assert [p[1] for p in pts] == [3.0, 4.0, 5.0, 6.0, 7.0]  # bounded to 5, oldest dropped
    assert [p[0] for p in pts] == sorted(p[0] for p in pts)
    assert st.history(n, ["cpu.percent"], since=NOW - 25)["cpu.percent"][0][1] == 5.0


def test_labelled_series_match_their_metric_name() -> None:
    st = FleetState()
    d = [SeriesStats("disk.percent", 1, 40, 40, 40, 40, 40, 40, 40, 40, labels={"mount": m}) for m in ("/", "/data")]
    d[1] = SeriesStats("disk.percent", 1, 91, 91, 91, 91, 91, 91, 91, 91, labels={"mount": "/data"})
    st.apply_agg(agg("n1", NOW, 5, extra=d))
    n = st.get_node("c1", "n1")
    assert n is not None
    assert set(st.history(n, ["disk.percent"])) == {"disk.percent{mount=/}", "disk.percent{mount=/data}"}
    assert st.node_summary(n)["disk"] == 91.0  # the fleet table shows the fullest mount


def test_limits_refuse_and_count() -> None:
    st = FleetState(max_nodes=2, max_series_per_node=2, max_history_series=3, max_active_alerts=1)
    for i in range(3):
        st.apply_agg(agg(f"n{i}", NOW, 1.0, extra=[SeriesStats("a", 1, 0, 0, 0, 0, 0, 0, 0, 0), SeriesStats("b", 1, 0, 0, 0, 0, 0, 0, 0, 0)]))
    assert len(st.nodes) == 2 and st.counters.refused_nodes == 1
    assert st.counters.refused_series == 2  # third series on each of the two nodes
    assert st.counters.refused_history_series == 1
    st.apply_alert(alert("n0", "r1", Severity.WARNING))
    st.apply_alert(alert("n0", "r2", Severity.WARNING))
    assert len(st.active_alerts) == 1 and st.counters.refused_alerts == 1


def test_metrics_trust_and_health_feed_the_node_row() -> None:
    st = FleetState()
    st.apply_metrics(MetricBatch("c1", "n1", NOW, [Sample("mem.percent", 42.0, "%"), Sample("gpu.utilization_percent", 80.0, labels={"gpu": "0"})]))
    st.apply_trust(TrustScore("c1", "n1", NOW, 3, 0.7))
    st.apply_trust(TrustScore("c1", "n1", NOW - 100, 1, 0.1))  # older: ignored
    st.apply_health(HealthScore("c1", NOW, 88.0, nodes={"n1": {"status": "connected", "quality": 93.5}}))
    n = st.get_node("c1", "n1")
    assert n is not None
    row = st.node_summary(n)
    assert row["mem"] == 42.0 and row["gpu"] == 80.0
    assert row["trust"] == 0.7 and row["health"] == 93.5 and row["connection"] == "connected"
    hv = st.health_view("c1")
    assert hv is not None and hv["latest"]["overall_health"] == 88.0 and "nodes" not in hv["latest"]


def test_bad_limits_are_refused_with_the_name() -> None:
    with pytest.raises(ValueError, match="history_points"):
        FleetState(history_points=0)


def test_exposition_escapes_label_values_and_renames_clashing_labels() -> None:
    st = FleetState()
    weird = SeriesStats("custom.m", 1, 1, 1, 1, 1, 1, 1, 1, 1, labels={"node": 'a"b\\c', "0bad-key": "x\ny"})
    st.apply_agg(agg("n1", NOW, 5, extra=[weird]))
    text = render(st, ("mean",))
    line = next(ln for ln in text.splitlines() if 'metric="custom.m"' in ln)
    assert 'exported_node="a\\"b\\\\c"' in line
    assert 'l_0bad_key="x\\ny"' in line
    with pytest.raises(ValueError, match="median"):
        render(st, ("median",))
