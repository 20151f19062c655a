"""The dispatch step every mode shares: decode, route to operators, collect Emits, count.

The live runtime, ``swarmwatch replay`` and the backtests all feed operators
through a :class:`Dispatcher`, so an operator sees the same inputs in the same
order with the same ``now`` semantics everywhere, and its inputs, outputs and
errors are counted here, once, not by each operator. Nothing here touches
NATS: the caller brings bytes (or decoded messages) and a clock, and publishes
or collects what comes back.
"""
from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from schemas import DecodeError, Event, MetricBatch
from schemas.codec import decode_telemetry as decode_message  # re-exported: the runtime, replay and backtests call it here

from processors.operator import Emit, Operator

log = logging.getLogger(__name__)

MIN_TICK_STEP_S = 0.05  # the finest tick granularity the live runtime honours


@dataclass(slots=True)
class OperatorCounters:
    """What the dispatcher counted for one operator."""

    inputs: int = 0  # messages handed to it
    outputs: int = 0  # Emits it returned, from inputs, ticks and flushes
    errors: int = 0  # exceptions it raised
    ticks: int = 0  # on_tick calls


@dataclass(slots=True)
class DispatchStats:
    """Counters of one dispatcher: messages in, invalid ones, Emits out, operator errors."""

    inputs: int = 0
    invalid: int = 0
    outputs: int = 0
    errors: int = 0
    by_operator: dict[str, OperatorCounters] = field(default_factory=dict)


class OperatorFailure(NamedTuple):
    """An operator raised while handling an input, tick or flush."""

    operator: str
    error: Exception


@dataclass(slots=True)
class Step:
    """The result of one dispatched message: the decoded item (None if invalid), Emits, failures."""

    item: MetricBatch | Event | None
    emits: list[Emit]
    failures: list[OperatorFailure]
    invalid: str | None = None  # why the bytes could not be decoded


def _materialize(out: Iterable[Emit] | None) -> list[Emit]:
    if out is None:
        return []
    return out if isinstance(out, list) else list(out)


class Dispatcher:
    """Feeds decoded messages and clock ticks to ``operators`` and counts what they do.

    Operators run in the given order (threshold rules first keeps alert latency
    low). ``tick(now)`` calls each operator's ``on_tick`` once its
    ``tick_interval_s`` has passed on whatever clock the caller uses: wall
    time live, event time in replay.
    """

    def __init__(self, operators: Sequence[Operator]) -> None:
        names = [op.name for op in operators]
        if len(set(names)) != len(names):
            raise ValueError(f"operator names must be unique, got {names}")
        self.operators = list(operators)
        self.stats = DispatchStats(by_operator={op.name: OperatorCounters() for op in self.operators})
        self._metric_ops = [op for op in self.operators if op.wants_metrics]
        self._event_ops = [op for op in self.operators if op.event_kinds is None or op.event_kinds]
        self._counters = [self.stats.by_operator[op.name] for op in self.operators]
        self._metric_pairs = [(op, self.stats.by_operator[op.name]) for op in self._metric_ops]
        self._next_tick = {op.name: 0.0 for op in self.operators}

    # ---------------------------------------------------------------- routing

    def route(self, item: MetricBatch | Event) -> list[Operator]:
        """The operators that want ``item``, in order."""
        if isinstance(item, MetricBatch):
            return self._metric_ops
        return [op for op in self._event_ops if op.wants_event(item.kind)]

    def counters(self, op: Operator) -> OperatorCounters:
        return self.stats.by_operator[op.name]

    # ---------------------------------------------------------------- inputs

    def feed(self, op: Operator, item: MetricBatch | Event, now: float, *, replaying: bool = False) -> list[Emit]:
        """Run one operator on one item and count it; an exception is counted and re-raised."""
        c = self.stats.by_operator[op.name]
        c.inputs += 1
        op.replaying = replaying
        try:
            if isinstance(item, MetricBatch):
                out = _materialize(op.on_metrics(item, now))
            else:
                out = _materialize(op.on_event(item, now))
        except Exception:
            c.errors += 1
            self.stats.errors += 1
            raise
        finally:
            op.replaying = False
        c.outputs += len(out)
        self.stats.outputs += len(out)
        return out

    def dispatch(
        self, item: MetricBatch | Event, now: float, *, only: set[str] | None = None, replaying: bool = False
    ) -> tuple[list[Emit], list[OperatorFailure]]:
        """Route ``item`` to every operator that wants it (or those named in ``only``); collect Emits."""
        self.stats.inputs += 1
        emits: list[Emit] = []
        failures: list[OperatorFailure] = []
        if only is None and not replaying and type(item) is MetricBatch:  # the hot path: same as feed(), inlined
            for op, c in self._metric_pairs:
                c.inputs += 1
                try:
                    out = op.on_metrics(item, now)
                    if out is None or out == ():
                        continue
                    if type(out) is not list:
                        out = list(out)
                except Exception as exc:
                    c.errors += 1
                    self.stats.errors += 1
                    log.exception("operator %s failed on %s/%s", op.name, item.cluster, item.node)
                    failures.append(OperatorFailure(op.name, exc))
                    continue
                if out:
                    c.outputs += len(out)
                    self.stats.outputs += len(out)
                    emits.extend(out)
            return emits, failures
        for op in self.route(item):
            if only is not None and op.name not in only:
                continue
            try:
                emits.extend(self.feed(op, item, now, replaying=replaying))
            except Exception as exc:  # an operator bug must not stop the others
                log.exception("operator %s failed on %s/%s", op.name, item.cluster, item.node)
                failures.append(OperatorFailure(op.name, exc))
        return emits, failures

    def step(self, subject: str, data: bytes, now: float) -> Step:
        """Decode one TELEMETRY message and dispatch it; invalid bytes are counted, not raised."""
        try:
            item = decode_message(subject, data)
        except DecodeError as exc:
            self.stats.invalid += 1
            return Step(None, [], [], str(exc))
        emits, failures = self.dispatch(item, now)
        return Step(item, emits, failures)

    # ---------------------------------------------------------------- clock

    def tick_step_s(self) -> float:
        """How often a caller should call :meth:`tick` (the smallest interval, at least 50 ms)."""
        return max(MIN_TICK_STEP_S, min((op.tick_interval_s for op in self.operators), default=1.0))

    def tick(self, now: float) -> tuple[list[Emit], list[OperatorFailure]]:
        """Call ``on_tick`` on every operator whose interval has passed since its last tick."""
        emits: list[Emit] = []
        failures: list[OperatorFailure] = []
        due = self._next_tick
        for op, c in zip(self.operators, self._counters):
            if now < due[op.name]:
                continue
            due[op.name] = now + op.tick_interval_s
            c.ticks += 1
            try:
                out = _materialize(op.on_tick(now))
            except Exception as exc:
                c.errors += 1
                self.stats.errors += 1
                log.exception("operator %s failed on tick", op.name)
                failures.append(OperatorFailure(op.name, exc))
                continue
            c.outputs += len(out)
            self.stats.outputs += len(out)
            emits.extend(out)
        return emits, failures

    def flush_one(self, op: Operator, now: float) -> list[Emit]:
        """Call one operator's ``flush`` and count it; an exception is counted and re-raised."""
        c = self.stats.by_operator[op.name]
        try:
            out = _materialize(op.flush(now))
        except Exception:
            c.errors += 1
            self.stats.errors += 1
            raise
        c.outputs += len(out)
        self.stats.outputs += len(out)
        return out

    def flush(self, now: float) -> tuple[list[Emit], list[OperatorFailure]]:
        """Call every operator's ``flush`` (end of a replay or backtest: no more input will come)."""
        emits: list[Emit] = []
        failures: list[OperatorFailure] = []
        for op in self.operators:
            try:
                emits.extend(self.flush_one(op, now))
            except Exception as exc:
                log.exception("operator %s failed on flush", op.name)
                failures.append(OperatorFailure(op.name, exc))
        return emits, failures

    # ---------------------------------------------------------------- state

    def snapshot(self) -> dict[str, Any]:
        """Every operator's state by name."""
        return {op.name: op.snapshot() for op in self.operators}

    def restore(self, state: dict[str, Any]) -> None:
        """Restore the operators named in ``state``; others keep theirs."""
        for op in self.operators:
            if op.name in state:
                op.restore(state[op.name])


def run_items(
    dispatcher: Dispatcher,
    items: Iterable[MetricBatch | Event],
    *,
    flush: bool = True,
    tick: bool = True,
) -> list[Emit]:
    """Feed items in order on their own event-time clock, ticking and flushing; return every Emit.

    ``now`` is the newest event time seen so far (never going back), which is
    what a live processor's clock would read if the inputs arrived as stamped.
    """
    out: list[Emit] = []
    now = 0.0
    for item in items:
        if item.ts > now:
            now = item.ts
            if tick:
                out.extend(dispatcher.tick(now)[0])
        out.extend(dispatcher.dispatch(item, now)[0])
    if flush:
        out.extend(dispatcher.flush(now)[0])
    return out
