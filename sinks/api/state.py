"""FleetState: what the API, the dashboard and /metrics show, all of it bounded.

Fed by ``apply_*`` calls (from the live NATS feed and the DERIVED backfill).
Every ``apply_*`` is idempotent, so a message seen twice (backfill overlapping
the live feed, a redelivery) changes nothing the second time.
"""
from __future__ import annotations

import math
import time
from array import array
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Any

from processors.cardinality import CardinalityLimiter
from schemas import Alert, AlertKind, AlertStatus, HealthScore, MetricBatch, Severity, TrustScore, WindowAggregate, series_key
from schemas.codec import to_builtins

DEFAULT_MAX_NODES = 10_000
DEFAULT_MAX_SERIES_PER_NODE = 256  # latest values and aggregates kept per node
DEFAULT_HISTORY_POINTS = 360  # aggregate points kept per series (an hour of 10 s windows)
DEFAULT_MAX_HISTORY_SERIES = 50_000  # series with history over the whole fleet
DEFAULT_MAX_ACTIVE_ALERTS = 10_000
DEFAULT_RECENT_ALERTS = 1_000
DEFAULT_HEALTH_POINTS = 1_440  # health scores kept per cluster
DEFAULT_MAX_CLUSTERS = 1_000
DEFAULT_MAX_SELF_SERIES = 2_000
LATEST_IDLE_S = 300.0  # a node's latest value unseen this long (event time) gives way to a new series at the cap

STATUS_OK = "ok"
STATUS_WARNING = "warning"
STATUS_CRITICAL = "critical"
STATUS_UNRESPONSIVE = "unresponsive"
STATUSES = (STATUS_OK, STATUS_WARNING, STATUS_CRITICAL, STATUS_UNRESPONSIVE)
UNRESPONSIVE_RULES = frozenset({"node_unresponsive"})

# fleet-table columns: the first series present wins; labelled variants ({mount=/}) give their max
KEY_METRICS: dict[str, tuple[str, ...]] = {
    "cpu": ("cpu.percent",),
    "mem": ("mem.percent",),
    "disk": ("disk.percent",),
    "gpu": ("gpu.utilization_percent",),
    "net_rx": ("net.bytes_recv_per_s",),
    "net_tx": ("net.bytes_sent_per_s",),
    "latency": ("net.avg_latency_ms", "request.latency_ms", "latency_ms", "peer.latency_ms"),
}

_KEY_NAMES = frozenset(n for names in KEY_METRICS.values() for n in names)
_POINT_FIELDS = 7  # end, mean, min, max, p95, last, count
POINT_FIELDS = ("t", "mean", "min", "max", "p95", "last", "count")


SeriesId = tuple[str, tuple[tuple[str, str], ...]]
"""A series as (metric, sorted label pairs): the key everywhere in FleetState, never parsed back from text."""


def series_id(metric: str, labels: dict[str, str] | None) -> SeriesId:
    """``("disk.percent", (("mount", "/"),))``; labels sorted by key."""
    return (metric, tuple(sorted(labels.items())) if labels else ())


def metric_of(series: str) -> str:
    """``cpu.percent{core=0}`` -> ``cpu.percent`` (display strings only)."""
    i = series.find("{")
    return series if i < 0 else series[:i]


def series_text(sid: SeriesId) -> str:
    """Display form of a SeriesId, ``disk.percent{mount=/}`` (as :func:`schemas.series_key`), for JSON."""
    metric, pairs = sid
    return series_key(metric, dict(pairs))


def _number(v: Any) -> float | None:
    """A finite number from a loosely typed payload field, else None (so sorting and charts never see a string)."""
    if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
        return float(v)
    return None


def _text(v: Any) -> str | None:
    return v[:64] if isinstance(v, str) else None


class Ring:
    """Fixed-capacity history of aggregate points, oldest overwritten; times ascending."""

    __slots__ = ("cap", "buf", "head", "size")

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.buf = array("d", bytes(8 * _POINT_FIELDS * cap))
        self.head = 0  # next slot to write
        self.size = 0

    def last_t(self) -> float:
        if not self.size:
            return -math.inf
        i = (self.head - 1) % self.cap
        return self.buf[i * _POINT_FIELDS]

    def append(self, point: tuple[float, ...]) -> None:
        o = self.head * _POINT_FIELDS
        self.buf[o : o + _POINT_FIELDS] = array("d", point)
        self.head = (self.head + 1) % self.cap
        self.size = min(self.size + 1, self.cap)

    def points(self, since: float = -math.inf, until: float = math.inf) -> list[list[float]]:
        out: list[list[float]] = []
        start = (self.head - self.size) % self.cap
        b = self.buf
        for k in range(self.size):
            o = ((start + k) % self.cap) * _POINT_FIELDS
            t = b[o]
            if since <= t <= until:
                out.append(list(b[o : o + _POINT_FIELDS]))
        return out


@dataclass(slots=True)
class NodeState:
    """Everything known about one node."""

    cluster: str
    node: str
    last_seen: float = 0.0  # newest event time from metrics or aggregates, UNIX s
    latest: dict[SeriesId, float] = field(default_factory=dict)  # series -> newest sample value
    latest_t: dict[SeriesId, float] = field(default_factory=dict)  # series -> event time of that value (UNIX s)
    units: dict[str, str] = field(default_factory=dict)  # metric -> unit
    latest_ts: float = 0.0
    agg: dict[SeriesId, dict[str, float]] = field(default_factory=dict)  # series -> stats of the newest window
    agg_end: float = 0.0
    window_s: float = 0.0  # the window whose aggregates are kept (the finest seen)
    history: dict[SeriesId, Ring] = field(default_factory=dict)
    trust: TrustScore | None = None
    health: dict[str, Any] | None = None  # this node's entry of its cluster's HealthScore.nodes
    alerts: dict[str, Alert] = field(default_factory=dict)  # firing, by id

    def status(self) -> str:
        """ok / warning / critical / unresponsive, from the node's firing alerts."""
        worst = STATUS_OK
        for a in self.alerts.values():
            if a.rule in UNRESPONSIVE_RULES or a.kind == AlertKind.LIVENESS:
                return STATUS_UNRESPONSIVE
            if a.severity == Severity.CRITICAL:
                worst = STATUS_CRITICAL
            elif a.severity == Severity.WARNING and worst == STATUS_OK:
                worst = STATUS_WARNING
        return worst

    def key_values(self) -> dict[str, float | None]:
        """Fleet-table columns (KEY_METRICS): aggregate mean, else latest sample; max over label variants."""
        out: dict[str, float | None] = {}
        for src in (self.agg, self.latest):
            best: dict[str, float] = {}
            for s, v in src.items():
                m = s[0]
                if m in _KEY_NAMES:
                    x = v["mean"] if isinstance(v, dict) else v
                    if m not in best or x > best[m]:
                        best[m] = x
            for col, names in KEY_METRICS.items():
                if out.get(col) is None:
                    out[col] = next((best[n] for n in names if n in best), None)
        return out


@dataclass(slots=True)
class ClusterHealth:
    latest: HealthScore | None = None
    history: deque[tuple[float, float, dict[str, float]]] = field(default_factory=deque)


@dataclass(slots=True)
class Counters:
    """The API's own counters (exported on /metrics)."""

    messages: dict[str, int] = field(default_factory=dict)  # family -> messages applied
    invalid: int = 0
    refused_nodes: int = 0
    refused_series: int = 0
    refused_history_series: int = 0
    refused_alerts: int = 0
    evicted_history_series: int = 0  # idle history series that gave way to new ones (cardinality limit)
    evicted_latest_series: int = 0  # idle latest values that gave way to new series
    out_of_order: int = 0
    dlq: dict[str, int] = field(default_factory=dict)  # stage -> dead letters seen
    ws_dropped: int = 0
    ws_clients: int = 0
    auth_refused: dict[str, int] = field(default_factory=dict)  # reason (token, throttled, origin) -> requests refused

    def refuse(self, reason: str) -> None:
        self.auth_refused[reason] = self.auth_refused.get(reason, 0) + 1

    def count(self, family: str) -> None:
        self.messages[family] = self.messages.get(family, 0) + 1


class FleetState:
    """Latest values, status, trust, health and alerts for a fleet; every collection bounded."""

    def __init__(
        self,
        *,
        max_nodes: int = DEFAULT_MAX_NODES,
        max_series_per_node: int = DEFAULT_MAX_SERIES_PER_NODE,
        history_points: int = DEFAULT_HISTORY_POINTS,
        max_history_series: int = DEFAULT_MAX_HISTORY_SERIES,
        max_active_alerts: int = DEFAULT_MAX_ACTIVE_ALERTS,
        recent_alerts: int = DEFAULT_RECENT_ALERTS,
        health_points: int = DEFAULT_HEALTH_POINTS,
        max_clusters: int = DEFAULT_MAX_CLUSTERS,
    ) -> None:
        for name, v in (
            ("max_nodes", max_nodes),
            ("max_series_per_node", max_series_per_node),
            ("history_points", history_points),
            ("max_history_series", max_history_series),
            ("max_active_alerts", max_active_alerts),
            ("recent_alerts", recent_alerts),
            ("health_points", health_points),
            ("max_clusters", max_clusters),
        ):
            if v < 1:
                raise ValueError(f"{name} must be >= 1, got {v!r}")
        self.max_nodes = max_nodes
        self.max_series_per_node = max_series_per_node
        self.history_points = history_points
        self.max_history_series = max_history_series
        self.max_active_alerts = max_active_alerts
        self.health_points = health_points
        self.max_clusters = max_clusters
        self.nodes: dict[tuple[str, str], NodeState] = {}
        self.clusters: dict[str, ClusterHealth] = {}
        self.active_alerts: dict[str, Alert] = {}
        self.recent_alerts: deque[Alert] = deque(maxlen=recent_alerts)
        self._resolved_ids: OrderedDict[str, None] = OrderedDict()
        self._history_series = 0
        # history rings per node and per cluster: one node's flood of names cannot take the others' places
        self.history_limiter = CardinalityLimiter("api", max_series_per_node, max_history_series)
        self.self_metrics: dict[str, dict[SeriesId, float]] = {}  # component -> series -> value
        self.self_ts: dict[str, float] = {}
        self.counters = Counters()
        self.backfilling = False
        self.backfilled = 0

    # ---- nodes -------------------------------------------------------------

    def _node(self, cluster: str, node: str) -> NodeState | None:
        key = (cluster, node)
        st = self.nodes.get(key)
        if st is None:
            if len(self.nodes) >= self.max_nodes:
                self.counters.refused_nodes += 1
                return None
            st = self.nodes[key] = NodeState(cluster, node)
        return st

    def get_node(self, cluster: str, node: str) -> NodeState | None:
        return self.nodes.get((cluster, node))

    def apply_metrics(self, batch: MetricBatch) -> None:
        """Latest sample values of one node; newer batches overwrite, older ones are ignored."""
        self.counters.count("metrics")
        st = self._node(batch.cluster, batch.node)
        if st is None or batch.ts < st.latest_ts:
            return
        st.latest_ts = batch.ts
        st.last_seen = max(st.last_seen, batch.ts)
        latest, latest_t, ts = st.latest, st.latest_t, batch.ts
        swept = False
        for s in batch.samples:
            key = series_id(s.name, s.labels)
            if key not in latest and len(latest) >= self.max_series_per_node:
                if not swept:  # at the cap: series of this node unseen for LATEST_IDLE_S give way (once per batch)
                    swept = True
                    for k in [k for k, t in latest_t.items() if ts - t >= LATEST_IDLE_S]:
                        del latest[k], latest_t[k]
                        self.counters.evicted_latest_series += 1
                if len(latest) >= self.max_series_per_node:
                    self.counters.refused_series += 1
                    continue
            latest[key] = s.value
            latest_t[key] = ts
            if s.unit:
                st.units[s.name] = s.unit

    def apply_agg(self, agg: WindowAggregate) -> bool:
        """Keep the finest window's aggregates as latest stats and history; True if it was used."""
        self.counters.count("agg")
        st = self._node(agg.cluster, agg.node)
        if st is None:
            return False
        if st.window_s and agg.window_s > st.window_s:
            return False  # a coarser window than the one kept
        if st.window_s and agg.window_s < st.window_s:
            self._history_series -= len(st.history)  # a finer window appeared: start over with it
            self.history_limiter.forget_node(agg.cluster, agg.node)
            st.history.clear()
            st.agg.clear()
            st.agg_end = 0.0
        st.window_s = agg.window_s
        st.last_seen = max(st.last_seen, agg.end)
        if agg.end <= st.agg_end:
            if agg.end < st.agg_end:
                self.counters.out_of_order += 1
            return False
        st.agg_end = agg.end
        st.agg = {}
        now = time.time()
        limiter = self.history_limiter
        for s in agg.series:
            key = series_id(s.metric, s.labels)
            if len(st.agg) >= self.max_series_per_node:
                self.counters.refused_series += 1
                continue
            st.agg[key] = {"mean": s.mean, "min": s.min, "max": s.max, "p95": s.p95, "last": s.last, "count": float(s.count)}
            if s.unit:
                st.units[s.metric] = s.unit
            ring = st.history.get(key)
            if not limiter.seen(agg.cluster, agg.node, key, now):
                self.counters.refused_history_series += 1
                continue
            if limiter.evicted:
                self._drop_evicted()
            if ring is None:
                if self._history_series >= self.max_history_series:
                    self.counters.refused_history_series += 1
                    limiter.forget(agg.cluster, agg.node, key)
                    continue
                ring = st.history[key] = Ring(self.history_points)
                self._history_series += 1
            if agg.end > ring.last_t():
                ring.append((agg.end, s.mean, s.min, s.max, s.p95, s.last, float(s.count)))
        return True

    def _drop_evicted(self) -> None:
        for c, n, key in self.history_limiter.pop_evicted():
            st = self.nodes.get((c, n))
            if st is not None and st.history.pop(key, None) is not None:  # type: ignore[call-overload]
                self._history_series -= 1
                self.counters.evicted_history_series += 1

    def apply_trust(self, score: TrustScore) -> None:
        self.counters.count("trust")
        st = self._node(score.cluster, score.node)
        if st is None:
            return
        if st.trust is None or (score.ts, score.round) >= (st.trust.ts, st.trust.round):
            st.trust = score

    # ---- clusters ----------------------------------------------------------

    def apply_health(self, score: HealthScore) -> bool:
        """A cluster health score; its per-node entries become the nodes' health. True if new."""
        self.counters.count("health")
        ch = self.clusters.get(score.cluster)
        if ch is None:
            if len(self.clusters) >= self.max_clusters:
                return False
            ch = self.clusters[score.cluster] = ClusterHealth(history=deque(maxlen=self.health_points))
        if ch.latest is not None and score.ts <= ch.latest.ts:
            return False
        ch.latest = score
        ch.history.append((score.ts, score.overall_health, dict(score.components)))
        for name, entry in score.nodes.items():
            st = self.nodes.get((score.cluster, name))
            if st is not None:
                st.health = entry if isinstance(entry, dict) else {"quality": entry}
        return True

    # ---- alerts ------------------------------------------------------------

    def apply_alert(self, alert: Alert) -> bool:
        """Firing alerts become active until their resolved message; True if state changed."""
        self.counters.count("alerts")
        if alert.status == AlertStatus.RESOLVED:
            prev = self.active_alerts.pop(alert.id, None)
            if alert.id in self._resolved_ids:
                return False
            self._resolved_ids[alert.id] = None
            if len(self._resolved_ids) > 4 * self.max_active_alerts:
                self._resolved_ids.popitem(last=False)
            st = self.nodes.get((alert.cluster, alert.node))
            if st is not None:
                st.alerts.pop(alert.id, None)
            self.recent_alerts.append(alert)
            return True
        if alert.id in self._resolved_ids:
            return False  # a late duplicate of an episode already over
        if alert.id in self.active_alerts:
            self.active_alerts[alert.id] = alert
            return False
        if len(self.active_alerts) >= self.max_active_alerts:
            self.counters.refused_alerts += 1
            return False
        self.active_alerts[alert.id] = alert
        self.recent_alerts.append(alert)
        st = self._node(alert.cluster, alert.node)
        if st is not None:
            st.alerts[alert.id] = alert
        return True

    # ---- swarmwatch's own counters -------------------------------------------

    def apply_self(self, component: str, batch: MetricBatch) -> None:
        self.counters.count("self")
        cur = self.self_metrics.get(component)
        if cur is None:
            if sum(len(v) for v in self.self_metrics.values()) >= DEFAULT_MAX_SELF_SERIES:
                return
            cur = self.self_metrics[component] = {}
        if batch.ts < self.self_ts.get(component, 0.0):
            return
        self.self_ts[component] = batch.ts
        for s in batch.samples:
            key = series_id(s.name, s.labels)
            if key in cur or len(cur) < DEFAULT_MAX_SELF_SERIES:
                cur[key] = s.value

    def apply_dlq(self, stage: str) -> None:
        self.counters.count("dlq")
        self.counters.dlq[stage] = self.counters.dlq.get(stage, 0) + 1

    # ---- views (plain dicts for JSON) ------------------------------------------

    def node_summary(self, st: NodeState) -> dict[str, Any]:
        """One fleet-table row."""
        row: dict[str, Any] = {
            "cluster": st.cluster,
            "node": st.node,
            "status": st.status(),
            "last_seen": st.last_seen or None,
            "trust": None if st.trust is None else round(st.trust.trust, 4),
            "health": _number(None if st.health is None else st.health.get("quality")),
            "connection": _text(None if st.health is None else st.health.get("status")),
            "alerts": len(st.alerts),
        }
        for col, v in st.key_values().items():
            row[col] = None if v is None else round(v, 3)
        return row

    def node_detail(self, st: NodeState) -> dict[str, Any]:
        out = self.node_summary(st)
        out.update(
            latest={series_text(k): v for k, v in st.latest.items()},
            latest_ts=st.latest_ts or None,
            aggregates={series_text(k): v for k, v in st.agg.items()},
            window_s=st.window_s or None,
            agg_end=st.agg_end or None,
            units=dict(st.units),
            trust_detail=None if st.trust is None else to_builtins(st.trust),
            health_detail=st.health,
            active_alerts=[to_builtins(a) for a in st.alerts.values()],
            history_series=sorted(series_text(k) for k in st.history),
        )
        return out

    def history(
        self, st: NodeState, metrics: list[str], since: float = -math.inf, until: float = math.inf
    ) -> dict[str, list[list[float]]]:
        """Points per series for each name in ``metrics`` (a metric name matches all its label variants)."""
        out: dict[str, list[list[float]]] = {}
        wanted = set(metrics)
        for key, ring in st.history.items():
            if key[0] in wanted:
                out[series_text(key)] = ring.points(since, until)
            else:
                text = series_text(key)
                if text in wanted:
                    out[text] = ring.points(since, until)
        return out

    def alerts_view(self, active: bool | None = None, limit: int = 500) -> list[dict[str, Any]]:
        """Active alerts (newest first), recent alert events, or both (active first)."""
        if active is True:
            items = sorted(self.active_alerts.values(), key=lambda a: a.started_at, reverse=True)
        elif active is False:
            items = list(reversed(self.recent_alerts))
        else:
            seen: set[tuple[str, str]] = set()
            items = []
            for a in [*sorted(self.active_alerts.values(), key=lambda a: a.started_at, reverse=True), *reversed(self.recent_alerts)]:
                k = (a.id, a.status.value)
                if k not in seen:
                    seen.add(k)
                    items.append(a)
        return [to_builtins(a) for a in items[:limit]]

    def health_view(self, cluster: str, since: float = -math.inf, until: float = math.inf) -> dict[str, Any] | None:
        ch = self.clusters.get(cluster)
        if ch is None or ch.latest is None:
            return None
        latest = to_builtins(ch.latest)
        latest.pop("nodes", None)
        return {
            "cluster": cluster,
            "latest": latest,
            "history": [{"ts": t, "overall_health": h, "components": c} for t, h, c in ch.history if since <= t <= until],
        }

    def fleet_counts(self) -> dict[str, Any]:
        counts = dict.fromkeys(STATUSES, 0)
        for st in self.nodes.values():
            counts[st.status()] += 1
        return {
            "nodes": len(self.nodes),
            "clusters": sorted({c for c, _ in self.nodes} | set(self.clusters)),
            "status": counts,
            "active_alerts": len(self.active_alerts),
            "health": {c: ch.latest.overall_health for c, ch in self.clusters.items() if ch.latest is not None},
        }
