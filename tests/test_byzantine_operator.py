"""ByzantineOperator: training.update Events in, TrustScores and byzantine Alerts out."""
from __future__ import annotations

import msgspec
import pytest

from schemas import Alert, AlertKind, AlertStatus, Event, TrustScore, subjects

from processors.byzantine import ByzantineOperator, DetectorConfig, PayloadError, parse_update
from processors.byzantine.fleet import SyntheticFleet
from processors.operator import Emit

T0 = 1_763_800_000.0


def events_of(fleet: SyntheticFleet, r: int, cluster: str = "swarm") -> list[Event]:
    return [
        Event(
            cluster=cluster,
            node=rep.node,
            ts=T0 + 30 * r + i * 0.01,
            kind="training.update",
            payload={"round": r, "update_norm": rep.update_norm, "loss": rep.loss, "sketch": rep.sketch.tolist()},
        )
        for i, rep in enumerate(fleet.round(r))
    ]


def feed(op: ByzantineOperator, fleet: SyntheticFleet, rounds: range, cluster: str = "swarm") -> list[Emit]:
    out: list[Emit] = []
    for r in rounds:
        for ev in events_of(fleet, r, cluster):
            out.extend(op.on_event(ev, ev.ts))
    return out


def alerts(emits: list[Emit]) -> list[Alert]:
    return [e.message for e in emits if isinstance(e.message, Alert)]


def test_operator_subscribes_to_training_updates_only() -> None:
    op = ByzantineOperator()
    assert op.wants_metrics is False
    assert op.event_kinds == ("training.update",)
    assert op.wants_event("training.update") and not op.wants_event("error")


def test_a_round_is_judged_when_the_next_round_starts_and_every_reporter_gets_a_trust_score() -> None:
    fleet = SyntheticFleet(nodes=12, attackers=0, seed=1, dropout=0.0)
    op = ByzantineOperator()
    first = feed(op, fleet, range(1))
    assert first == []  # round 0 still open
    out = [e for e in feed(op, fleet, range(1, 2)) if isinstance(e.message, TrustScore)]
    assert sorted(e.message.node for e in out) == sorted(fleet.names)
    e = out[0]
    assert e.subject == subjects.trust("swarm", e.message.node)
    assert e.msg_id == f"trust:swarm:{e.message.node}:0"
    assert e.message.round == 0 and 0.0 <= e.message.trust <= 1.0


def test_sign_flipper_gets_a_byzantine_alert_with_evidence_and_honest_nodes_none() -> None:
    fleet = SyntheticFleet(nodes=30, attackers=2, attack="sign_flip", start=8, seed=3)
    op = ByzantineOperator()
    emits = feed(op, fleet, range(25))
    fired = [a for a in alerts(emits) if a.status is AlertStatus.FIRING]
    assert {a.node for a in fired} == fleet.attackers
    a = fired[0]
    assert a.kind is AlertKind.BYZANTINE and a.rule == "byzantine"
    assert a.details["statistic"] == "alignment"
    assert a.details["detected_round"] >= 8
    assert a.details["distance_sd"] < 0 and a.details["rounds"] >= 2
    assert "since round" in a.summary
    subj = [e.subject for e in emits if isinstance(e.message, Alert)]
    assert all(s.startswith("sw.alerts.warning.swarm.") and s.endswith(".byzantine") for s in subj)
    trust = {n: op.trust_of("swarm", n) for n in fleet.names}
    assert all(trust[n] is not None and trust[n] <= 0.4 for n in fleet.attackers)
    assert all(trust[n] is not None and trust[n] > 0.7 for n in fleet.honest())


def test_alert_resolves_once_the_node_has_behaved_for_resolve_after_rounds() -> None:
    fleet = SyntheticFleet(nodes=20, attackers=1, attack="sign_flip", start=5, seed=4, dropout=0.0)
    op = ByzantineOperator(DetectorConfig(resolve_after_rounds=5))
    emits = feed(op, fleet, range(12))
    fleet.attackers.clear()
    emits += feed(op, fleet, range(12, 60))
    statuses = [(a.status, a.details.get("round")) for a in alerts(emits)]
    assert [s for s, _ in statuses] == [AlertStatus.FIRING, AlertStatus.RESOLVED]
    fired, resolved = alerts(emits)
    assert fired.id == resolved.id and resolved.ended_at is not None


def test_rounds_close_on_tick_after_the_timeout_and_on_flush() -> None:
    fleet = SyntheticFleet(nodes=10, attackers=0, seed=5, dropout=0.0)
    op = ByzantineOperator(round_timeout_s=5.0)
    for ev in events_of(fleet, 0):
        assert list(op.on_event(ev, now=100.0)) == []
    assert list(op.on_tick(now=103.0)) == []
    assert len([e for e in op.on_tick(now=106.0) if isinstance(e.message, TrustScore)]) == 10
    for ev in events_of(fleet, 1):
        op.on_event(ev, now=200.0)
    assert len(list(op.flush(now=201.0))) == 10


def test_reports_for_already_judged_rounds_are_counted_late() -> None:
    fleet = SyntheticFleet(nodes=10, attackers=0, seed=6, dropout=0.0)
    op = ByzantineOperator()
    feed(op, fleet, range(3))
    stale = events_of(fleet, 0)[0]
    assert list(op.on_event(stale, stale.ts)) == []
    assert op.stats.late == 1


@pytest.mark.parametrize(
    "payload, message",
    [
        ({"update_norm": 1.0, "sketch": [1.0]}, "lacks 'round'"),
        ({"round": -1, "update_norm": 1.0, "sketch": [1.0]}, "round must be"),
        ({"round": 1, "update_norm": "big", "sketch": [1.0]}, "update_norm must be"),
        ({"round": 1, "update_norm": 1.0, "sketch": []}, "sketch must be"),
        ({"round": 1, "update_norm": 1.0, "sketch": ["a"]}, "sketch must be"),
        ({"round": 1, "update_norm": 1.0, "sketch": [1.0], "loss": "low"}, "loss must be"),
    ],
)
def test_malformed_payloads_are_refused_with_a_message_naming_the_field(payload: dict, message: str) -> None:
    with pytest.raises(PayloadError, match=message):
        parse_update(payload)
    op = ByzantineOperator()
    ev = Event(cluster="c", node="n", ts=T0, kind="training.update", payload=payload)
    assert list(op.on_event(ev, T0)) == []
    assert op.stats.extra["invalid"] == 1


def test_clusters_are_judged_separately_and_bounded() -> None:
    op = ByzantineOperator(max_clusters=1)
    feed(op, SyntheticFleet(nodes=8, seed=7), range(2), cluster="a")
    feed(op, SyntheticFleet(nodes=8, seed=8), range(2), cluster="b")
    assert list(op.detectors) == ["a"]
    assert op.stats.extra["refused_clusters"] == 16 or op.stats.extra["refused_clusters"] > 0


def test_snapshot_restores_alert_state_so_a_restart_does_not_refire() -> None:
    fleet = SyntheticFleet(nodes=20, attackers=1, attack="sign_flip", start=4, seed=9, dropout=0.0)
    op = ByzantineOperator()
    emits = feed(op, fleet, range(12))
    assert len([a for a in alerts(emits) if a.status is AlertStatus.FIRING]) == 1
    state = msgspec.json.decode(msgspec.json.encode(op.snapshot()))
    op2 = ByzantineOperator()
    op2.restore(state)
    later = feed(op2, fleet, range(12, 20))
    assert [a for a in alerts(later) if a.status is AlertStatus.FIRING] == []
    assert op2.trust_of("swarm", next(iter(fleet.attackers))) <= 0.4


def test_a_restarted_training_run_is_judged_again_from_round_zero() -> None:
    op = ByzantineOperator(DetectorConfig(evict_after_rounds=5), round_timeout_s=5.0)
    feed(op, SyntheticFleet(nodes=10, seed=10, dropout=0.0), range(20))
    again = [e for e in feed(op, SyntheticFleet(nodes=10, seed=11, dropout=0.0), range(3)) if isinstance(e.message, TrustScore)]
    assert sorted({e.message.round for e in again}) == [0, 1]
    assert op.stats.extra["restarts"] == 1
    assert [e.message.round for e in op.on_tick(now=T0 + 10_000) if isinstance(e.message, TrustScore)][:1] == [2]
