"""AnomalyOperator: online anomaly detection on every (cluster, node, series).

Each series gets its own detector, chosen by the first metric family whose
glob matches the metric name (``gpu.*.temperature_c``, ``*error*``, ``*``).
Scores feed an :class:`~processors.alerting.AlertTracker` per rule, so anomaly
alerts (kind ``anomaly``) fire once per episode and resolve like threshold
alerts, on ``sw.alerts.<severity>.<cluster>.<node>.<rule>``, carrying the
score, the detector's baseline and the recent window that triggered them.

Bounded: at most ``max_series_per_node`` series per node and ``max_series``
per cluster are followed, through a shared
:class:`~processors.cardinality.CardinalityLimiter` (least recently seen series
give way once idle; otherwise new ones are refused, counted in
``stats.extra["series_refused"]``, logged and alerted as ``cardinality_limit``),
series silent for ``series_ttl_s`` are dropped (those seen fewer than FEW_POINTS
times after FEW_POINTS_TTL_S), and every detector holds O(1) state.

Cumulative counters (``*_total`` by default) are turned into per-second rates;
a counter that goes down was reset, so that point is skipped (counted in
``counter_resets``) instead of being scored as a collapse.

How data arrives never pages and never teaches:

* a sample older than ``late_after_s`` when it arrives (a producer's spool
  replayed after a broker outage, a slow link) is counted in
  ``stats.extra["late_skipped"]`` and neither scored nor learned, so after an
  outage the series is scored against the baseline it had before;
* a gap in a series (a step more than ``GAP_FACTOR`` times its usual
  interval) breaks its short-term context: the next point has no previous
  value (the jump across the gap is not a transition the series made), a
  counter re-primes instead of reporting the average over the gap, and the
  next ``GRACE_POINTS`` points are learned but cannot start an alert while the
  short-term context refills.

The catch-all family runs the same detector at the same threshold as
``swarmwatch backtest anomaly`` (:data:`~processors.anomaly.base.DEFAULT_THRESHOLD`);
families for units with a natural size add change floors (``min_change`` in
the metric's unit, ``min_rel_change`` as a fraction of its level).

One threshold, one false-alarm budget per node. A score is a calibrated tail
of one series: 0.9998 is "rarer than 99.98 % of the 5-minute periods of this
series", so a node whose m series are all healthy would still cross it about
m x 0.06 times a day (m ~ 30 on a producer node: ~2 a day). What a person
watches is the node, so an alert needs the *node's* tail to cross the
threshold: ``node_score = 1 - m (1 - score)`` (Bonferroni over the ``m``
series of that node the same rule follows; exact for independent series,
conservative for correlated ones). Alerts carry both scores. Because tails
beyond a series' range fall exponentially, this asks a real incident for
only ``ln m`` more e-foldings of margin (a step or a leak still pages on its
first samples), while the idle node's many small, independent records stop
adding up to pages. A node with one series per rule behaves exactly as the
detector does offline (and so does every series with ``node_budget=False``).

One alert per node incident: a series whose episode opens while another
series of the same node already has an open alert of the same rule joins
that incident instead of raising its own (counted in
``stats.extra["incident_joined"]``); the incident's resolved alert names them
(``details["joined"]``). A used-memory step moves ``mem.used_bytes`` and
``mem.available_bytes`` together; one node, one thing to look at.

Every default family except the error-spike ones must be a detection on
``sustained`` = 2 consecutive samples before an alert opens: a one-second
burst of a NIC or a disk, one odd sample of used memory, or one sample of
heavy-tailed noise that sets a new record (at 1 Hz the per-5-minute threshold
asks for per-sample tails near 1e-6, far beyond what a few records can
calibrate: bench/bench_anomaly_heavy_tails.py) is not something to act on,
while a step, a transfer, a saturation or a leak that holds pages one sample
later. Error counts and rates page on their first anomalous sample. A family
with ``sustained=1`` pages on one sample, as the offline backtest scores.
"""
from __future__ import annotations

import fnmatch
import logging
import math
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from schemas import AlertKind, MetricBatch, Severity, subjects

from processors.alerting import AlertTracker
from processors.anomaly.base import DEFAULT_THRESHOLD, AnomalyDetector
from processors.anomaly.registry import DETECTORS, make_detector
from processors.cardinality import CardinalityLimiter
from processors.operator import Emit, Operator

log = logging.getLogger(__name__)

DEFAULT_MAX_SERIES = 10_000  # per cluster
DEFAULT_MAX_SERIES_PER_NODE = 500
DEFAULT_SERIES_TTL_S = 3_600.0  # forget a series silent this long (seconds)
FEW_POINTS = 3  # a series seen fewer times than this ...
FEW_POINTS_TTL_S = 300.0  # ... is forgotten after this long silent (one-shot names, e.g. a flood), in seconds
DEFAULT_WINDOW_POINTS = 10  # recent points attached to an alert
DEFAULT_LATE_AFTER_S = 10.0  # a sample older than this on arrival is replayed/late: not scored, not learned
GAP_FACTOR = 5.0  # a step this many times a series' usual interval is a gap
INTERVAL_ALPHA = 0.05  # weight of each new step in a series' usual interval
GRACE_POINTS = 20  # points after a gap that are learned but cannot start an alert (the rolling window refills)
ANOMALY_RULE = "anomaly"
ERROR_SPIKE_RULE = "error_rate_spike"
_MAX_NAME_CACHE = 100_000
MAX_JOINED = 50  # series named in an incident's resolved alert
_QUIET_MAX = 1 << 30  # points since a node-level detection, capped (longer than any rest period)


@dataclass(frozen=True, slots=True)
class MetricFamily:
    """Which detector watches the metrics whose name matches ``pattern`` (a glob).

    ``rule`` names the alert (a subject token); ``threshold`` overrides the
    detector's default alert threshold; ``counter`` turns a cumulative counter
    into a per-second rate; ``enabled=False`` leaves matching metrics alone.
    ``sustained``: consecutive samples that must each be a detection before an
    alert opens (the defaults use 2 for all but error spikes: a one-sample burst
    or outlier never pages, a change that holds pages one sample later).
    """

    pattern: str
    detector: str = "default"
    params: Mapping[str, Any] = field(default_factory=dict)
    rule: str = ANOMALY_RULE
    severity: Severity = Severity.WARNING
    threshold: float | None = None
    counter: bool = False
    enabled: bool = True
    sustained: int = 1

    def __post_init__(self) -> None:
        if self.sustained < 1:
            raise ValueError(f"metric family {self.pattern!r}: sustained {self.sustained!r} must be >= 1 sample")
        if not self.pattern:
            raise ValueError("metric family pattern must not be empty; use '*' for every metric")
        subjects.check_token(self.rule, "anomaly rule")
        if self.detector not in DETECTORS:
            raise ValueError(f"metric family {self.pattern!r}: detector {self.detector!r} is unknown; expected one of {sorted(DETECTORS)}")
        object.__setattr__(self, "severity", Severity(self.severity))
        make_detector(self.detector, self.threshold, self.params)  # fail now on bad parameters

    def build(self) -> AnomalyDetector:
        return make_detector(self.detector, self.threshold, self.params)


LIVE_THRESHOLD = DEFAULT_THRESHOLD
"""Alert threshold of the catch-all family live: the backtest's, by construction (kept as a name for callers)."""

# First match wins. Error counts and rates spiking above their own baseline get
# their own rule (a requirement); cumulative counters are differentiated first.
# Floors are sizes below which a change means nothing to an operator, in the
# family's unit; they are product choices, not fitted to any benchmark.
DEFAULT_FAMILIES: tuple[MetricFamily, ...] = (
    MetricFamily("*uptime*", enabled=False),
    MetricFamily("*error_rate*", "robust_z", {"direction": "up", "min_scale": 0.005}, rule=ERROR_SPIKE_RULE),
    MetricFamily("*error*_total", "robust_z", {"direction": "up", "min_scale": 0.25}, rule=ERROR_SPIKE_RULE, counter=True),
    MetricFamily("*error*", "robust_z", {"direction": "up", "min_scale": 0.25}, rule=ERROR_SPIKE_RULE),
    MetricFamily("*collect_ms*", params={"min_change": 50.0}, sustained=2),  # the collector's own timing: only a stall matters
    MetricFamily("disk.*_ms", params={"min_change": 10.0, "min_rel_change": 0.5}, sustained=2),  # disk latency: bursty, ms are normal
    MetricFamily("disk.*bytes*_per_s", params={"min_change": 50e6, "min_rel_change": 1.0}, sustained=2),  # disk I/O comes in bursts
    MetricFamily("disk.*_per_s", params={"min_change": 1000.0, "min_rel_change": 1.0}, sustained=2),
    MetricFamily("*_ms", params={"min_change": 1.0, "min_rel_change": 0.5}, sustained=2),  # latency, jitter (ms)
    MetricFamily("*percent*", params={"min_change": 10.0}, sustained=2),  # CPU, memory, disk, loss (percentage points)
    MetricFamily("*bytes*_per_s", params={"min_change": 1e6, "min_rel_change": 0.5}, sustained=2),  # B/s
    MetricFamily("*_per_s", params={"min_change": 100.0, "min_rel_change": 0.5}, sustained=2),  # ops/s, packets/s
    # sizes (free, available, used): no change floor. The floor guard compares with the all-time range, which a
    # leak extends itself, so any floor above ~10 samples of its growth hides a smooth leak on a quiet node for
    # good; a size must instead hold a new extreme for 2 samples (a one-sample jump is noise, a leak keeps rising).
    # A size moving inside its own range is normal, however unusual the move: no sequence (transition) member
    MetricFamily("*_bytes", params={"members": ("extremes", "seasonal")}, sustained=2),
    MetricFamily("load.*", params={"min_change": 1.0, "min_rel_change": 0.5}, sustained=2),  # load averages (runnable tasks)
    MetricFamily("*count*", params={"min_change": 10.0, "min_rel_change": 0.25}, sustained=2),  # processes, peers, cores
    MetricFamily("*connections*", params={"min_change": 10.0, "min_rel_change": 0.25}, sustained=2),  # sockets
    MetricFamily("*_total", counter=True, sustained=2),
    MetricFamily("*", sustained=2),
)


def node_score(score: float, m: int) -> float:
    """A series' calibrated score as a tail of its node: ``1 - m (1 - score)`` for ``m`` series watched (Bonferroni)."""
    if m <= 1 or score <= 0.0:
        return max(score, 0.0)
    return max(0.0, 1.0 - (1.0 - score) * m)


@dataclass(slots=True)
class _Series:
    family: int
    detector: AnomalyDetector
    last_ts: float = -math.inf
    last_raw: float | None = None  # counters: the previous cumulative value
    interval_s: float = math.inf  # usual step between samples: a slow average of the non-gap steps (seconds)
    grace: int = 0  # points left in the grace period after a gap
    quiet: int = _QUIET_MAX  # points since the last node-level detection (the alert is active while < the detector's rest)
    run: int = 0  # consecutive node-level detections up to the last point
    joined: bool = False  # its episode joined the node's open incident: no alert of its own
    before: dict[str, float] | None = None  # the baseline before the first detection of the current run
    window: deque[tuple[float, float]] = field(default_factory=lambda: deque(maxlen=DEFAULT_WINDOW_POINTS))


class AnomalyOperator(Operator):
    """Scores every (cluster, node, series) online and raises ``anomaly`` alerts."""

    name = "anomaly"
    wants_metrics = True
    event_kinds: tuple[str, ...] | None = ()
    tick_interval_s = 60.0

    def __init__(
        self,
        families: Sequence[MetricFamily] | None = None,
        *,
        max_series: int = DEFAULT_MAX_SERIES,
        max_series_per_node: int = DEFAULT_MAX_SERIES_PER_NODE,
        series_ttl_s: float = DEFAULT_SERIES_TTL_S,
        window_points: int = DEFAULT_WINDOW_POINTS,
        late_after_s: float = DEFAULT_LATE_AFTER_S,
        node_budget: bool = True,
    ) -> None:
        super().__init__()
        if max_series < 1 or max_series_per_node < 1:
            raise ValueError(f"max_series {max_series!r} and max_series_per_node {max_series_per_node!r} must be >= 1")
        if series_ttl_s <= 0:
            raise ValueError(f"series_ttl_s {series_ttl_s!r} must be > 0 seconds")
        if window_points < 1:
            raise ValueError(f"window_points {window_points!r} must be >= 1")
        if late_after_s <= 0:
            raise ValueError(f"late_after_s {late_after_s!r} must be > 0 seconds")
        self.late_after_s = float(late_after_s)
        self.node_budget = bool(node_budget)  # False: every series pages on its own tail, as offline
        self.on_score: Callable[[tuple[str, str, str], float, float, float], None] | None = None  # (series key, ts, x, score)
        self.families = tuple(DEFAULT_FAMILIES if families is None else families)
        self.max_series = max_series
        self.series_ttl_s = float(series_ttl_s)
        self.window_points = window_points
        self._series: dict[tuple[str, str, str], _Series] = {}
        self.limiter = CardinalityLimiter(self.name, min(max_series_per_node, max_series), max_series)
        self._family_of: dict[str, int | None] = {}
        self._trackers: dict[str, AlertTracker] = {}
        self._per_node: dict[tuple[str, str, str], int] = {}  # (cluster, node, rule) -> series followed
        self._leaders: dict[tuple[str, str, str], str] = {}  # (cluster, node, rule) -> the series whose alert is the node's incident
        self._joined: dict[tuple[str, str, str], list[str]] = {}  # ... and the series that joined it
        for fam in self.families:
            if fam.rule not in self._trackers:
                self._trackers[fam.rule] = AlertTracker(fam.rule, AlertKind.ANOMALY, fam.severity, max_keys=max_series)

    # ------------------------------------------------------------ lookup

    def family_for(self, metric: str) -> MetricFamily | None:
        """The enabled family watching ``metric``, or None."""
        idx = self._family_index(metric)
        return None if idx is None else self.families[idx]

    def _family_index(self, metric: str) -> int | None:
        try:
            return self._family_of[metric]
        except KeyError:
            pass
        idx: int | None = None
        for i, fam in enumerate(self.families):
            if fnmatch.fnmatchcase(metric, fam.pattern):
                idx = i if fam.enabled else None
                break
        if len(self._family_of) >= _MAX_NAME_CACHE:
            self._family_of.clear()
        self._family_of[metric] = idx
        return idx

    def _count(self, cluster: str, node: str, family: int, delta: int) -> None:
        """Keep the number of series each rule follows on each node (the ``m`` of the node's tail)."""
        key = (cluster, node, self.families[family].rule)
        m = self._per_node.get(key, 0) + delta
        if m > 0:
            self._per_node[key] = m
        else:
            self._per_node.pop(key, None)

    def series_on_node(self, cluster: str, node: str, rule: str = ANOMALY_RULE) -> int:
        """How many series ``rule`` follows on this node: an alert needs the tail of all of them together."""
        return self._per_node.get((cluster, node, rule), 0)

    def detector(self, cluster: str, node: str, series: str) -> AnomalyDetector | None:
        """The detector following one series (None if it is not followed)."""
        st = self._series.get((cluster, node, series))
        return None if st is None else st.detector

    def __len__(self) -> int:
        return len(self._series)

    # ------------------------------------------------------------ input

    def on_metrics(self, batch: MetricBatch, now: float) -> Iterable[Emit]:
        self.stats.inputs += 1
        out: list[Emit] = []
        cluster, node, ts = batch.cluster, batch.node, batch.ts
        if not self.replaying and now - ts > self.late_after_s:
            self.stats.inc("late_skipped", len(batch.samples))
            return out
        for sample in batch.samples:
            idx = self._family_index(sample.name)
            if idx is None:
                continue
            series = sample.series()
            key = (cluster, node, series)
            st = self._series.get(key)
            if st is None:
                if not self.limiter.seen(cluster, node, series, now):
                    self.stats.inc("series_refused")
                    continue
                if self.limiter.evicted:
                    out.extend(self._drop_evicted(ts))
                st = self._series[key] = _Series(idx, self.families[idx].build(), window=deque(maxlen=self.window_points))
                self._count(cluster, node, idx, +1)
            else:
                self.limiter.seen(cluster, node, series, now)
            if ts <= st.last_ts:
                self.stats.late += 1
                continue
            fam = self.families[st.family]
            x = sample.value
            det = st.detector
            gap = False
            if math.isfinite(st.last_ts):
                dt = ts - st.last_ts
                gap = dt > GAP_FACTOR * st.interval_s
                if gap:
                    det.break_sequence()
                    st.grace = GRACE_POINTS
                    self.stats.inc("gaps")
                if math.isinf(st.interval_s):
                    st.interval_s = dt
                else:  # slow and clipped: one odd step (a restart, an outage) cannot redefine the usual interval
                    st.interval_s += INTERVAL_ALPHA * (min(dt, 2 * GAP_FACTOR * st.interval_s) - st.interval_s)
            if fam.counter:
                prev, prev_ts = st.last_raw, st.last_ts
                st.last_raw, st.last_ts = x, ts
                if prev is None or gap:
                    continue
                if x < prev:
                    self.stats.inc("counter_resets")
                    continue
                x = (x - prev) / (ts - prev_ts)
            st.last_ts = ts
            if st.grace > 0:
                st.grace -= 1
                st.quiet, st.run = min(st.quiet + 1, _QUIET_MAX), 0
                det.learn_quietly(x, ts)
                st.window.append((ts, x))
                continue
            score = det.score_one(x, ts)
            if self.on_score is not None:  # backtests record every score
                self.on_score(key, ts, x, score)
            # normal as it was before this point, whenever its raw score may reach the threshold (a resting score is 0)
            before = det.baseline() if score >= det.threshold or det.active else None
            det.learn_one(x, ts)
            st.window.append((ts, x))
            m = self._per_node.get((cluster, node, fam.rule), 1) if self.node_budget else 1
            raw = getattr(det, "last_raw", score)  # the episode logic below needs detections during the rest too
            st.run = st.run + 1 if node_score(raw, m) >= det.threshold else 0
            if st.run == 1:
                st.before = before  # a sustained alert shows the normal from before its first sample
            elif st.run == 0:
                st.before = None
            st.quiet = 0 if st.run >= fam.sustained else min(st.quiet + 1, _QUIET_MAX)
            out.extend(self._alert(fam, det, cluster, node, series, ts, x, score, st.before or before, m))
        self.stats.outputs += len(out)
        return out

    def _alert(
        self,
        fam: MetricFamily,
        det: AnomalyDetector,
        cluster: str,
        node: str,
        series: str,
        ts: float,
        x: float,
        score: float,
        before: dict[str, float] | None,
        m: int,
    ) -> list[Emit]:
        tracker = self._trackers[fam.rule]
        st = self._series[(cluster, node, series)]
        rest = getattr(det, "rest", None)
        active = st.quiet < rest if isinstance(rest, int) else det.active  # RestPeriod's episode, at the node's tail
        if st.joined:  # part of an incident another series of this node already alerted on
            st.joined = active
            return []
        if active == tracker.is_firing(cluster, node, series):
            return []  # no transition: skip building details
        inc = (cluster, node, fam.rule)
        if active:
            lead = self._leaders.get(inc)
            if lead is not None and lead != series and tracker.is_firing(cluster, node, lead):
                st.joined = True  # the node's open incident: one alert for the series that go anomalous together
                joined = self._joined.setdefault(inc, [])
                if len(joined) < MAX_JOINED:
                    joined.append(series)
                self.stats.inc("incident_joined")
                return []
        raw = getattr(det, "last_raw", score)
        window = list(st.window)
        details = {
            "score": round(raw, 6),
            "node_score": round(node_score(raw, m), 6),
            "series_on_node": m,
            "detector": det.name,
            "baseline": {k: round(v, 6) for k, v in (before or det.baseline()).items() if math.isfinite(v)},
            "window": {"start": window[0][0], "end": window[-1][0], "values": [round(v, 6) for _, v in window]},
        }
        if active:
            summary = (
                f"{series} on {cluster}/{node} is anomalous (score {raw:.6f}, node score {node_score(raw, m):.4f} over {m} series"
                f" >= {det.threshold:g}), value {x:g}"
            )
        else:
            summary = f"{series} on {cluster}/{node} is back to normal, value {x:g}"
            if self._leaders.get(inc) == series:
                del self._leaders[inc]
                details["joined"] = self._joined.pop(inc, [])
        out = tracker.update(
            cluster, node, active, ts, x, series=series, metric=series, threshold=det.threshold, summary=summary, details=details
        )
        if active and out:
            self._leaders[inc] = series
        return out

    def _forget_leader(self, inc: tuple[str, str, str], series: str) -> None:
        """A dropped series no longer speaks for its node's incident."""
        if self._leaders.get(inc) == series:
            del self._leaders[inc]
            self._joined.pop(inc, None)

    def _drop_evicted(self, ts: float) -> list[Emit]:
        """Drop the series the limiter evicted to make room, resolving their open alerts."""
        out: list[Emit] = []
        for c, n, s in self.limiter.pop_evicted():
            st = self._series.pop((c, n, s), None)  # type: ignore[arg-type]
            if st is None:
                continue
            self._count(c, n, st.family, -1)  # type: ignore[arg-type]
            self.stats.inc("series_evicted")
            tracker = self._trackers[self.families[st.family].rule]
            if tracker.is_firing(c, n, s):  # type: ignore[arg-type]
                out.extend(tracker.expire(c, n, ts, f"{s} on {c}/{n} was evicted by the cardinality limit", series=s))  # type: ignore[arg-type]
            self._forget_leader((c, n, tracker.rule), s)  # type: ignore[arg-type]
        return out

    def on_tick(self, now: float) -> Iterable[Emit]:
        """Drop series silent for ``series_ttl_s``, resolving their open alerts; publish cardinality alerts."""
        out: list[Emit] = self.limiter.alerts(now)
        ttl, short, few = self.series_ttl_s, min(FEW_POINTS_TTL_S, self.series_ttl_s), min(FEW_POINTS, self.window_points)
        stale = [
            k for k, st in self._series.items()
            if now - st.last_ts > ttl or (len(st.window) < few and now - st.last_ts > short)
        ]
        for key in stale:
            self.limiter.forget(*key)
            st = self._series.pop(key)
            self._count(key[0], key[1], st.family, -1)
            tracker = self._trackers[self.families[st.family].rule]
            if tracker.is_firing(*key):
                out.extend(tracker.expire(key[0], key[1], now, f"{key[2]} on {key[0]}/{key[1]} went silent", series=key[2]))
            self._forget_leader((key[0], key[1], tracker.rule), key[2])
        if stale:
            self.stats.inc("series_expired", len(stale))
        self.stats.outputs += len(out)
        return out

    # ------------------------------------------------------------ state

    def snapshot(self) -> Any:
        return {
            "series": [
                [c, n, s, self.families[st.family].pattern, st.last_ts, st.last_raw, st.detector.snapshot(), [list(p) for p in st.window], st.quiet, st.run, st.joined]
                for (c, n, s), st in self._series.items()
            ],
            "trackers": {rule: t.snapshot() for rule, t in self._trackers.items()},
            "cardinality": self.limiter.snapshot(),
        }

    def restore(self, state: Any) -> None:
        state = state or {}
        self._series = {}
        self._per_node = {}
        lim = self.limiter
        self.limiter = CardinalityLimiter(self.name, lim.max_per_node, lim.max_per_cluster, idle_s=lim.idle_s, quiet_s=lim.quiet_s)
        patterns = {fam.pattern: i for i, fam in enumerate(self.families)}
        for c, n, s, pattern, last_ts, last_raw, det_state, window, *more in state.get("series", []):
            idx = patterns.get(pattern)
            if idx is None or not self.limiter.seen(c, n, s, last_ts):
                continue  # the family is gone from the configuration (or over the limits): start over
            det = self.families[idx].build()
            try:
                det.restore(det_state)
            except (KeyError, TypeError, ValueError, IndexError, AttributeError) as exc:
                # a checkpoint this detector cannot read: learn the series afresh rather than fail the restart
                log.warning("anomaly: checkpoint state of %s/%s/%s unreadable (%s); starting it fresh", c, n, s, exc)
                det = self.families[idx].build()
            st = self._series[(c, n, s)] = _Series(idx, det, last_ts, last_raw, window=deque((tuple(p) for p in window), maxlen=self.window_points))
            # checkpoints from before the node budget: the detector's own episode state
            st.quiet = int(more[0]) if more else int(getattr(det, "since_hit", _QUIET_MAX))
            st.run = int(more[1]) if len(more) > 1 else 0
            st.joined = bool(more[2]) if len(more) > 2 else False
            self._count(c, n, idx, +1)
        self._leaders, self._joined = {}, {}
        for rule, t in self._trackers.items():
            t.restore(state.get("trackers", {}).get(rule))
            for c, n, s in t.firing():
                self._leaders.setdefault((c, n, rule), s)
        self.limiter.restore(state.get("cardinality"))
