"""Network health: connection quality per peer pair and node, peer status, cluster health.

``NetworkHealthOperator`` reads the probe figures producers publish
(``producers.probes``: ``peer.*`` samples labelled ``peer=<node>`` and the
node-level ``net.*`` samples) and the discovery events (``peer.join``,
``peer.leave``, ``heartbeat``) and publishes a :class:`schemas.HealthScore`
on ``sw.health.<cluster>`` every ``emit_interval_s``.

Connection quality (0-100) of one pair ``src -> peer``::

    latency_score = ramp(latency_ms,  good=50,  bad=500)
    jitter_score  = ramp(jitter_ms,   good=5,   bad=100)
    loss_score    = ramp(loss_percent, good=0,  bad=25)
    quality = 0.4 * latency_score + 0.2 * jitter_score + 0.4 * loss_score

where ``ramp(x, good, bad)`` is 100 at or below ``good``, 0 at or above ``bad``
and linear between. A pair with no successful probe in its window has quality 0.
Trend: the mean of the newer half of the last 10 qualities minus
the mean of the older half; above +``trend_delta`` is ``improving``, below
-``trend_delta`` is ``degrading``, otherwise ``stable``.

Peer status: ``disconnected`` when ``consecutive_failures >= disconnect_after``
or no probe in the window succeeded; ``degraded`` when quality < ``connected_min``
(70); otherwise ``connected``. A node's quality is the mean quality of the pairs
*towards* it (how well its peers reach it), or of its own pairs when nobody probes it;
its status follows the same thresholds, and it is ``disconnected`` when it has been
silent longer than ``stale_after_s`` or every pair towards it is disconnected.

Cluster health (0-100) is a weighted mean of component scores (each 0-100)::

    peers      = 100 * min(1, peer_count / expected_peers)            weight 0.35
    success    = 100 * connection_success_rate                         weight 0.35
    latency    = ramp(avg_latency_ms, good=50, bad=500)                 weight 0.20
    bandwidth  = ramp(bandwidth_mbps / capacity_mbps, good=0.7, bad=1.0) weight 0.10

``peer_count`` counts the nodes heard from within ``stale_after_s`` that have not
left; ``expected_peers`` is the configured figure for the cluster or, when none
is given, the nodes known and not departed (a clean ``peer.leave`` lowers it, a
crash does not). ``connection_success_rate``, ``avg_latency`` (ms) and
``bandwidth_usage`` (Mbit/s per node) are means over the live nodes' ``net.*``
figures (bandwidth is ``net.bandwidth_mbps``, or else the sidecar's
``net.bytes_sent_per_s + net.bytes_recv_per_s`` in Mbit/s). A component without
inputs (no latency yet, no ``capacity_mbps`` configured) is left out and the
remaining weights are rescaled to sum to 1.

A node whose ``net.connection_success_rate`` is below 0.8 raises
``connection_success_low`` (kind ``network``, warning); it resolves when the
rate is back at or above the threshold, or the node leaves.
"""
from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from schemas import AlertKind, Event, HealthScore, MetricBatch, Severity, subjects

from processors.alerting import AlertTracker
from processors.operator import Emit, Operator

SUCCESS_RULE = "connection_success_low"
LEAVE_KIND = "peer.leave"

QUALITY_WEIGHTS: dict[str, float] = {"latency": 0.4, "jitter": 0.2, "loss": 0.4}
LATENCY_GOOD_MS, LATENCY_BAD_MS = 50.0, 500.0
JITTER_GOOD_MS, JITTER_BAD_MS = 5.0, 100.0
LOSS_GOOD_PCT, LOSS_BAD_PCT = 0.0, 25.0
HEALTH_WEIGHTS: dict[str, float] = {"peers": 0.35, "success": 0.35, "latency": 0.20, "bandwidth": 0.10}
BANDWIDTH_GOOD_UTIL, BANDWIDTH_BAD_UTIL = 0.7, 1.0

CONNECTED, DEGRADED, DISCONNECTED = "connected", "degraded", "disconnected"
IMPROVING, DEGRADING, STABLE = "improving", "degrading", "stable"

DEFAULT_EMIT_INTERVAL_S = 5.0  # seconds between HealthScores per cluster
DEFAULT_STALE_AFTER_S = 60.0  # a node silent this long is not counted as a live peer
DEFAULT_CONNECTED_MIN = 70.0  # quality at or above: connected
DEFAULT_DISCONNECT_AFTER = 3  # consecutive failed probes: disconnected
DEFAULT_SUCCESS_THRESHOLD = 0.8  # connection success rate below this raises an alert
DEFAULT_TREND_POINTS = 10
DEFAULT_TREND_DELTA = 5.0  # quality points
DEFAULT_MAX_NODES = 10_000  # nodes over all clusters
DEFAULT_MAX_PAIRS_PER_NODE = 256
DEFAULT_REPORT_PAIRS = 32  # worst pairs per node listed in HealthScore.nodes
DEFAULT_REPORT_PAIR_BUDGET = 2000  # pairs listed over the whole HealthScore (keeps it well under 1 MB)
DEFAULT_REPORT_NODES = 1000  # nodes listed in HealthScore.nodes, worst first
_STATUS_RANK = {"disconnected": 0, "degraded": 1, "connected": 2}
DEFAULT_FORGET_AFTER_S = 86_400.0  # silent nodes are dropped from state after this long


def ramp(x: float, good: float, bad: float) -> float:
    """100 at or below ``good``, 0 at or above ``bad``, linear between."""
    if x <= good:
        return 100.0
    if x >= bad:
        return 0.0
    return 100.0 * (bad - x) / (bad - good)


def connection_quality(latency_ms: float | None, jitter_ms: float | None, loss_percent: float | None) -> float:
    """Quality 0-100 of one connection; see the module docstring for the formula."""
    if latency_ms is None or (loss_percent is not None and loss_percent >= 100.0):
        return 0.0
    lat = ramp(latency_ms, LATENCY_GOOD_MS, LATENCY_BAD_MS)
    jit = ramp(jitter_ms or 0.0, JITTER_GOOD_MS, JITTER_BAD_MS)
    loss = ramp(loss_percent or 0.0, LOSS_GOOD_PCT, LOSS_BAD_PCT)
    w = QUALITY_WEIGHTS
    return w["latency"] * lat + w["jitter"] * jit + w["loss"] * loss


def trend_of(points: Iterable[float], delta: float = DEFAULT_TREND_DELTA) -> str:
    """``improving``/``degrading``/``stable`` from newer-half mean minus older-half mean."""
    pts = list(points)
    if len(pts) < 4:
        return STABLE
    half = len(pts) // 2
    older, newer = pts[: len(pts) - half], pts[len(pts) - half :]
    d = sum(newer) / len(newer) - sum(older) / len(older)
    if d > delta:
        return IMPROVING
    if d < -delta:
        return DEGRADING
    return STABLE


@dataclass(slots=True)
class _Pair:
    via: str = "nats"
    updated: float = 0.0
    latency_ms: float | None = None
    jitter_ms: float | None = None
    loss_percent: float | None = None
    success_rate: float | None = None
    consecutive_failures: float = 0.0
    quality: float = 0.0
    history: deque[float] = field(default_factory=lambda: deque(maxlen=DEFAULT_TREND_POINTS))


@dataclass(slots=True)
class _Node:
    last_seen: float
    departed: bool = False
    peer_count: float | None = None
    success_rate: float | None = None
    avg_latency_ms: float | None = None
    bandwidth_mbps: float | None = None
    pairs: dict[str, _Pair] = field(default_factory=dict)
    history: deque[float] = field(default_factory=lambda: deque(maxlen=DEFAULT_TREND_POINTS))


_NODE_FIELDS = {
    "net.peer_count": "peer_count",
    "net.connection_success_rate": "success_rate",
    "net.avg_latency_ms": "avg_latency_ms",
    "net.bandwidth_mbps": "bandwidth_mbps",
}
_IO_RATES = ("net.bytes_sent_per_s", "net.bytes_recv_per_s")  # B/s, from producers.collectors
_PAIR_FIELDS = {
    "peer.latency_ms": "latency_ms",
    "peer.jitter_ms": "jitter_ms",
    "peer.loss_percent": "loss_percent",
    "peer.success_rate": "success_rate",
    "peer.consecutive_failures": "consecutive_failures",
}


class NetworkHealthOperator(Operator):
    """Connection quality, peer status and a 0-100 health score per cluster.

    ``expected_peers``: nodes expected per cluster, as one int for every cluster or
    a mapping cluster -> int; None derives it from the nodes seen.
    ``capacity_mbps``: per-node link capacity for the bandwidth component; None leaves it out.
    ``emit_interval_s``: HealthScore period per cluster (msg id from cluster and period).
    ``stale_after_s``: silence after which a node no longer counts as a live peer.
    ``success_threshold``/``success_for_s``: the connection success alert.
    ``report_pairs``/``report_pair_budget``: the worst pairs listed per node and in all,
    so a large cluster's HealthScore stays small (the rest are counted in ``peers_omitted``);
    ``report_nodes``: the worst nodes listed (the score still covers every node).
    """

    name = "network_health"
    wants_metrics = True
    event_kinds = ("peer", "heartbeat")

    def __init__(
        self,
        *,
        expected_peers: int | Mapping[str, int] | None = None,
        capacity_mbps: float | None = None,
        emit_interval_s: float = DEFAULT_EMIT_INTERVAL_S,
        stale_after_s: float = DEFAULT_STALE_AFTER_S,
        connected_min: float = DEFAULT_CONNECTED_MIN,
        disconnect_after: int = DEFAULT_DISCONNECT_AFTER,
        success_threshold: float = DEFAULT_SUCCESS_THRESHOLD,
        success_for_s: float = 0.0,
        trend_delta: float = DEFAULT_TREND_DELTA,
        max_nodes: int = DEFAULT_MAX_NODES,
        max_pairs_per_node: int = DEFAULT_MAX_PAIRS_PER_NODE,
        report_pairs: int = DEFAULT_REPORT_PAIRS,
        report_pair_budget: int = DEFAULT_REPORT_PAIR_BUDGET,
        report_nodes: int = DEFAULT_REPORT_NODES,
        forget_after_s: float = DEFAULT_FORGET_AFTER_S,
    ) -> None:
        super().__init__()
        if not emit_interval_s > 0:
            raise ValueError(f"emit_interval_s must be > 0 seconds, got {emit_interval_s!r}")
        if not stale_after_s > 0:
            raise ValueError(f"stale_after_s must be > 0 seconds, got {stale_after_s!r}")
        if capacity_mbps is not None and not capacity_mbps > 0:
            raise ValueError(f"capacity_mbps must be > 0 Mbit/s, got {capacity_mbps!r}")
        if not 0.0 < success_threshold <= 1.0:
            raise ValueError(f"success_threshold must be in (0, 1], got {success_threshold!r}")
        if not 0.0 <= connected_min <= 100.0:
            raise ValueError(f"connected_min must be a quality in 0-100, got {connected_min!r}")
        if disconnect_after < 1:
            raise ValueError(f"disconnect_after must be >= 1 probe, got {disconnect_after!r}")
        if isinstance(expected_peers, int) and expected_peers < 1:
            raise ValueError(f"expected_peers must be >= 1, got {expected_peers!r}")
        self.expected_peers = expected_peers
        self.capacity_mbps = capacity_mbps
        self.emit_interval_s = float(emit_interval_s)
        self.tick_interval_s = min(1.0, self.emit_interval_s)
        self.stale_after_s = float(stale_after_s)
        self.connected_min = float(connected_min)
        self.disconnect_after = int(disconnect_after)
        self.success_threshold = float(success_threshold)
        self.trend_delta = float(trend_delta)
        self.max_nodes = int(max_nodes)
        self.max_pairs_per_node = int(max_pairs_per_node)
        self.report_pairs = int(report_pairs)
        self.report_pair_budget = int(report_pair_budget)
        self.report_nodes = int(report_nodes)
        self.forget_after_s = max(float(forget_after_s), self.stale_after_s)
        self.success_tracker = AlertTracker(
            SUCCESS_RULE, kind=AlertKind.NETWORK, severity=Severity.WARNING, for_s=success_for_s, max_keys=max_nodes
        )
        self._clusters: dict[str, dict[str, _Node]] = {}
        self._last_bucket: dict[str, int] = {}
        self._n_nodes = 0

    # --- inputs -------------------------------------------------------------
    def _node(self, cluster: str, node: str, now: float) -> _Node | None:
        nodes = self._clusters.get(cluster)
        if nodes is None:
            nodes = self._clusters[cluster] = {}
        st = nodes.get(node)
        if st is None:
            if self._n_nodes >= self.max_nodes:
                self.stats.inc("refused_nodes")
                self.stats.dropped += 1
                return None
            st = nodes[node] = _Node(now)
            self._n_nodes += 1
        return st

    def on_metrics(self, batch: MetricBatch, now: float) -> Iterable[Emit]:
        self.stats.inputs += 1
        st = self._node(batch.cluster, batch.node, now)
        if st is None:
            return []
        st.last_seen = max(st.last_seen, now)
        st.departed = False
        nodes = self._clusters[batch.cluster]
        touched: dict[str, _Pair] = {}
        refused: set[str] = set()
        got_rate = got_bw = False
        io_bytes_per_s: list[float] = []
        for s in batch.samples:
            attr = _NODE_FIELDS.get(s.name)
            if attr is not None:
                setattr(st, attr, s.value)
                got_rate |= attr == "success_rate"
                got_bw |= attr == "bandwidth_mbps"
                continue
            if s.name in _IO_RATES:
                io_bytes_per_s.append(s.value)
                continue
            attr = _PAIR_FIELDS.get(s.name)
            if attr is None or not s.labels or "peer" not in s.labels:
                continue
            peer = s.labels["peer"]
            other = nodes.get(peer)
            if peer == batch.node or peer in refused or (other is not None and other.departed):
                continue  # a probe result racing the peer's clean leave
            pair = touched.get(peer)
            if pair is None:
                pair = st.pairs.get(peer)
                if pair is None:
                    if len(st.pairs) >= self.max_pairs_per_node:
                        self.stats.inc("refused_pairs")
                        refused.add(peer)
                        continue
                    pair = st.pairs[peer] = _Pair(via=s.labels.get("via", "nats"))
                # A batch carries the whole current figure of a pair: clear what it may omit.
                pair.latency_ms = pair.jitter_ms = None
                touched[peer] = pair
            setattr(pair, attr, s.value)
        if not got_bw and len(io_bytes_per_s) == len(_IO_RATES):
            st.bandwidth_mbps = sum(io_bytes_per_s) * 8 / 1e6  # the sidecar's interface counters
        for pair in touched.values():
            pair.updated = now
            pair.quality = connection_quality(pair.latency_ms, pair.jitter_ms, pair.loss_percent)
            pair.history.append(pair.quality)
        out: list[Emit] = []
        if got_rate and st.success_rate is not None:
            rate = st.success_rate
            out += self.success_tracker.update(
                batch.cluster,
                batch.node,
                rate < self.success_threshold,
                now,
                round(rate, 4),
                metric="net.connection_success_rate",
                threshold=self.success_threshold,
                summary=f"connection success rate of {batch.cluster}/{batch.node} is {rate:.0%} "
                f"(threshold {self.success_threshold:.0%})",
            )
        self.stats.outputs += len(out)
        return out

    def on_event(self, event: Event, now: float) -> Iterable[Emit]:
        self.stats.inputs += 1
        st = self._node(event.cluster, event.node, now)
        if st is None:
            return []
        st.last_seen = max(st.last_seen, now)
        if event.kind != LEAVE_KIND:
            st.departed = False
            return []
        # A clean leave: forget the node's connections and everyone's connections to it.
        st.departed = True
        st.pairs.clear()
        st.history.clear()
        st.peer_count = st.success_rate = st.avg_latency_ms = st.bandwidth_mbps = None
        for other in self._clusters[event.cluster].values():
            other.pairs.pop(event.node, None)
        self.stats.inc("departures")
        out = self.success_tracker.expire(event.cluster, event.node, now, summary=f"{event.cluster}/{event.node} left cleanly")
        self.stats.outputs += len(out)
        return out

    # --- scoring --------------------------------------------------------------
    def pair_status(self, pair: _Pair) -> str:
        if pair.consecutive_failures >= self.disconnect_after or pair.latency_ms is None:
            return DISCONNECTED
        if pair.quality < self.connected_min:
            return DEGRADED
        return CONNECTED

    def _live(self, st: _Node, now: float) -> bool:
        return not st.departed and now - st.last_seen <= self.stale_after_s

    def _expected(self, cluster: str, known: int) -> int:
        e = self.expected_peers
        if isinstance(e, int):
            return e
        if isinstance(e, Mapping) and cluster in e:
            return int(e[cluster])
        return known

    def health(self, cluster: str, now: float) -> HealthScore | None:
        """The cluster's HealthScore at ``now`` (None when nothing is known of it)."""
        nodes = self._clusters.get(cluster)
        if not nodes:
            return None
        live = {n: st for n, st in nodes.items() if self._live(st, now)}
        known = sum(1 for st in nodes.values() if not st.departed)
        if known == 0:
            return None
        expected = self._expected(cluster, known)

        # Pairs from live sources only: a dead node's last figures say nothing now.
        inbound: dict[str, list[tuple[str, _Pair]]] = {}
        for src, st in live.items():
            for peer, pair in st.pairs.items():
                if now - pair.updated <= self.stale_after_s:
                    inbound.setdefault(peer, []).append((src, pair))

        report: dict[str, Any] = {}
        per_node_pairs = max(1, min(self.report_pairs, self.report_pair_budget // max(1, known)))
        for name, st in sorted(nodes.items()):
            if st.departed:
                continue
            ins = inbound.get(name, [])
            outs = [(p, pair) for p, pair in st.pairs.items() if now - pair.updated <= self.stale_after_s] if name in live else []
            if ins:
                quality = sum(p.quality for _, p in ins) / len(ins)
            elif outs:
                quality = sum(p.quality for _, p in outs) / len(outs)
            else:
                quality = None
            if name not in live:
                status = DISCONNECTED
            elif ins and all(self.pair_status(p) == DISCONNECTED for _, p in ins):
                status = DISCONNECTED
            elif quality is not None and quality < self.connected_min:
                status = DEGRADED
            else:
                status = CONNECTED
            entry: dict[str, Any] = {
                "status": status,
                "silent_s": round(max(0.0, now - st.last_seen), 3),
            }
            if quality is not None:
                entry["quality"] = round(quality, 2)
                entry["trend"] = trend_of([*st.history, quality], self.trend_delta)
            if outs:
                entry["outbound_quality"] = round(sum(p.quality for _, p in outs) / len(outs), 2)
            for key, attr in (
                ("peer_count", "peer_count"),
                ("connection_success_rate", "success_rate"),
                ("avg_latency_ms", "avg_latency_ms"),
                ("bandwidth_mbps", "bandwidth_mbps"),
            ):
                v = getattr(st, attr)
                if v is not None and name in live:
                    entry[key] = round(v, 4)
            if outs:
                worst = sorted(outs, key=lambda kv: kv[1].quality)[:per_node_pairs]
                entry["peers"] = {p: self._pair_report(pair) for p, pair in worst}
                if len(outs) > len(worst):
                    entry["peers_omitted"] = len(outs) - len(worst)
            report[name] = entry
        if len(report) > self.report_nodes:
            # Keep the worst nodes: disconnected, then degraded, then lowest quality.
            keep = sorted(report, key=lambda n: (_STATUS_RANK[report[n]["status"]], report[n].get("quality", 0.0), n))
            report = {n: report[n] for n in sorted(keep[: self.report_nodes])}

        rates = [st.success_rate for st in live.values() if st.success_rate is not None]
        lats = [st.avg_latency_ms for st in live.values() if st.avg_latency_ms is not None]
        bws = [st.bandwidth_mbps for st in live.values() if st.bandwidth_mbps is not None]
        success = sum(rates) / len(rates) if rates else None
        avg_lat = sum(lats) / len(lats) if lats else None
        bw = sum(bws) / len(bws) if bws else None

        components: dict[str, float] = {"peers": 100.0 * min(1.0, len(live) / expected) if expected > 0 else 100.0}
        if success is not None:
            components["success"] = 100.0 * max(0.0, min(1.0, success))
        if avg_lat is not None:
            components["latency"] = ramp(avg_lat, LATENCY_GOOD_MS, LATENCY_BAD_MS)
        if bw is not None and self.capacity_mbps is not None:
            components["bandwidth"] = ramp(bw / self.capacity_mbps, BANDWIDTH_GOOD_UTIL, BANDWIDTH_BAD_UTIL)
        wsum = sum(HEALTH_WEIGHTS[k] for k in components)
        overall = sum(HEALTH_WEIGHTS[k] * v for k, v in components.items()) / wsum
        return HealthScore(
            cluster=cluster,
            ts=now,
            overall_health=round(overall, 1),
            peer_count=len(live),
            expected_peers=expected,
            connection_success_rate=round(success, 4) if success is not None else 1.0,
            avg_latency=round(avg_lat, 3) if avg_lat is not None else 0.0,
            bandwidth_usage=round(bw, 4) if bw is not None else 0.0,
            components={k: round(v, 2) for k, v in components.items()},
            nodes=report,
        )

    def _pair_report(self, pair: _Pair) -> dict[str, Any]:
        d: dict[str, Any] = {
            "quality": round(pair.quality, 2),
            "status": self.pair_status(pair),
            "trend": trend_of(pair.history, self.trend_delta),
            "via": pair.via,
        }
        for k in ("latency_ms", "jitter_ms", "loss_percent"):
            v = getattr(pair, k)
            if v is not None and math.isfinite(v):
                d[k] = round(v, 3)
        return d

    # --- timer ----------------------------------------------------------------
    def on_tick(self, now: float) -> Iterable[Emit]:
        self._forget(now)
        bucket = int(now // self.emit_interval_s)
        out: list[Emit] = []
        for cluster in list(self._clusters):
            if self._last_bucket.get(cluster) == bucket:
                continue
            out += self._emit(cluster, now, bucket)
        return out

    def flush(self, now: float) -> Iterable[Emit]:
        bucket = int(now // self.emit_interval_s)
        out: list[Emit] = []
        for cluster in list(self._clusters):
            if self._last_bucket.get(cluster) != bucket:
                out += self._emit(cluster, now, bucket)
        return out

    def _emit(self, cluster: str, now: float, bucket: int) -> list[Emit]:
        hs = self.health(cluster, now)
        self._last_bucket[cluster] = bucket
        if hs is None:
            return []
        for name, entry in hs.nodes.items():
            q = entry.get("quality")
            if q is not None:
                self._clusters[cluster][name].history.append(float(q))
        self.stats.outputs += 1
        return [Emit(subjects.health(cluster), hs, f"health:{cluster}:{bucket}")]

    def _forget(self, now: float) -> None:
        for cluster, nodes in list(self._clusters.items()):
            for name in [n for n, st in nodes.items() if now - st.last_seen > self.forget_after_s]:
                del nodes[name]
                self._n_nodes -= 1
                self.stats.inc("forgotten_nodes")
            if not nodes:
                del self._clusters[cluster]
                self._last_bucket.pop(cluster, None)

    def snapshot(self) -> dict[str, Any]:
        """Node figures and alert state; pair histories are rebuilt from new probes."""
        return {
            "nodes": [
                [c, n, st.last_seen, st.departed, st.peer_count, st.success_rate, st.avg_latency_ms, st.bandwidth_mbps]
                for c, nodes in self._clusters.items()
                for n, st in nodes.items()
            ],
            "tracker": self.success_tracker.snapshot(),
        }

    def restore(self, state: Any) -> None:
        state = state or {}
        self._clusters = {}
        self._n_nodes = 0
        for c, n, last_seen, departed, pc, rate, lat, bw in state.get("nodes", []):
            self._clusters.setdefault(c, {})[n] = _Node(float(last_seen), bool(departed), pc, rate, lat, bw)
            self._n_nodes += 1
        self.success_tracker.restore(state.get("tracker"))
