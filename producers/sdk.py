"""App SDK: custom gauges, counters and timed functions that ride in the producer's MetricBatch.

    from producers.sdk import REGISTRY

    peers = REGISTRY.gauge("p2p.peers", unit="peers")
    peers.set(42)
    blocks = REGISTRY.counter("chain.blocks_total", unit="blocks")
    blocks.inc()
    REGISTRY.event("chain.reorg", {"depth": 3})  # published at once, not on the next tick

    @REGISTRY.timed("rpc.validate")
    async def validate(req): ...

Each collection (one per producer interval) turns the registry into samples:
gauges and counters as their current value, and for every timed function
``<name>.requests_per_s``, ``<name>.errors`` (in the interval),
``<name>.success_rate`` (0-1), ``<name>.latency_{mean,p50,p95,p99,max}_ms``
and the cumulative ``<name>.calls_total`` / ``<name>.errors_total``.
Label sets per metric are capped (``max_series``); extra series are refused and
counted, never silently grown. A gauge change that crosses a threshold the
processor watches is published at once by a producer with edge sampling
(:mod:`producers.edges`). Publish numbers only — never secrets, user
names or addresses in labels.
"""
from __future__ import annotations

import asyncio
import functools
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from schemas.models import MAX_LABELS, MAX_NAME_LEN, Event, Sample, check_metric_name
from schemas.subjects import check_kind

F = TypeVar("F", bound=Callable[..., Any])
LabelKey = tuple[tuple[str, str], ...]

DEFAULT_MAX_SERIES = 1000  # label sets per metric
RESERVOIR_SIZE = 1024  # latencies kept per timed series and interval for the quantiles
RESERVED_PREFIX = "swarmwatch."
MAX_QUEUED_EVENTS = 1000  # events held while no producer publishes them
_TIMER_SUFFIXES = (
    ".requests_per_s", ".errors", ".success_rate", ".calls_total", ".errors_total",
    ".latency_mean_ms", ".latency_p50_ms", ".latency_p95_ms", ".latency_p99_ms", ".latency_max_ms",
)
_LONGEST_SUFFIX = max(len(s) for s in _TIMER_SUFFIXES)


def _label_key(labels: dict[str, Any] | None) -> LabelKey:
    if not labels:
        return ()
    if len(labels) > MAX_LABELS:
        raise ValueError(f"{len(labels)} labels given; at most {MAX_LABELS}")
    for k in labels:
        if not isinstance(k, str) or not k:
            raise ValueError(f"label name {k!r} must be a non-empty string")
    return tuple(sorted((k, str(v)) for k, v in labels.items()))


class _Metric:
    kind = "metric"

    def __init__(self, registry: Registry, name: str, unit: str | None, help: str) -> None:
        self._registry = registry
        self.name = name
        self.unit = unit
        self.help = help
        self._values: dict[LabelKey, float] = {}

    def _admit(self, key: LabelKey) -> bool:
        """True if this label set exists or there is room for a new one; refusals are counted."""
        if key in self._values:
            return True
        if len(self._values) >= self._registry.max_series:
            self._registry.refused += 1
            return False
        return True

    def _samples(self) -> list[Sample]:
        out: list[Sample] = []
        for k, v in self._values.items():
            try:
                out.append(Sample(self.name, v, self.unit, dict(k) if k else None).validate())
            except ValueError:  # e.g. a gauge incremented past the largest allowed value
                self._registry.invalid += 1
        return out


class Gauge(_Metric):
    """A value that goes up and down (peers connected, queue depth, accuracy)."""

    kind = "gauge"

    def set(self, value: float, labels: dict[str, Any] | None = None) -> None:
        """Set the current value; NaN or infinite values are refused and counted in ``registry.invalid``."""
        v = float(value)
        if v != v or v in (float("inf"), float("-inf")):
            self._registry.invalid += 1
            return
        key = _label_key(labels)
        reg = self._registry
        with reg._lock:
            if not self._admit(key):
                return
            self._values[key] = v
        if reg.on_gauge is not None:  # a producer with edge sampling: publishes at once if this crossed a watch
            reg.on_gauge(self, key, v)

    def inc(self, amount: float = 1.0, labels: dict[str, Any] | None = None) -> None:
        key = _label_key(labels)
        reg = self._registry
        with reg._lock:
            if not self._admit(key):
                return
            v = self._values[key] = self._values.get(key, 0.0) + float(amount)
        if reg.on_gauge is not None:
            reg.on_gauge(self, key, v)

    def dec(self, amount: float = 1.0, labels: dict[str, Any] | None = None) -> None:
        self.inc(-float(amount), labels)

    def labels(self, **labels: Any) -> _Bound:
        return _Bound(self, labels)


class Counter(_Metric):
    """A cumulative count that only goes up (blocks seen, validations done); published as its total."""

    kind = "counter"

    def inc(self, amount: float = 1.0, labels: dict[str, Any] | None = None) -> None:
        """Add ``amount`` (>= 0) to the total."""
        a = float(amount)
        if not a >= 0 or a == float("inf"):
            raise ValueError(f"counter {self.name!r} can only be incremented by a finite amount >= 0, got {amount!r}")
        key = _label_key(labels)
        with self._registry._lock:
            if self._admit(key):
                self._values[key] = self._values.get(key, 0.0) + a

    def labels(self, **labels: Any) -> _Bound:
        return _Bound(self, labels)


class _Bound:
    """A metric with its labels fixed: ``gauge.labels(peer="a").set(3)``."""

    __slots__ = ("_metric", "_labels")

    def __init__(self, metric: _Metric, labels: dict[str, Any]) -> None:
        _label_key(labels)  # validate now, not on first use
        self._metric = metric
        self._labels = labels

    def set(self, value: float) -> None:
        self._metric.set(value, self._labels)  # type: ignore[attr-defined]

    def inc(self, amount: float = 1.0) -> None:
        self._metric.inc(amount, self._labels)  # type: ignore[attr-defined]

    def dec(self, amount: float = 1.0) -> None:
        self._metric.dec(amount, self._labels)  # type: ignore[attr-defined]


class _TimerSeries:
    __slots__ = ("calls_total", "errors_total", "count", "errors", "sum_ms", "max_ms", "reservoir", "seen")

    def __init__(self) -> None:
        self.calls_total = 0
        self.errors_total = 0
        self.count = 0
        self.errors = 0
        self.sum_ms = 0.0
        self.max_ms = 0.0
        self.reservoir: list[float] = []
        self.seen = 0

    def observe(self, ms: float, ok: bool) -> None:
        self.calls_total += 1
        self.count += 1
        if not ok:
            self.errors_total += 1
            self.errors += 1
        self.sum_ms += ms
        if ms > self.max_ms:
            self.max_ms = ms
        self.seen += 1
        if len(self.reservoir) < RESERVOIR_SIZE:
            self.reservoir.append(ms)
        else:  # reservoir sampling keeps a uniform sample of the interval's latencies
            j = random.randrange(self.seen)
            if j < RESERVOIR_SIZE:
                self.reservoir[j] = ms

    def reset_interval(self) -> None:
        self.count = 0
        self.errors = 0
        self.sum_ms = 0.0
        self.max_ms = 0.0
        self.reservoir = []
        self.seen = 0


def _quantile(sorted_values: list[float], q: float) -> float:
    """Linear-interpolated quantile of an ascending list (q in [0, 1])."""
    if len(sorted_values) == 1:
        return sorted_values[0]
    pos = q * (len(sorted_values) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


class Timer:
    """Latency and outcome of calls: use :meth:`time` as a context manager or :meth:`Registry.timed`."""

    kind = "timer"

    def __init__(self, registry: Registry, name: str, help: str) -> None:
        self._registry = registry
        self.name = name
        self.help = help
        self._series: dict[LabelKey, _TimerSeries] = {}

    def observe(self, latency_ms: float, ok: bool = True, labels: dict[str, Any] | None = None) -> None:
        """Record one call that took ``latency_ms`` and succeeded (``ok``) or failed."""
        ms = float(latency_ms)
        if not ms >= 0 or ms == float("inf"):
            self._registry.invalid += 1
            return
        key = _label_key(labels)
        with self._registry._lock:
            s = self._series.get(key)
            if s is None:
                if len(self._series) >= self._registry.max_series:
                    self._registry.refused += 1
                    return
                s = self._series[key] = _TimerSeries()
            s.observe(ms, ok)

    @contextmanager
    def time(self, labels: dict[str, Any] | None = None) -> Iterator[None]:
        """Time the ``with`` body; an exception counts as a failure and propagates."""
        t0 = time.perf_counter()
        ok = False
        try:
            yield
            ok = True
        except Exception:
            self.observe((time.perf_counter() - t0) * 1000.0, False, labels)
            raise
        finally:
            if ok:
                self.observe((time.perf_counter() - t0) * 1000.0, True, labels)

    def _samples(self, interval_s: float | None) -> list[Sample]:
        out: list[Sample] = []
        n = self.name
        for key, s in self._series.items():
            lab = dict(key) if key else None
            out.append(Sample(f"{n}.calls_total", float(s.calls_total), "calls", lab))
            out.append(Sample(f"{n}.errors_total", float(s.errors_total), "errors", lab))
            if interval_s is not None and interval_s > 0:
                out.append(Sample(f"{n}.requests_per_s", s.count / interval_s, "req/s", lab))
                out.append(Sample(f"{n}.errors", float(s.errors), "errors", lab))
            if s.count:
                out.append(Sample(f"{n}.success_rate", (s.count - s.errors) / s.count, "ratio", lab))
                out.append(Sample(f"{n}.latency_mean_ms", s.sum_ms / s.count, "ms", lab))
                out.append(Sample(f"{n}.latency_max_ms", s.max_ms, "ms", lab))
                r = sorted(s.reservoir)
                out.append(Sample(f"{n}.latency_p50_ms", _quantile(r, 0.50), "ms", lab))
                out.append(Sample(f"{n}.latency_p95_ms", _quantile(r, 0.95), "ms", lab))
                out.append(Sample(f"{n}.latency_p99_ms", _quantile(r, 0.99), "ms", lab))
            s.reset_interval()
        return out


class Registry:
    """The app's custom metrics; the producer calls :meth:`collect` once per interval.

    ``refused`` counts label sets over ``max_series``; ``invalid`` counts NaN,
    infinite or negative-latency values that were not recorded.
    """

    def __init__(self, max_series: int = DEFAULT_MAX_SERIES) -> None:
        if max_series < 1:
            raise ValueError(f"max_series {max_series!r} must be >= 1")
        self.max_series = max_series
        self.refused = 0
        self.invalid = 0
        self._metrics: dict[str, Gauge | Counter | Timer] = {}
        self._lock = threading.Lock()
        self._last_collect_s: float | None = None
        self._events: deque[Event] = deque()
        self.on_gauge: Callable[[Gauge, LabelKey, float], None] | None = None
        """Set by a producer with edge sampling: called after every gauge change (any thread)."""
        self.on_event: Callable[[], None] | None = None
        """Set by a running producer: called (any thread) when an event is queued, so it publishes at once."""

    def _register(self, cls: type, name: str, *args: Any) -> Any:
        check_metric_name(name)
        if name.startswith(RESERVED_PREFIX):
            raise ValueError(f"metric name {name!r} is reserved; '{RESERVED_PREFIX}*' is swarmwatch's own")
        with self._lock:
            existing = self._metrics.get(name)
            if existing is not None:
                if type(existing) is not cls:
                    raise ValueError(f"metric {name!r} is already registered as a {existing.kind}")
                return existing
            m = cls(self, name, *args)
            self._metrics[name] = m
            return m

    def gauge(self, name: str, unit: str | None = None, help: str = "") -> Gauge:
        """Get or create the gauge ``name`` (dotted, lower case, e.g. ``p2p.peers``)."""
        return self._register(Gauge, name, unit, help)

    def counter(self, name: str, unit: str | None = None, help: str = "") -> Counter:
        """Get or create the counter ``name`` (e.g. ``chain.blocks_total``)."""
        return self._register(Counter, name, unit, help)

    def timer(self, name: str, help: str = "") -> Timer:
        """Get or create the timer ``name``; its samples are ``<name>.latency_p95_ms`` and friends."""
        if len(name) + _LONGEST_SUFFIX > MAX_NAME_LEN:
            raise ValueError(f"timer name {name!r} is too long; at most {MAX_NAME_LEN - _LONGEST_SUFFIX} characters")
        return self._register(Timer, name, help)

    def timed(self, name: str | None = None, labels: dict[str, Any] | None = None) -> Callable[[F], F]:
        """Decorator: time every call of a sync or async function and record success or failure.

        ``name`` defaults to ``<module>.<function>`` in lower case.
        """

        def wrap(fn: F) -> F:
            tname = name or f"{fn.__module__}.{fn.__qualname__}".lower().replace("<", "").replace(">", "")
            timer = self.timer(tname)
            if asyncio.iscoroutinefunction(fn):

                @functools.wraps(fn)
                async def awrapper(*args: Any, **kwargs: Any) -> Any:
                    t0 = time.perf_counter()
                    try:
                        result = await fn(*args, **kwargs)
                    except Exception:
                        timer.observe((time.perf_counter() - t0) * 1000.0, False, labels)
                        raise
                    timer.observe((time.perf_counter() - t0) * 1000.0, True, labels)
                    return result

                return awrapper  # type: ignore[return-value]

            @functools.wraps(fn)
            def wrapper(*args: Any, **kwargs: Any) -> Any:
                t0 = time.perf_counter()
                try:
                    result = fn(*args, **kwargs)
                except Exception:
                    timer.observe((time.perf_counter() - t0) * 1000.0, False, labels)
                    raise
                timer.observe((time.perf_counter() - t0) * 1000.0, True, labels)
                return result

            return wrapper  # type: ignore[return-value]

        return wrap

    def collect(self, now_s: float | None = None) -> list[Sample]:
        """All samples now; timers report over the time since the previous collect (``now_s`` monotonic)."""
        now = time.monotonic() if now_s is None else now_s
        with self._lock:
            interval = None if self._last_collect_s is None else now - self._last_collect_s
            self._last_collect_s = now
            out: list[Sample] = []
            for m in self._metrics.values():
                out.extend(m._samples(interval) if isinstance(m, Timer) else m._samples())
            return out

    def event(self, kind: str, payload: dict[str, Any] | None = None, ts: float | None = None) -> None:
        """Queue an event (``kind`` like ``chain.reorg``) that the producer publishes at once.

        It goes to ``sw.events.<cluster>.<node>.<kind>``; with no producer
        running it waits for one (at most ``MAX_QUEUED_EVENTS``; the oldest
        beyond that is dropped and counted in ``refused``).
        """
        check_kind(kind)
        ev = Event(cluster="local", node="local", ts=time.time() if ts is None else float(ts), kind=kind, payload=dict(payload or {}))
        with self._lock:
            if len(self._events) >= MAX_QUEUED_EVENTS:
                self._events.popleft()
                self.refused += 1
            self._events.append(ev)
        hook = self.on_event
        if hook is not None:
            hook()

    def take_events(self) -> list[Event]:
        """The queued events, oldest first (the producer stamps its cluster and node on them)."""
        with self._lock:
            out = list(self._events)
            self._events.clear()
            return out

    def clear(self) -> None:
        """Forget every metric (tests, or an app that re-registers)."""
        with self._lock:
            self._metrics.clear()
            self._events.clear()
            self._last_collect_s = None


REGISTRY = Registry()
"""The process-wide registry that ``swarmwatch produce``/``run_producer`` publishes by default."""


def gauge(name: str, unit: str | None = None, help: str = "") -> Gauge:
    """Gauge in the default :data:`REGISTRY`."""
    return REGISTRY.gauge(name, unit, help)


def counter(name: str, unit: str | None = None, help: str = "") -> Counter:
    """Counter in the default :data:`REGISTRY`."""
    return REGISTRY.counter(name, unit, help)


def timed(name: str | None = None, labels: dict[str, Any] | None = None) -> Callable[[F], F]:
    """``@timed("rpc.validate")`` on the default :data:`REGISTRY`."""
    return REGISTRY.timed(name, labels)


def event(kind: str, payload: dict[str, Any] | None = None, ts: float | None = None) -> None:
    """Queue an event in the default :data:`REGISTRY`; a running producer publishes it at once."""
    REGISTRY.event(kind, payload, ts)
