"""AnomalyOperator as a pure operator: per-series detectors, per-family config, alerts that fire and resolve."""
from __future__ import annotations

import msgspec
import numpy as np
import pytest

from schemas import Alert, AlertKind, AlertStatus, MetricBatch, Sample, Severity

from processors.anomaly import ERROR_SPIKE_RULE, LIVE_THRESHOLD, AnomalyOperator, MetricFamily

T0 = 1_700_006_400.0


def feed(op: AnomalyOperator, node: str, values: list[float], metric: str = "rpc.latency_ms", t0: float = T0, cluster: str = "c1") -> list[Alert]:
    out: list[Alert] = []
    for i, v in enumerate(values):
        ts = t0 + i * 15.0  # 300 points: 75 minutes, past the one-hour warm-up
        out += [e.message for e in op.on_metrics(MetricBatch(cluster, node, ts, [Sample(metric, float(v))]), ts)]
    return out


def healthy(n: int, seed: int, level: float = 40.0) -> list[float]:
    """Bounded jitter around a level (a healthy node's latency, temperature, load)."""
    return (level + np.random.default_rng(seed).uniform(-3, 3, n)).tolist()


def test_anomaly_on_one_node_fires_one_alert_with_score_baseline_and_window() -> None:
    op = AnomalyOperator()
    values = healthy(400, 1)
    values[300:305] = [400.0] * 5  # the latency of n2 jumps
    assert feed(op, "n1", healthy(400, 2)) == []
    assert feed(op, "n3", healthy(400, 3)) == []
    values[:300] = [40.0 + (i % 7) - 3 for i in range(300)]  # n2 was healthy too
    alerts = feed(op, "n2", values)
    firing = [a for a in alerts if a.status is AlertStatus.FIRING]
    assert len(firing) == 1
    a = firing[0]
    assert (a.kind, a.rule, a.node, a.metric, a.severity) == (AlertKind.ANOMALY, "anomaly", "n2", "rpc.latency_ms", Severity.WARNING)
    assert a.value == 400.0 and a.threshold == LIVE_THRESHOLD and a.started_at == T0 + 4515  # the 2nd anomalous sample
    assert a.details["score"] >= LIVE_THRESHOLD
    assert 30 < a.details["baseline"]["level"] < 50 and a.details["baseline"]["high"] < 60
    assert a.details["window"]["end"] == a.started_at and a.details["window"]["values"][-1] == 400.0
    assert len(a.details["window"]["values"]) == 10


def test_a_fleet_node_of_pure_noise_stays_nearly_silent_live() -> None:
    """20 Gaussian series at 1 Hz for 80 minutes: at most a couple of alerts, yet a real 3 s excursion is caught."""
    import random

    from schemas import MetricBatch, Sample

    op = AnomalyOperator()
    rng = random.Random(3)
    fired: list[tuple[int, str | None]] = []
    for t in range(4800):
        vals = [50 + rng.gauss(0, 5) for _ in range(20)]
        if 4500 <= t < 4503:
            vals[7] = 120.0
        batch = MetricBatch("c1", "n1", T0 + t, [Sample(f"m.{i}", v) for i, v in enumerate(vals)])
        fired += [(t, e.message.metric) for e in op.on_metrics(batch, T0 + t) if e.message.status is AlertStatus.FIRING]
    assert (4501, "m.7") in fired
    assert len(fired) <= 3


def test_anomaly_alert_resolves_with_the_same_id_after_the_episode() -> None:
    op = AnomalyOperator()
    values = healthy(500, 4)
    values[300:305] = [400.0] * 5
    alerts = feed(op, "n2", values)
    assert [a.status for a in alerts] == [AlertStatus.FIRING, AlertStatus.RESOLVED]
    assert alerts[0].id == alerts[1].id
    assert alerts[1].ended_at is not None and alerts[1].ended_at > alerts[0].started_at


def test_alert_subject_and_msg_id_are_deterministic() -> None:
    def run() -> list[tuple[str, str | None]]:
        op = AnomalyOperator()
        values = healthy(400, 5)
        values[300:302] = [500.0, 500.0]
        out = []
        for i, v in enumerate(values):
            ts = T0 + i * 15.0
            out += [(e.subject, e.msg_id) for e in op.on_metrics(MetricBatch("c1", "n2", ts, [Sample("gpu.temp_c", v)]), ts)]
        return out

    first = run()
    assert first and first == run()
    assert first[0][0] == "sw.alerts.warning.c1.n2.anomaly"


def test_error_rate_spike_above_its_baseline_uses_the_default_error_rule() -> None:
    op = AnomalyOperator()
    errors = np.random.default_rng(6).poisson(0.5, 300).astype(float).tolist()
    errors[250] = 40.0
    alerts = feed(op, "n1", errors, metric="api.errors")
    assert [a.rule for a in alerts if a.status is AlertStatus.FIRING] == [ERROR_SPIKE_RULE]
    assert alerts[0].started_at == T0 + 250 * 15 and alerts[0].kind is AlertKind.ANOMALY


def test_counter_reset_is_skipped_not_alerted() -> None:
    op = AnomalyOperator()
    total, values = 0.0, []
    for i in range(600):
        total = 0.0 if i == 400 else total + 5.0  # the process restarted at i=400
        values.append(total)
    assert feed(op, "n1", values, metric="net.bytes_total") == []
    assert op.stats.extra["counter_resets"] == 1
    det = op.detector("c1", "n1", "net.bytes_total")
    assert det is not None and det.baseline()["high"] == pytest.approx(5 / 15)  # learned the rate, 5 per 15 s


def test_families_choose_detector_threshold_and_can_disable_by_glob() -> None:
    fams = [
        MetricFamily("gpu.*.temperature_c", "robust_z", {"direction": "up"}, rule="gpu_temp_anomaly", severity=Severity.CRITICAL),
        MetricFamily("debug.*", enabled=False),
        MetricFamily("*", threshold=0.9),
    ]
    op = AnomalyOperator(fams)
    assert op.family_for("gpu.0.temperature_c") is fams[0]
    assert op.family_for("debug.noise") is None
    assert op.family_for("cpu.percent") is fams[2]
    temps = healthy(200, 7, level=60.0)
    temps[150] = 95.0
    (a,) = [a for a in feed(op, "n1", temps, metric="gpu.0.temperature_c") if a.status is AlertStatus.FIRING]
    assert (a.rule, a.severity) == ("gpu_temp_anomaly", Severity.CRITICAL)
    noisy = healthy(300, 8)
    noisy[250] = 1e4
    assert feed(op, "n1", noisy, metric="debug.noise") == []
    assert op.detector("c1", "n1", "debug.noise") is None
    assert op.detector("c1", "n1", "cpu.percent") is None
    feed(op, "n1", [1.0], metric="cpu.percent")
    assert op.detector("c1", "n1", "cpu.percent").threshold == 0.9  # type: ignore[union-attr]


def test_bad_family_configuration_is_refused_with_its_name() -> None:
    with pytest.raises(ValueError, match="'isolation_forest' is unknown"):
        MetricFamily("cpu.*", "isolation_forest")
    with pytest.raises(ValueError, match="rule 'cpu.anomaly'"):
        MetricFamily("cpu.*", rule="cpu.anomaly")
    with pytest.raises(ValueError, match="must not be empty"):
        MetricFamily("")


def test_series_beyond_the_cap_are_refused_and_counted() -> None:
    op = AnomalyOperator(max_series=3)
    samples = [Sample(f"m{i}", 1.0) for i in range(5)]
    op.on_metrics(MetricBatch("c1", "n1", T0, samples), T0)
    op.on_metrics(MetricBatch("c1", "n1", T0 + 1, samples), T0 + 1)
    assert len(op) == 3
    assert op.stats.extra["series_refused"] == 4


def test_late_samples_are_counted_not_scored() -> None:
    op = AnomalyOperator(late_after_s=60.0)
    feed(op, "n1", [1.0, 2.0, 3.0])
    op.on_metrics(MetricBatch("c1", "n1", T0 + 5, [Sample("rpc.latency_ms", 1e6)]), T0 + 21)  # out of order, 16 s late
    assert op.stats.late == 1
    assert op.detector("c1", "n1", "rpc.latency_ms").inner.members[0].n == 3  # type: ignore[union-attr]


def test_silent_series_is_forgotten_and_its_alert_resolved() -> None:
    op = AnomalyOperator(series_ttl_s=60.0)
    values = healthy(302, 9)
    values[300:302] = [500.0, 500.0]
    (fired,) = feed(op, "n2", values)
    last = T0 + 301 * 15
    assert list(op.on_tick(last + 30)) == []
    (resolved,) = [e.message for e in op.on_tick(last + 61)]
    assert resolved.status is AlertStatus.RESOLVED and resolved.id == fired.id
    assert len(op) == 0 and op.stats.extra["series_expired"] == 1


def test_snapshot_restore_carries_detectors_and_open_alerts() -> None:
    values = healthy(420, 10)
    values[300:305] = [400.0] * 5
    a = AnomalyOperator()
    fired = feed(a, "n2", values[:302])
    state = msgspec.msgpack.decode(msgspec.msgpack.encode(a.snapshot()))
    b = AnomalyOperator()
    b.restore(state)
    rest_a = feed(a, "n2", values[302:], t0=T0 + 302 * 15)
    rest_b = feed(b, "n2", values[302:], t0=T0 + 302 * 15)
    assert [x.status for x in fired] == [AlertStatus.FIRING]
    assert [(x.id, x.status) for x in rest_a] == [(x.id, x.status) for x in rest_b] == [(fired[0].id, AlertStatus.RESOLVED)]


def test_operator_is_nearly_silent_on_healthy_jitter_and_silent_on_constants() -> None:
    op = AnomalyOperator()
    rng = np.random.default_rng(11)
    fired = 0
    for node in ("n1", "n2", "n3", "n4"):
        for metric, level, jitter in (("cpu.percent", 30, 3), ("mem.percent", 60, 0.5)):
            v = level + rng.uniform(-jitter, jitter, 2000)
            fired += len(feed(op, node, v.tolist(), metric=metric))
        assert feed(op, node, [42.0] * 2000, metric="peer.count") == []
    # a new all-time high of the level of pure jitter is rare: under one alert episode per 2000 points
    assert fired / 2 <= 16_000 / 2000
    assert len(op) == 12
