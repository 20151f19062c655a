"""LivenessOperator as a pure operator: silence raises node_unresponsive from the timer."""
from __future__ import annotations

import pytest

from schemas import Alert, AlertKind, AlertStatus, Event, MetricBatch, Sample, Severity

from processors.liveness import RULE, LivenessOperator

T0 = 1_700_000_000.0


def batch(node: str, ts: float, cluster: str = "c1") -> MetricBatch:
    return MetricBatch(cluster, node, ts, [Sample("cpu.percent", 1.0)])


def event(node: str, ts: float, kind: str, cluster: str = "c1") -> Event:
    return Event(cluster=cluster, node=node, ts=ts, kind=kind)


def alerts(emits: object) -> list[Alert]:
    return [e.message for e in emits]  # type: ignore[attr-defined]


def test_silence_over_deadline_fires_critical_liveness_alert_from_tick() -> None:
    op = LivenessOperator(deadline_s=3.0)
    assert list(op.on_metrics(batch("n1", T0), T0)) == []
    assert list(op.on_tick(T0 + 2.9)) == []
    assert list(op.on_tick(T0 + 3.0)) == []  # exactly at the deadline is not over it
    fired = alerts(op.on_tick(T0 + 3.2))
    assert len(fired) == 1
    a = fired[0]
    assert (a.rule, a.status, a.severity, a.kind) == (RULE, AlertStatus.FIRING, Severity.CRITICAL, AlertKind.LIVENESS)
    assert (a.cluster, a.node) == ("c1", "n1")
    assert a.value == pytest.approx(3.2)
    assert a.threshold == 3.0
    # Firing once per outage, not once per tick.
    assert list(op.on_tick(T0 + 10)) == []
    assert op.unresponsive() == [("c1", "n1")]


def test_alert_subject_and_id_are_deterministic() -> None:
    def run() -> list[tuple[str, str | None]]:
        op = LivenessOperator(deadline_s=3.0)
        op.on_metrics(batch("n1", T0), T0)
        return [(e.subject, e.msg_id) for e in op.on_tick(T0 + 5)]

    first = run()
    assert first == run()
    assert first[0][0] == "sw.alerts.critical.c1.n1.node_unresponsive"


def test_node_returning_resolves_with_same_alert_id() -> None:
    op = LivenessOperator(deadline_s=3.0)
    op.on_metrics(batch("n1", T0), T0)
    (fired,) = alerts(op.on_tick(T0 + 4))
    (resolved,) = alerts(op.on_metrics(batch("n1", T0 + 6), T0 + 6))
    assert resolved.status is AlertStatus.RESOLVED
    assert resolved.id == fired.id
    assert resolved.ended_at == T0 + 6
    assert op.unresponsive() == []
    assert list(op.on_tick(T0 + 7)) == []


def test_any_event_counts_as_a_sign_of_life() -> None:
    op = LivenessOperator(deadline_s=3.0)
    op.on_metrics(batch("n1", T0), T0)
    op.on_event(event("n1", T0 + 2, "heartbeat"), T0 + 2)
    op.on_event(event("n1", T0 + 4, "training.update"), T0 + 4)
    assert list(op.on_tick(T0 + 6.5)) == []
    assert len(list(op.on_tick(T0 + 7.5))) == 1


def test_clean_leave_is_not_an_outage() -> None:
    op = LivenessOperator(deadline_s=3.0)
    op.on_metrics(batch("n1", T0), T0)
    op.on_metrics(batch("n2", T0), T0)
    assert list(op.on_event(event("n1", T0 + 1, "peer.leave"), T0 + 1)) == []
    fired = alerts(op.on_tick(T0 + 100))
    assert [a.node for a in fired] == ["n2"]
    assert op.stats.extra["departures"] == 1


def test_leave_resolves_a_firing_alert_and_rejoin_tracks_again() -> None:
    op = LivenessOperator(deadline_s=3.0)
    op.on_metrics(batch("n1", T0), T0)
    (fired,) = alerts(op.on_tick(T0 + 5))
    (resolved,) = alerts(op.on_event(event("n1", T0 + 6, "peer.leave"), T0 + 6))
    assert resolved.status is AlertStatus.RESOLVED and resolved.id == fired.id
    op.on_event(event("n1", T0 + 20, "peer.join"), T0 + 20)
    assert list(op.on_tick(T0 + 22)) == []
    (again,) = alerts(op.on_tick(T0 + 24))
    assert again.status is AlertStatus.FIRING and again.id != fired.id


def test_nodes_are_tracked_per_cluster() -> None:
    op = LivenessOperator(deadline_s=3.0)
    op.on_metrics(batch("n1", T0, "a"), T0)
    op.on_metrics(batch("n1", T0 + 5, "b"), T0 + 5)
    fired = alerts(op.on_tick(T0 + 6))
    assert [(a.cluster, a.node) for a in fired] == [("a", "n1")]


def test_node_cap_refuses_and_counts_extra_nodes() -> None:
    op = LivenessOperator(deadline_s=3.0, max_nodes=2)
    for n in ("n1", "n2", "n3", "n4"):
        op.on_metrics(batch(n, T0), T0)
    assert len(op) == 2
    assert op.stats.extra["refused_nodes"] == 2
    assert len(list(op.on_tick(T0 + 10))) == 2


def test_long_silent_nodes_are_forgotten() -> None:
    op = LivenessOperator(deadline_s=3.0, forget_after_s=50.0)
    op.on_metrics(batch("n1", T0), T0)
    op.on_tick(T0 + 5)
    op.on_tick(T0 + 60)
    assert len(op) == 0
    assert op.stats.extra["forgotten_nodes"] == 1


def test_restore_gives_a_fresh_deadline_but_keeps_firing_alerts() -> None:
    op = LivenessOperator(deadline_s=3.0)
    op.on_metrics(batch("n1", T0), T0)
    op.on_metrics(batch("n2", T0 + 4.5), T0 + 4.5)
    (fired,) = alerts(op.on_tick(T0 + 4))
    state = op.snapshot()

    op2 = LivenessOperator(deadline_s=3.0)
    op2.restore(state)
    # The processor was down for a minute: n2 is not blamed for that at once.
    assert list(op2.on_tick(T0 + 65)) == []
    assert op2.unresponsive() == [("c1", "n1")]
    (resolved,) = alerts(op2.on_metrics(batch("n1", T0 + 66), T0 + 66))
    assert resolved.id == fired.id and resolved.status is AlertStatus.RESOLVED
    assert [a.node for a in alerts(op2.on_tick(T0 + 69))] == ["n2"]


@pytest.mark.parametrize("kwargs", [{"deadline_s": 0}, {"deadline_s": -1}, {"max_nodes": 0}, {"tick_interval_s": 0}])
def test_bad_configuration_is_refused_with_the_value(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError, match=repr(next(iter(kwargs.values())))):
        LivenessOperator(**kwargs)  # type: ignore[arg-type]
