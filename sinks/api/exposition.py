"""Prometheus text exposition (format 0.0.4) of FleetState, written by hand.

Families (every one has HELP and TYPE; ``promtool check metrics`` passes):

- ``swarmwatch_node_metric{cluster,node,metric,stat,...}``: the newest window
  aggregate of every series of every node; the series' own labels are added
  (renamed ``exported_<name>`` if they clash). One family for all metrics keeps
  user metric names (``validations/s``, ``latency_ms``) valid and unconverted.
- ``swarmwatch_node_status{cluster,node,status}`` (a state set), ``swarmwatch_node_trust``,
  ``swarmwatch_node_connection_quality``, ``swarmwatch_node_last_seen_timestamp_seconds``.
- ``swarmwatch_cluster_health`` and its components, peers, success ratio, latency.
- ``swarmwatch_alert_firing{cluster,node,rule,severity,kind}`` and ``swarmwatch_alerts_active{severity}``.
- swarmwatch's own counters: ``swarmwatch_self_metric{component,metric}`` (from
  ``sw.self.*``), ``swarmwatch_consumer_lag_seconds``, and the API's own
  ``swarmwatch_api_*`` counters (messages, invalid, refused, dead letters seen, WebSocket drops).
"""
from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence

from schemas import Severity
from sinks.api.state import STATUSES, FleetState, metric_of, series_labels

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
DEFAULT_STATS: tuple[str, ...] = ("mean", "min", "max", "p95", "last")
ALL_STATS = frozenset({"mean", "min", "max", "p95", "last", "count"})

_LABEL_RE = re.compile(r"[^a-zA-Z0-9_]")


def _label_name(name: str, taken: Iterable[str]) -> str:
    out = _LABEL_RE.sub("_", name) or "label"
    if out[0].isdigit() or out.startswith("__"):
        out = "l_" + out.lstrip("_")
    if out in taken:
        out = "exported_" + out
    return out


def _esc(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _num(v: float) -> str:
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    if v == int(v) and abs(v) < 1e15:
        return str(int(v))
    return repr(float(v))


def _labels(pairs: Sequence[tuple[str, str]]) -> str:
    if not pairs:
        return ""
    return "{" + ",".join(f'{k}="{_esc(v)}"' for k, v in pairs) + "}"


class _Writer:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def family(self, name: str, type_: str, help_: str) -> None:
        self.lines.append(f"# HELP {name} {help_.replace(chr(92), chr(92) * 2)}")
        self.lines.append(f"# TYPE {name} {type_}")

    def sample(self, name: str, pairs: Sequence[tuple[str, str]], value: float) -> None:
        self.lines.append(f"{name}{_labels(pairs)} {_num(value)}")

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"


def _extra_labels(series: str, fixed: Sequence[str]) -> list[tuple[str, str]]:
    taken = set(fixed)
    out: list[tuple[str, str]] = []
    for k, v in series_labels(series).items():
        name = _label_name(k, taken)
        taken.add(name)
        out.append((name, v))
    return out


def render(state: FleetState, stats: Sequence[str] = DEFAULT_STATS) -> str:
    """The whole exposition as text."""
    bad = [s for s in stats if s not in ALL_STATS]
    if bad:
        raise ValueError(f"unknown stat(s) {bad!r}; expected some of {sorted(ALL_STATS)}")
    w = _Writer()
    nodes = sorted(state.nodes.values(), key=lambda s: (s.cluster, s.node))

    w.family("swarmwatch_node_metric", "gauge", "Newest window aggregate of each node series; stat is mean, min, max, p95, last or count.")
    fixed = ("cluster", "node", "metric", "stat")
    for st in nodes:
        for series, agg in st.agg.items():
            base = [("cluster", st.cluster), ("node", st.node), ("metric", metric_of(series))]
            extra = _extra_labels(series, fixed)
            for stat in stats:
                w.sample("swarmwatch_node_metric", [*base, ("stat", stat), *extra], agg[stat])

    w.family("swarmwatch_node_metric_window_seconds", "gauge", "Length of the window behind swarmwatch_node_metric, per node.")
    for st in nodes:
        if st.window_s:
            w.sample("swarmwatch_node_metric_window_seconds", [("cluster", st.cluster), ("node", st.node)], st.window_s)

    w.family("swarmwatch_node_last_seen_timestamp_seconds", "gauge", "Event time of the newest data from the node (UNIX seconds).")
    for st in nodes:
        if st.last_seen:
            w.sample("swarmwatch_node_last_seen_timestamp_seconds", [("cluster", st.cluster), ("node", st.node)], st.last_seen)

    w.family("swarmwatch_node_status", "gauge", "Node status from its firing alerts: 1 for the current status, 0 for the others.")
    for st in nodes:
        cur = st.status()
        for s in STATUSES:
            w.sample("swarmwatch_node_status", [("cluster", st.cluster), ("node", st.node), ("status", s)], 1.0 if s == cur else 0.0)

    w.family("swarmwatch_node_trust", "gauge", "Trust score of the node in [0, 1] (1 fully trusted).")
    for st in nodes:
        if st.trust is not None:
            w.sample("swarmwatch_node_trust", [("cluster", st.cluster), ("node", st.node)], st.trust.trust)
    w.family("swarmwatch_node_suspicion", "gauge", "Byzantine suspicion of the node in [0, 1].")
    for st in nodes:
        if st.trust is not None:
            w.sample("swarmwatch_node_suspicion", [("cluster", st.cluster), ("node", st.node)], st.trust.suspicion)

    w.family("swarmwatch_node_connection_quality", "gauge", "Connection quality of the node 0-100 from its cluster's health score.")
    for st in nodes:
        q = None if st.health is None else st.health.get("quality")
        if isinstance(q, (int, float)):
            w.sample("swarmwatch_node_connection_quality", [("cluster", st.cluster), ("node", st.node)], float(q))

    clusters = sorted((c, ch.latest) for c, ch in state.clusters.items() if ch.latest is not None)
    w.family("swarmwatch_cluster_health", "gauge", "Overall network health of the cluster, 0-100.")
    for c, h in clusters:
        w.sample("swarmwatch_cluster_health", [("cluster", c)], h.overall_health)
    w.family("swarmwatch_cluster_health_component", "gauge", "Components of the cluster health score, 0-100 each.")
    for c, h in clusters:
        for comp, v in sorted(h.components.items()):
            w.sample("swarmwatch_cluster_health_component", [("cluster", c), ("component", comp)], v)
    w.family("swarmwatch_cluster_peers", "gauge", "Live peers in the cluster.")
    for c, h in clusters:
        w.sample("swarmwatch_cluster_peers", [("cluster", c)], h.peer_count)
    w.family("swarmwatch_cluster_expected_peers", "gauge", "Peers expected in the cluster.")
    for c, h in clusters:
        w.sample("swarmwatch_cluster_expected_peers", [("cluster", c)], h.expected_peers)
    w.family("swarmwatch_cluster_connection_success_ratio", "gauge", "Mean connection success rate of the cluster's nodes, 0-1.")
    for c, h in clusters:
        w.sample("swarmwatch_cluster_connection_success_ratio", [("cluster", c)], h.connection_success_rate)
    w.family("swarmwatch_cluster_latency_seconds", "gauge", "Mean peer latency in the cluster, in seconds.")
    for c, h in clusters:
        w.sample("swarmwatch_cluster_latency_seconds", [("cluster", c)], h.avg_latency / 1000.0)
    w.family("swarmwatch_cluster_bandwidth_usage", "gauge", "Mean bandwidth use per node in the cluster (Mbit/s).")
    for c, h in clusters:
        w.sample("swarmwatch_cluster_bandwidth_usage", [("cluster", c)], h.bandwidth_usage)

    alerts = sorted(state.active_alerts.values(), key=lambda a: (a.cluster, a.node, a.rule, a.id))
    w.family("swarmwatch_alert_firing", "gauge", "1 for each firing alert.")
    seen: set[tuple[str, ...]] = set()
    for a in alerts:
        pairs = [("cluster", a.cluster), ("node", a.node), ("rule", a.rule), ("severity", a.severity.value), ("kind", a.kind.value)]
        key = tuple(v for _, v in pairs)
        if key in seen:  # two episodes of one rule on one node (e.g. per series): one sample
            continue
        seen.add(key)
        w.sample("swarmwatch_alert_firing", pairs, 1.0)
    w.family("swarmwatch_alerts_active", "gauge", "Firing alerts by severity.")
    for sev in Severity:
        w.sample("swarmwatch_alerts_active", [("severity", sev.value)], sum(1 for a in alerts if a.severity == sev))

    w.family("swarmwatch_self_metric", "gauge", "swarmwatch's own counters and gauges as published on sw.self.<component>.")
    lags: list[tuple[str, str, float]] = []
    for comp in sorted(state.self_metrics):
        for series, v in sorted(state.self_metrics[comp].items()):
            m = metric_of(series)
            w.sample("swarmwatch_self_metric", [("component", comp), ("metric", m), *_extra_labels(series, ("component", "metric"))], v)
            if m.endswith("lag_s"):
                lags.append((comp, m, v))
    w.family("swarmwatch_consumer_lag_seconds", "gauge", "Consumer lag reported by each swarmwatch component, in seconds.")
    for comp, m, v in lags:
        w.sample("swarmwatch_consumer_lag_seconds", [("component", comp), ("metric", m)], v)

    c = state.counters
    w.family("swarmwatch_api_messages_total", "counter", "Messages applied to the API's state, by subject family.")
    for fam in sorted(c.messages):
        w.sample("swarmwatch_api_messages_total", [("family", fam)], c.messages[fam])
    w.family("swarmwatch_api_invalid_messages_total", "counter", "Messages the API could not decode.")
    w.sample("swarmwatch_api_invalid_messages_total", [], c.invalid)
    w.family("swarmwatch_api_refused_total", "counter", "Items refused at the API's limits (nodes, series, history series, alerts).")
    for what, v in (
        ("nodes", c.refused_nodes),
        ("series", c.refused_series),
        ("history_series", c.refused_history_series),
        ("alerts", c.refused_alerts),
    ):
        w.sample("swarmwatch_api_refused_total", [("what", what)], v)
    w.family("swarmwatch_api_out_of_order_total", "counter", "Aggregates older than the newest one of their node, not charted.")
    w.sample("swarmwatch_api_out_of_order_total", [], c.out_of_order)
    w.family("swarmwatch_api_dead_letters_total", "counter", "Dead letters seen on sw.dlq.<stage> since the API started.")
    for stage in sorted(c.dlq):
        w.sample("swarmwatch_api_dead_letters_total", [("stage", stage)], c.dlq[stage])
    w.family("swarmwatch_api_websocket_dropped_total", "counter", "Messages dropped for slow WebSocket clients.")
    w.sample("swarmwatch_api_websocket_dropped_total", [], c.ws_dropped)
    w.family("swarmwatch_api_websocket_clients", "gauge", "Connected WebSocket clients.")
    w.sample("swarmwatch_api_websocket_clients", [], c.ws_clients)
    w.family("swarmwatch_api_nodes", "gauge", "Nodes known to the API.")
    w.sample("swarmwatch_api_nodes", [], len(state.nodes))
    return w.text()
