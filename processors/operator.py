"""The operator contract: pure stream operators with no NATS inside.

An operator takes one decoded input (a MetricBatch or an Event) plus the
current time and returns the messages it wants published. The runtime feeds
it from JetStream through the dispatcher (:mod:`processors.dispatch`),
publishes what it returns, then acks; the dispatcher counts its inputs,
outputs and errors. The same operator runs live, in ``swarmwatch replay`` and
in the backtests. ``now`` is the processor's clock: wall time live, the
newest event time in replay.

A custom processor is a subclass that overrides what it needs; state kept in
``snapshot``/``restore`` survives a restart::

    from processors import AlertTracker, Operator
    from schemas import AlertKind

    class HotDisk(Operator):
        # warns when a disk has been over 60 degrees C for 30 s
        name = "hot_disk"

        def __init__(self) -> None:
            super().__init__()
            self.tracker = AlertTracker("hot_disk", AlertKind.CUSTOM, for_s=30)

        def on_metrics(self, batch, now):
            for s in batch.samples:
                if s.name == "disk.temperature_c":
                    yield from self.tracker.update(
                        batch.cluster, batch.node, s.value > 60, batch.ts, s.value,
                        series=s.series(), metric=s.name, threshold=60,
                    )

        def snapshot(self):
            return self.tracker.snapshot()

        def restore(self, state):
            self.tracker.restore(state)

or a plain function decorated with :func:`operator`; a third parameter gets
its ``state`` (an object with ``snapshot``/``restore`` such as an
AlertTracker, or a dict by default), checkpointed like any operator's::

    from processors import AlertTracker, operator

    @operator("hot_gpu", state=AlertTracker("hot_gpu", for_s=10))
    def hot_gpu(batch, now, tracker):
        for s in batch.samples:
            if s.name == "gpu.temperature_c":
                yield from tracker.update(
                    batch.cluster, batch.node, s.value > 85, batch.ts, s.value,
                    series=s.series(), metric=s.name, threshold=85,
                )
"""
from __future__ import annotations

import inspect
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
        """No more input will come: emit what is pending.

        Called at the end of a replay or backtest, and by ``Runtime.stop`` for
        operators that checkpoint no state (``snapshot()`` is None; all of them
        with ``stop(final=True)``). Operators with checkpointed state keep it
        across a restart instead of flushing it.
        """
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

    def metrics_wanted(self) -> set[str] | None:
        """The metric names this operator reads, or None for all of them.

        Replay from the store reads only the samples some operator wants, so an
        operator that names its metrics makes a what-if over days fast.
        """
        return None

    def wants_event(self, kind: str) -> bool:
        kinds = self.event_kinds
        if kinds is None:
            return True
        return any(kind == k or kind.startswith(k + ".") for k in kinds)


class FunctionOperator(Operator):
    """Adapts ``fn(batch_or_event, now[, state]) -> Iterable[Emit]`` to the Operator contract.

    A function with a third parameter gets ``state`` on every call: an object
    with ``snapshot()``/``restore(s)`` (e.g. an AlertTracker) or a dict
    (msgpack-encodable values), checkpointed by the runtime and restored after
    a restart.
    """

    def __init__(
        self,
        fn: Callable[..., Iterable[Emit] | None],
        name: str,
        wants_metrics: bool,
        event_kinds: tuple[str, ...] | None,
        state: Any = None,
    ) -> None:
        super().__init__()
        self._fn = fn
        self.name = name
        self.wants_metrics = wants_metrics
        self.event_kinds = event_kinds
        self._stateful = state is not None or _positional_params(fn) >= 3
        self.state: Any = ({} if state is None else state) if self._stateful else None

    def __call__(self, item: Any, now: float) -> Iterable[Emit]:
        """Call the wrapped function directly (tests, notebooks)."""
        return (self._fn(item, now, self.state) if self._stateful else self._fn(item, now)) or ()

    def on_metrics(self, batch: MetricBatch, now: float) -> Iterable[Emit]:
        return self(batch, now)

    def on_event(self, event: Event, now: float) -> Iterable[Emit]:
        return self(event, now)

    def snapshot(self) -> Any:
        st = self.state
        if not self._stateful:
            return None
        if hasattr(st, "snapshot") and hasattr(st, "restore"):
            return st.snapshot()
        return dict(st)

    def restore(self, state: Any) -> None:
        st = self.state
        if not self._stateful:
            return
        if hasattr(st, "snapshot") and hasattr(st, "restore"):
            st.restore(state)
        else:
            st.clear()
            st.update(state or {})


def _positional_params(fn: Callable[..., Any]) -> int:
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return 2
    kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    if any(p.kind is inspect.Parameter.VAR_POSITIONAL for p in params):
        return 2
    return sum(1 for p in params if p.kind in kinds)


def operator(
    name: str | None = None, *, metrics: bool = True, events: tuple[str, ...] | None = (), state: Any = None
) -> Callable[[Callable[..., Iterable[Emit] | None]], FunctionOperator]:
    """Decorator turning a function into an Operator::

        @operator("big_loss", metrics=False, events=("training.update",))
        def big_loss(event, now):
            ...

    ``state``: what a third parameter of the function receives (see FunctionOperator).
    """

    def wrap(fn: Callable[..., Iterable[Emit] | None]) -> FunctionOperator:
        return FunctionOperator(fn, name or fn.__name__, metrics, events, state)

    return wrap
