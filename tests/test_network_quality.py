"""NetworkHealthOperator as a pure operator: quality, status, trend, cluster health, success alert."""
from __future__ import annotations

import pytest

from schemas import AlertKind, AlertStatus, Event, HealthScore, MetricBatch, Sample, Severity, codec

from processors.network import (
    CONNECTED,
    DEGRADED,
    DEGRADING,
    DISCONNECTED,
    IMPROVING,
    STABLE,
    SUCCESS_RULE,
    NetworkHealthOperator,
    connection_quality,
    ramp,
    trend_of,
)

T0 = 1_700_000_000.0


def probe_batch(
    node: str,
    ts: float,
    peers: dict[str, tuple[float | None, float, float, int]],
    *,
    cluster: str = "c1",
    bandwidth_mbps: float | None = None,
) -> MetricBatch:
    """peers: name -> (latency_ms or None, jitter_ms, loss_percent, consecutive_failures)."""
    samples: list[Sample] = []
    ok = total = 0.0
    lats = []
    for peer, (lat, jit, loss, fails) in peers.items():
        lab = {"peer": peer, "via": "nats"}
        if lat is not None:
            samples += [Sample("peer.latency_ms", lat, "ms", lab), Sample("peer.jitter_ms", jit, "ms", lab)]
            lats.append(lat)
        samples += [
            Sample("peer.loss_percent", loss, "%", lab),
            Sample("peer.success_rate", 1 - loss / 100, None, lab),
            Sample("peer.consecutive_failures", float(fails), None, lab),
        ]
        ok += 20 * (1 - loss / 100)
        total += 20
    samples.append(Sample("net.peer_count", float(len(peers))))
    samples.append(Sample("net.connection_success_rate", ok / total if total else 1.0))
    if lats:
        samples.append(Sample("net.avg_latency_ms", sum(lats) / len(lats), "ms"))
    if bandwidth_mbps is not None:
        samples.append(Sample("net.bandwidth_mbps", bandwidth_mbps))
    return MetricBatch(cluster, node, ts, samples)


def test_ramp_is_full_at_good_zero_at_bad_and_linear_between() -> None:
    assert ramp(10, 50, 500) == 100
    assert ramp(500, 50, 500) == 0
    assert ramp(275, 50, 500) == pytest.approx(50)


def test_connection_quality_uses_documented_weights() -> None:
    assert connection_quality(10, 1, 0) == pytest.approx(100)
    # latency 275 ms -> 50, jitter 52.5 ms -> 50, loss 12.5 % -> 50
    assert connection_quality(275, 52.5, 12.5) == pytest.approx(50)
    # only latency bad: 0.4 * 0 + 0.2 * 100 + 0.4 * 100
    assert connection_quality(900, 0, 0) == pytest.approx(60)
    # only loss bad
    assert connection_quality(10, 0, 30) == pytest.approx(60)
    # nothing answered
    assert connection_quality(None, None, 100) == 0
    assert connection_quality(10, 0, 100) == 0


def test_trend_compares_newer_half_with_older_half() -> None:
    assert trend_of([90, 90, 90, 60, 60, 60]) == DEGRADING
    assert trend_of([40, 40, 80, 80]) == IMPROVING
    assert trend_of([80, 82, 79, 81]) == STABLE
    assert trend_of([80, 10]) == STABLE  # too few points to call it


def health(emits: object) -> HealthScore:
    (e,) = list(emits)  # type: ignore[call-overload]
    assert e.subject.startswith("sw.health.")
    return e.message


def three_nodes(op: NetworkHealthOperator, t: float, slow: str | None = None, slow_ms: float = 600.0) -> None:
    nodes = ("n1", "n2", "n3")
    for n in nodes:
        peers = {}
        for p in nodes:
            if p == n:
                continue
            lat = slow_ms if p == slow else 2.0
            peers[p] = (lat, 1.0, 0.0, 0)
        op.on_metrics(probe_batch(n, t, peers), t)


def test_healthy_cluster_scores_full_health_with_inputs_beside_the_score() -> None:
    op = NetworkHealthOperator(emit_interval_s=5)
    three_nodes(op, T0)
    hs = health(op.on_tick(T0 + 1))
    assert hs.cluster == "c1"
    assert hs.overall_health == 100.0
    assert hs.peer_count == 3 and hs.expected_peers == 3
    assert hs.connection_success_rate == 1.0
    assert hs.avg_latency == pytest.approx(2.0)
    assert set(hs.components) == {"peers", "success", "latency"}  # no capacity: no bandwidth component
    for n in ("n1", "n2", "n3"):
        assert hs.nodes[n]["status"] == CONNECTED
        assert hs.nodes[n]["quality"] == 100.0
    assert hs.nodes["n1"]["peers"]["n2"]["status"] == CONNECTED
    # The wire form decodes as a HealthScore.
    assert codec.decode(codec.encode(hs), HealthScore) == hs


def test_health_is_emitted_once_per_interval_with_a_deterministic_id() -> None:
    op = NetworkHealthOperator(emit_interval_s=5)
    three_nodes(op, T0)
    first = list(op.on_tick(T0 + 0.2))
    assert len(first) == 1
    assert list(op.on_tick(T0 + 1.0)) == []  # T0 is a multiple of 5: same period
    bucket = int((T0 + 0.2) // 5)
    assert first[0].msg_id == f"health:c1:{bucket}"
    assert first[0].subject == "sw.health.c1"
    later = list(op.on_tick(T0 + 5.2))
    assert len(later) == 1 and later[0].msg_id != first[0].msg_id


def test_slow_peer_has_lower_quality_and_degraded_status() -> None:
    op = NetworkHealthOperator(emit_interval_s=5)
    three_nodes(op, T0, slow="n3")
    hs = health(op.on_tick(T0 + 1))
    assert hs.nodes["n3"]["quality"] == pytest.approx(60.0)
    assert hs.nodes["n3"]["status"] == DEGRADED
    assert hs.nodes["n1"]["peers"]["n3"]["status"] == DEGRADED
    assert hs.nodes["n1"]["status"] == CONNECTED
    # n3's own outbound connections are fine; its inbound quality is what it is judged by.
    assert hs.nodes["n3"]["outbound_quality"] == 100.0
    assert hs.components["latency"] < 100


def test_quality_falling_over_time_shows_a_degrading_trend() -> None:
    op = NetworkHealthOperator(emit_interval_s=1)
    for i in range(5):
        three_nodes(op, T0 + i)
        op.on_tick(T0 + i + 0.5)
    for i in range(5, 10):
        three_nodes(op, T0 + i, slow="n3", slow_ms=800)
        hs_emits = list(op.on_tick(T0 + i + 0.5))
    hs = health(hs_emits)
    assert hs.nodes["n3"]["trend"] == DEGRADING
    assert hs.nodes["n1"]["peers"]["n3"]["trend"] == DEGRADING
    assert hs.nodes["n1"]["trend"] == STABLE


def test_consecutive_failures_mark_the_pair_and_node_disconnected() -> None:
    op = NetworkHealthOperator(emit_interval_s=5)
    three_nodes(op, T0)
    dead = (2.0, 1.0, 15.0, 3)
    op.on_metrics(probe_batch("n1", T0 + 1, {"n2": (2.0, 1.0, 0.0, 0), "n3": dead}), T0 + 1)
    op.on_metrics(probe_batch("n2", T0 + 1, {"n1": (2.0, 1.0, 0.0, 0), "n3": dead}), T0 + 1)
    hs = health(op.on_tick(T0 + 1.5))
    assert hs.nodes["n1"]["peers"]["n3"]["status"] == DISCONNECTED
    assert hs.nodes["n3"]["status"] == DISCONNECTED


def test_silent_node_stops_counting_as_a_live_peer() -> None:
    op = NetworkHealthOperator(emit_interval_s=5, stale_after_s=10)
    three_nodes(op, T0)
    for i in (5, 11):
        for n in ("n1", "n2"):
            op.on_metrics(probe_batch(n, T0 + i, {}), T0 + i)
    hs = health(op.on_tick(T0 + 12))
    assert hs.peer_count == 2 and hs.expected_peers == 3
    assert hs.components["peers"] == pytest.approx(100 * 2 / 3, abs=0.01)
    assert hs.nodes["n3"]["status"] == DISCONNECTED
    assert hs.overall_health < 100


def test_clean_leave_lowers_expected_peers_and_drops_its_connections() -> None:
    op = NetworkHealthOperator(emit_interval_s=5)
    three_nodes(op, T0)
    op.on_event(Event(cluster="c1", node="n3", ts=T0 + 1, kind="peer.leave"), T0 + 1)
    # A probe result towards n3 racing its leave is ignored.
    op.on_metrics(probe_batch("n1", T0 + 1.2, {"n2": (2.0, 1.0, 0.0, 0), "n3": (None, 0, 100.0, 5)}), T0 + 1.2)
    hs = health(op.on_tick(T0 + 2))
    assert "n3" not in hs.nodes
    assert "n3" not in hs.nodes["n1"]["peers"]
    assert (hs.peer_count, hs.expected_peers) == (2, 2)
    assert hs.components["peers"] == 100.0


def test_configured_expected_peers_and_capacity_feed_their_components() -> None:
    op = NetworkHealthOperator(emit_interval_s=5, expected_peers={"c1": 4}, capacity_mbps=100.0)
    for n in ("n1", "n2", "n3"):
        op.on_metrics(probe_batch(n, T0, {}, bandwidth_mbps=85.0), T0)
    hs = health(op.on_tick(T0 + 1))
    assert hs.expected_peers == 4
    assert hs.components["peers"] == pytest.approx(75.0)
    assert hs.bandwidth_usage == pytest.approx(85.0)
    assert hs.components["bandwidth"] == pytest.approx(50.0)  # 0.85 utilisation between 0.7 and 1.0
    # (0.35 * 75 + 0.35 * 100 + 0.10 * 50) / 0.80
    assert hs.overall_health == pytest.approx((0.35 * 75 + 0.35 * 100 + 0.10 * 50) / 0.80, abs=0.05)


def test_connection_success_below_80_percent_raises_network_alert_and_resolves() -> None:
    op = NetworkHealthOperator()
    good = probe_batch("n1", T0, {"n2": (2.0, 1.0, 0.0, 0)})
    assert list(op.on_metrics(good, T0)) == []
    bad = probe_batch("n1", T0 + 1, {"n2": (2.0, 1.0, 0.0, 0), "n3": (None, 0, 60.0, 12)})  # 70 %
    (fired,) = [e.message for e in op.on_metrics(bad, T0 + 1)]
    assert (fired.rule, fired.kind, fired.severity, fired.status) == (
        SUCCESS_RULE,
        AlertKind.NETWORK,
        Severity.WARNING,
        AlertStatus.FIRING,
    )
    assert fired.value == pytest.approx(0.7) and fired.threshold == 0.8
    assert list(op.on_metrics(bad, T0 + 2)) == []
    (resolved,) = [e.message for e in op.on_metrics(good, T0 + 3)]
    assert resolved.status is AlertStatus.RESOLVED and resolved.id == fired.id


def test_node_and_pair_caps_refuse_and_count() -> None:
    op = NetworkHealthOperator(max_nodes=2, max_pairs_per_node=1)
    op.on_metrics(probe_batch("n1", T0, {"a": (1, 0, 0, 0), "b": (1, 0, 0, 0)}), T0)
    op.on_metrics(probe_batch("n2", T0, {}), T0)
    op.on_metrics(probe_batch("n3", T0, {}), T0)
    assert op.stats.extra["refused_nodes"] == 1
    assert op.stats.extra["refused_pairs"] == 1


@pytest.mark.parametrize(
    "kwargs",
    [{"emit_interval_s": 0}, {"capacity_mbps": -5.0}, {"success_threshold": 1.5}, {"expected_peers": 0}],
)
def test_bad_configuration_is_refused_with_the_value(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError, match=repr(next(iter(kwargs.values())))):
        NetworkHealthOperator(**kwargs)  # type: ignore[arg-type]


def test_bandwidth_falls_back_to_the_sidecar_interface_counters() -> None:
    op = NetworkHealthOperator(emit_interval_s=5)
    b = MetricBatch(
        "c1", "n1", T0, [Sample("net.bytes_sent_per_s", 125_000.0), Sample("net.bytes_recv_per_s", 250_000.0)]
    )
    op.on_metrics(b, T0)
    hs = health(op.on_tick(T0 + 1))
    assert hs.bandwidth_usage == pytest.approx(3.0)  # 375 kB/s = 3 Mbit/s
    assert hs.nodes["n1"]["bandwidth_mbps"] == pytest.approx(3.0)


def test_large_cluster_report_lists_only_the_worst_pairs_within_budget() -> None:
    op = NetworkHealthOperator(emit_interval_s=5, report_pairs=32, report_pair_budget=20)
    nodes = [f"n{i}" for i in range(10)]
    for i, n in enumerate(nodes):
        peers = {p: (5.0 + j * 50, 1.0, 0.0, 0) for j, p in enumerate(nodes) if p != n}
        op.on_metrics(probe_batch(n, T0, peers), T0)
    hs = health(op.on_tick(T0 + 1))
    listed = [hs.nodes[n]["peers"] for n in nodes]
    assert all(len(p) == 2 for p in listed)  # 20 pairs over 10 nodes
    assert all(hs.nodes[n]["peers_omitted"] == 7 for n in nodes)
    # The worst (slowest) pairs are the ones listed.
    assert max(q["quality"] for q in hs.nodes["n0"]["peers"].values()) < 100


def test_report_lists_the_worst_nodes_when_over_the_cap() -> None:
    op = NetworkHealthOperator(emit_interval_s=5, report_nodes=2)
    three_nodes(op, T0, slow="n3")
    hs = health(op.on_tick(T0 + 1))
    assert hs.peer_count == 3
    assert set(hs.nodes) == {"n1", "n3"}  # n3 degraded first, then a tie broken by name
