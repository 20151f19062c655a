"""The operator contract: pure stream operators with no NATS inside.

An operator takes one decoded input (a MetricBatch or an Event) plus the
current wall-clock time and returns the messages it wants published. The
runtime feeds it from JetStream, publishes what it returns, then acks. The
same operator runs live, in replay and in ``swarmwatch backtest``.

A custom processor is a subclass that overrides what it needs::

    class HotDisk(Operator):
        name = "hot_disk"
        def on_metrics(self, batch, now):
            for s in batch.samples:
                if s.name == "disk.temperature_c" and s.value > 60:
                    yield Emit(subjects.alerts("warning", batch.cluster, batch.node, "hot_disk"), alert, alert_id)

or a plain function decorated with :func:`operator`.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from schemas import Event, MetricBatch


@dataclass(slots=True)
class Emit:
    """One output: the subject, the message (a model or raw bytes) and its dedup id.

    ``msg_id`` becomes the Nats-Msg-Id header; derive it deterministically from
    the rule, the node and the window or event time so re-emission after a
    restart is dropped by JetStream as a duplicate.
    """

    subject: str
    message: Any
    msg_id: str | None = None


@dataclass(slots=True)
class OperatorStats:
    """Counters every operator keeps; published as swarmwatch's own metrics."""

    inputs: int = 0
    outputs: int = 0
    late: int = 0
    dropped: int = 0
    errors: int = 0
    extra: dict[str, int] = field(default_factory=dict)

    def inc(self, key: str, amount: int = 1) -> None:
        self.extra[key] = self.extra.get(key, 0) + amount


class Operator:
    """Base class: override ``on_metrics``, ``on_event`` and/or ``on_tick``.

    ``event_kinds``: the Event kinds this operator wants (None means all,
    an empty tuple means none). ``wants_metrics``: whether it sees MetricBatches.
    ``tick_interval_s``: how often the runtime calls ``on_tick``.
    State must be bounded; ``snapshot``/``restore`` let the runtime checkpoint it.
    """

    name: str = "operator"
    wants_metrics: bool = True
    event_kinds: tuple[str, ...] | None = ()
    tick_interval_s: float = 1.0

    def __init__(self) -> None:
        self.stats = OperatorStats()

    def on_metrics(self, batch: MetricBatch, now: float) -> Iterable[Emit]:
        return ()

    def on_event(self, event: Event, now: float) -> Iterable[Emit]:
        return ()

    def on_tick(self, now: float) -> Iterable[Emit]:
        return ()

    def flush(self, now: float) -> Iterable[Emit]:
        """Called at shutdown and at the end of a backtest: emit what is pending."""
        return ()

    def snapshot(self) -> Any:
        """State to checkpoint (msgspec/JSON-encodable), or None if stateless."""
        return None

    def restore(self, state: Any) -> None:
        """Load state produced by ``snapshot``."""

    def replay_from(self) -> float | None:
        """Earliest event time (UNIX s) whose inputs must be replayed after a restore.

        Operators that keep bulky state out of ``snapshot`` (open windows) return
        the start of what they would need to rebuild; ``None`` means nothing.
        During that replay the runtime sets ``self.replaying`` and feeds inputs
        up to the checkpoint only to such operators.
        """
        return None

    replaying: bool = False

    def wants_event(self, kind: str) -> bool:
        kinds = self.event_kinds
        if kinds is None:
            return True
        return any(kind == k or kind.startswith(k + ".") for k in kinds)


class FunctionOperator(Operator):
    """Adapts ``fn(batch_or_event, now) -> Iterable[Emit]`` to the Operator contract."""

    def __init__(
        self,
        fn: Callable[[Any, float], Iterable[Emit] | None],
        name: str,
        wants_metrics: bool,
        event_kinds: tuple[str, ...] | None,
    ) -> None:
        super().__init__()
        self._fn = fn
        self.name = name
        self.wants_metrics = wants_metrics
        self.event_kinds = event_kinds

    def on_metrics(self, batch: MetricBatch, now: float) -> Iterable[Emit]:
        return self._fn(batch, now) or ()

    def on_event(self, event: Event, now: float) -> Iterable[Emit]:
        return self._fn(event, now) or ()


def operator(
    name: str | None = None, *, metrics: bool = True, events: tuple[str, ...] | None = ()
) -> Callable[[Callable[[Any, float], Iterable[Emit] | None]], FunctionOperator]:
    """Decorator turning a function into an Operator::

        @operator("big_loss", metrics=False, events=("training.update",))
        def big_loss(event, now):
            ...
    """

    def wrap(fn: Callable[[Any, float], Iterable[Emit] | None]) -> FunctionOperator:
        return FunctionOperator(fn, name or fn.__name__, metrics, events)

    return wrap
