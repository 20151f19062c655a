"""The dispatch step shared by the live runtime, replay and the backtests: no nats-server needed."""
from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from processors import AlertTracker, Emit, Operator, Rule, ThresholdRules, operator
from processors.dispatch import Dispatcher, decode_message, run_items
from schemas import Alert, AlertKind, AlertStatus, Event, MetricBatch, Sample, encode, subjects

T0 = time.time() - 3600


def batch(ts: float, mem: float, node: str = "n1") -> MetricBatch:
    return MetricBatch("c1", node, ts, [Sample("mem.percent", mem), Sample("cpu.percent", 3.0)])


def mem_rule() -> Rule:
    return Rule.model_validate({"name": "mem_high", "metric": "mem.percent", "threshold": 90, "for": "2s"})


class Recorder(Operator):
    name = "recorder"
    event_kinds = ("training",)

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[tuple[str, float]] = []
        self.ticks: list[float] = []

    def on_metrics(self, b: MetricBatch, now: float) -> Iterable[Emit]:
        self.seen.append(("metrics", now))
        return [Emit("sw.health.c1", b"{}")]

    def on_event(self, e: Event, now: float) -> Iterable[Emit]:
        self.seen.append((e.kind, now))
        return ()

    def on_tick(self, now: float) -> Iterable[Emit]:
        self.ticks.append(now)
        return ()


class Broken(Operator):
    name = "broken"

    def on_metrics(self, b: MetricBatch, now: float) -> Iterable[Emit]:
        raise RuntimeError("boom")


def test_batches_go_to_metric_operators_and_events_only_to_operators_wanting_their_kind() -> None:
    rec = Recorder()
    d = Dispatcher([rec])
    d.dispatch(batch(T0, 10), 1.0)
    d.dispatch(Event("c1", "n1", T0, "training.update", {}), 2.0)
    d.dispatch(Event("c1", "n1", T0, "peer.joined", {}), 3.0)
    assert rec.seen == [("metrics", 1.0), ("training.update", 2.0)]
    assert d.stats.inputs == 3 and d.counters(rec).inputs == 2


def test_inputs_outputs_and_errors_are_counted_per_operator_by_the_dispatcher() -> None:
    rec, broken = Recorder(), Broken()
    d = Dispatcher([broken, rec])
    for i in range(3):
        emits, failures = d.dispatch(batch(T0 + i, 10), T0 + i)
        assert len(emits) == 1  # the broken operator does not stop the recorder
        assert [f.operator for f in failures] == ["broken"]
    assert (d.counters(rec).inputs, d.counters(rec).outputs, d.counters(rec).errors) == (3, 3, 0)
    assert (d.counters(broken).inputs, d.counters(broken).outputs, d.counters(broken).errors) == (3, 0, 3)
    assert (d.stats.inputs, d.stats.outputs, d.stats.errors) == (3, 3, 3)
    assert rec.stats.inputs == 0  # the operator itself counted nothing


def test_invalid_bytes_and_subjects_that_do_not_match_the_payload_are_counted_not_raised() -> None:
    d = Dispatcher([Recorder()])
    good = encode(batch(T0, 10))
    assert d.step(subjects.metrics("c1", "n1"), good, T0).item is not None
    assert d.step(subjects.metrics("c1", "other"), good, T0).invalid is not None
    assert d.step(subjects.metrics("c1", "n1"), b"{not json", T0).invalid is not None
    assert d.step("sw.agg.10s.c1.n1", good, T0).invalid is not None
    assert (d.stats.inputs, d.stats.invalid) == (1, 3)
    assert isinstance(decode_message(subjects.events("c1", "n1", "peer.joined"), encode(Event("c1", "n1", T0, "peer.joined"))), Event)


def test_tick_calls_an_operator_once_its_interval_has_passed_on_the_callers_clock() -> None:
    rec = Recorder()
    rec.tick_interval_s = 5.0
    d = Dispatcher([rec])
    for now in (100.0, 101.0, 104.9, 105.0, 106.0, 111.0):
        d.tick(now)
    assert rec.ticks == [100.0, 105.0, 111.0]
    assert d.counters(rec).ticks == 3


def test_rules_over_event_time_fire_after_for_and_resolve_as_live() -> None:
    values = [10, 95, 95, 95, 95, 10, 10]
    d = Dispatcher([ThresholdRules([mem_rule()])])
    out = run_items(d, [batch(T0 + i, v) for i, v in enumerate(values)])
    alerts = [e.message for e in out if isinstance(e.message, Alert)]
    assert [(a.status, a.started_at - T0) for a in alerts] == [(AlertStatus.FIRING, 1.0), (AlertStatus.RESOLVED, 1.0)]
    assert out[0].subject == "sw.alerts.warning.c1.n1.mem_high"


def test_function_operator_with_a_tracker_keeps_its_alert_state_across_a_restart() -> None:
    def make() -> Any:
        @operator("hot", state=AlertTracker("hot", AlertKind.CUSTOM, for_s=0))
        def hot(b: MetricBatch, now: float, tracker: AlertTracker) -> Iterable[Emit]:
            for s in b.samples:
                if s.name == "mem.percent":
                    yield from tracker.update(b.cluster, b.node, s.value > 90, b.ts, s.value, metric=s.name)

        return hot

    first = Dispatcher([make()])
    fired, _ = first.dispatch(batch(T0, 95), T0)
    state = first.snapshot()
    second = Dispatcher([make()])  # a new process
    second.restore(state)
    resolved, _ = second.dispatch(batch(T0 + 1, 10), T0 + 1)
    assert [e.message.status for e in fired + resolved] == [AlertStatus.FIRING, AlertStatus.RESOLVED]
    assert fired[0].message.id == resolved[0].message.id


def test_function_operator_with_a_third_parameter_gets_a_dict_that_is_checkpointed() -> None:
    @operator("counter")
    def counter(b: MetricBatch, now: float, state: dict[str, int]) -> None:
        state["n"] = state.get("n", 0) + 1

    @operator("stateless")
    def stateless(b: MetricBatch, now: float) -> None:
        return None

    d = Dispatcher([counter, stateless])
    run_items(d, [batch(T0 + i, 10) for i in range(3)])
    assert d.snapshot() == {"counter": {"n": 3}, "stateless": None}
    counter.restore({"n": 10})
    counter(batch(T0, 10), T0)
    assert counter.state == {"n": 11}


def test_operator_names_must_be_unique() -> None:
    import pytest

    with pytest.raises(ValueError, match="unique"):
        Dispatcher([Recorder(), Recorder()])
