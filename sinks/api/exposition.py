"""Prometheus exposition of FleetState, written by ``prometheus_client``'s own encoders.

:class:`FleetCollector` is a ``prometheus_client`` collector: it yields metric
families built from FleetState, and the library's encoders escape label values
and write the text format 0.0.4 or OpenMetrics 1.0 (``render(..., fmt=)``).
Series keys are (metric, label pairs) tuples, never strings parsed back, so a
label value like ``/x,evil=1`` stays one value.

Families (every one has HELP and TYPE; ``promtool check metrics`` passes):

- ``swarmwatch_node_metric{cluster,node,metric,stat,...}``: the newest window
  aggregate of every series of every node; the series' own labels are added
  under sanitised names (see :func:`label_names`). One family for all metrics
  keeps user metric names (``validations/s``, ``latency_ms``) valid and unconverted.
- ``swarmwatch_node_status{cluster,node,status}`` (a state set), ``swarmwatch_node_trust``,
  ``swarmwatch_node_connection_quality``, ``swarmwatch_node_last_seen_timestamp_seconds``.
- ``swarmwatch_cluster_health`` and its components, peers, success ratio, latency.
- ``swarmwatch_alert_firing{cluster,node,rule,severity,kind}`` and ``swarmwatch_alerts_active{severity}``.
- swarmwatch's own figures from ``sw.self.*``: counters as
  ``swarmwatch_self_total{component,metric}`` (a counter), levels as
  ``swarmwatch_self_metric{component,metric}`` (a gauge), plus
  ``swarmwatch_consumer_lag_seconds`` and the API's own ``swarmwatch_api_*``.

``match`` (the ``match[]`` query parameter) takes Prometheus series selectors,
``name{label="v",label=~"re",label!="v",label!~"re"}``; a sample is written if
any selector matches it, so one scrape need not carry the whole fleet.
"""
from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

from prometheus_client.exposition import generate_latest as _generate_text
from prometheus_client.metrics_core import Metric
from prometheus_client.openmetrics.exposition import generate_latest as _generate_openmetrics
from prometheus_client.utils import floatToGoString

from schemas import Severity
from sinks.api.state import STATUSES, FleetState, SeriesId

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
OPENMETRICS_CONTENT_TYPE = "application/openmetrics-text; version=1.0.0; charset=utf-8"
FORMATS = ("text", "openmetrics")
DEFAULT_STATS: tuple[str, ...] = ("mean", "min", "max", "p95", "last")
ALL_STATS = frozenset({"mean", "min", "max", "p95", "last", "count"})
MAX_SELECTORS = 32
MAX_SELECTOR_LEN = 1_024

# self metrics that are levels, not counts: by name suffix
_GAUGE_SUFFIXES = (
    "lag_s", "_items", "_bytes", "inflight", "connected", "clients", "cpu_percent", "_ms", "_percent",
    "available", "pending", "queued", "queue", "depth", "active", "open", "series", "nodes", "size",
)
_LABEL_OK = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
_LABEL_BAD = re.compile(r"[^a-zA-Z0-9_]")
_NAME_RE = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_MATCHER_RE = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"\s*(,|$)')


class SelectorError(ValueError):
    """A ``match[]`` selector that cannot be read."""


def is_counter_name(metric: str) -> bool:
    """Whether a swarmwatch self metric (``swarmwatch.processor.received``) counts events rather than a level."""
    return not metric.endswith(_GAUGE_SUFFIXES)


def _sanitise(name: str) -> str:
    out = _LABEL_BAD.sub("_", name) or "label"
    if out[0].isdigit():
        out = "l_" + out
    if out.startswith("__"):
        out = "l_" + out.lstrip("_")
    return out


def label_names(keys: Sequence[str], taken: Iterable[str]) -> list[str]:
    """Prometheus names for a series' label ``keys`` (sorted), all distinct and distinct from ``taken``.

    Valid names are kept; others become ``_``-sanitised. A name already taken
    (a fixed label such as ``node``, or a key sanitised to the same name) gets
    ``exported_`` in front, then ``_2``, ``_3``... after it, in key order, so
    the result depends only on the keys: ``a-b``, ``a.b``, ``a_b`` give
    ``exported_a_b``, ``a_b_2``, ``a_b`` (``a_b`` was valid, so it keeps its name).
    """
    used = set(taken)
    out: list[str | None] = [None] * len(keys)
    # first the keys that are valid as they are, so their names never depend on the others
    for i, k in enumerate(keys):
        if _LABEL_OK.match(k) and not k.startswith("__") and k not in used:
            out[i] = k
            used.add(k)
    for i, k in enumerate(keys):
        if out[i] is not None:
            continue
        base = _sanitise(k)
        name = base if base not in used else "exported_" + base
        n = 2
        while name in used:
            name = f"{base}_{n}"
            n += 1
        out[i] = name
        used.add(name)
    return out  # type: ignore[return-value]


def _unescape(value: str) -> str:
    return re.sub(r"\\(.)", lambda m: {"n": "\n"}.get(m.group(1), m.group(1)), value)


@dataclass(frozen=True, slots=True)
class Selector:
    """One series selector: an optional metric name and label matchers."""

    name: str | None
    matchers: tuple[tuple[str, str, str | re.Pattern[str]], ...]

    def matches(self, sample_name: str, family: str, labels: dict[str, str]) -> bool:
        if self.name is not None and self.name not in (sample_name, family):
            return False
        for label, op, want in self.matchers:
            got = labels.get(label, "")
            if op == "=":
                ok = got == want
            elif op == "!=":
                ok = got != want
            elif op == "=~":
                ok = want.fullmatch(got) is not None  # type: ignore[union-attr]
            else:
                ok = want.fullmatch(got) is None  # type: ignore[union-attr]
            if not ok:
                return False
        return True


def parse_selector(text: str) -> Selector:
    """``swarmwatch_node_metric{cluster="eu-1",metric=~"cpu.*"}`` -> Selector; SelectorError names the problem."""
    if len(text) > MAX_SELECTOR_LEN:
        raise SelectorError(f"match[] selector is {len(text)} characters; at most {MAX_SELECTOR_LEN}")
    s = text.strip()
    m = _NAME_RE.match(s)
    name = m.group(0) if m else None
    rest = s[m.end():].strip() if m else s
    matchers: list[tuple[str, str, str | re.Pattern[str]]] = []
    if rest:
        if not (rest.startswith("{") and rest.endswith("}")):
            raise SelectorError(f"match[] selector {text!r} is invalid; expected name{{label=\"value\",...}}")
        body = rest[1:-1].strip()
        pos = 0
        while pos < len(body):
            mm = _MATCHER_RE.match(body, pos)
            if mm is None:
                raise SelectorError(f"match[] selector {text!r} is invalid near {body[pos:pos + 40]!r}")
            label, op, raw, _ = mm.groups()
            if label == "__name__" and op == "=":
                name = _unescape(raw)
                pos = mm.end()
                continue
            value: str | re.Pattern[str] = _unescape(raw)
            if op in ("=~", "!~"):
                try:
                    value = re.compile(value)  # type: ignore[arg-type]
                except re.error as exc:
                    raise SelectorError(f"match[] selector {text!r} has a bad regular expression: {exc}") from None
            matchers.append((label, op, value))
            pos = mm.end()
    if name is None and not any(op in ("=", "=~") and not (isinstance(v, str) and v == "") for _, op, v in matchers):
        raise SelectorError(f"match[] selector {text!r} needs a metric name or a label matcher that is not empty")
    return Selector(name, tuple(matchers))


def parse_selectors(texts: Sequence[str]) -> tuple[Selector, ...]:
    if len(texts) > MAX_SELECTORS:
        raise SelectorError(f"{len(texts)} match[] selectors; at most {MAX_SELECTORS}")
    return tuple(parse_selector(t) for t in texts)


def _esc(value: str) -> str:
    """Label value escaping of the text format (as prometheus_client's encoder does it)."""
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


class _Family:
    """One metric family being filled: samples with free label sets, duplicates dropped.

    ``lines``: text-format lines written directly (the fast path for the one big
    family, byte-identical to prometheus_client's encoder; see the tests).
    """

    def __init__(self, collector: FleetCollector, name: str, type_: str, help_: str) -> None:
        self.metric = Metric(name, help_, type_)
        self.sample_name = name + "_total" if type_ == "counter" else name
        self.collector = collector
        self._seen: set[tuple[tuple[str, str], ...]] = set()
        self.lines: list[str] | None = None

    def add_stats(self, base: dict[str, str], stat_label: str, stats: Sequence[str], values: dict[str, float]) -> None:
        """One sample per stat of one series; the text fast path writes them as lines."""
        if self.lines is None or self.collector.selectors:
            for stat in stats:
                self.add({**base, stat_label: stat}, values[stat])
            return
        key = tuple(sorted(base.items()))
        if key in self._seen:
            self.collector.collisions += len(stats)
            return
        self._seen.add(key)
        pre = ",".join(f'{k}="{_esc(v)}"' for k, v in key if k < stat_label)
        post = ",".join(f'{k}="{_esc(v)}"' for k, v in key if k > stat_label)
        head = f"{self.sample_name}{{{pre}{',' if pre else ''}{stat_label}=\""
        tail = f'"{"," if post else ""}{post}}} '
        lines = self.lines
        for stat in stats:
            lines.append(f"{head}{stat}{tail}{floatToGoString(values[stat])}\n")

    def add(self, labels: dict[str, str], value: float) -> None:
        sel = self.collector.selectors
        if sel and not any(s.matches(self.sample_name, self.metric.name, labels) for s in sel):
            return
        key = tuple(sorted(labels.items()))
        if key in self._seen:  # two series whose labels became equal after sanitising: keep the first
            self.collector.collisions += 1
            return
        self._seen.add(key)
        self.metric.add_sample(self.sample_name, labels, float(value))


class FleetCollector:
    """A ``prometheus_client`` collector over a FleetState (``collect()`` yields metric families)."""

    def __init__(
        self, state: FleetState, stats: Sequence[str] = DEFAULT_STATS, selectors: Sequence[Selector] = (), *, text_lines: bool = False
    ) -> None:
        bad = [s for s in stats if s not in ALL_STATS]
        if bad:
            raise ValueError(f"unknown stat(s) {bad!r}; expected some of {sorted(ALL_STATS)}")
        self.state = state
        self.stats = tuple(stats)
        self.selectors = tuple(selectors)
        self.collisions = 0  # samples dropped because their sanitised labels equalled another's
        self.text_lines = text_lines  # write the big family as text lines (render_bytes' fast path)

    def _node_wanted(self, name: str, cluster: str, node: str) -> bool:
        """Whether any selector could match a sample of this family for this node (by equality matchers only)."""
        if not self.selectors:
            return True
        for sel in self.selectors:
            if sel.name is not None and sel.name not in (name, name + "_total"):
                continue
            if all(op != "=" or (label != "cluster" or want == cluster) and (label != "node" or want == node)
                   for label, op, want in sel.matchers):
                return True
        return False

    def _wanted(self, name: str) -> bool:
        """Whether any selector could match a family (cheap pre-check by name only)."""
        if not self.selectors:
            return True
        return any(s.name is None or s.name in (name, name + "_total") for s in self.selectors)

    def collect(self) -> Iterator[Metric]:
        for fam in self._families():
            if fam.metric.samples or not self.selectors:
                yield fam.metric

    def encode(self, fmt: str = "text") -> bytes:
        """The exposition in ``fmt``: the big family written directly, the rest by prometheus_client's encoders."""
        gen = _generate_openmetrics if fmt == "openmetrics" else _generate_text
        eof = b"# EOF\n"
        out: list[bytes] = []
        for fam in self._families():
            if fam.lines is not None and not self.selectors:
                m = fam.metric
                head = gen(_One(Metric(m.name, m.documentation, m.type)))  # type: ignore[arg-type]
                out.append(head[: -len(eof)] if head.endswith(eof) else head)
                out.append("".join(fam.lines).encode())
            elif fam.metric.samples or not self.selectors:
                part = gen(_One(fam.metric))  # type: ignore[arg-type]
                out.append(part[: -len(eof)] if fmt == "openmetrics" and part.endswith(eof) else part)
        if fmt == "openmetrics":
            out.append(eof)
        return b"".join(out)
    def _families(self) -> Iterator[_Family]:
        state = self.state
        nodes = sorted(state.nodes.values(), key=lambda s: (s.cluster, s.node))

        def family(name: str, type_: str, help_: str) -> _Family:
            return _Family(self, name, type_, help_)

        f = family("swarmwatch_node_metric", "gauge", "Newest window aggregate of each node series; stat is mean, min, max, p95, last or count.")
        if self.text_lines:
            f.lines = []
        if self._wanted(f.metric.name):
            fixed = ("cluster", "node", "metric", "stat")
            names_cache: dict[SeriesId, list[str]] = {}
            for st in nodes:
                if not self._node_wanted(f.metric.name, st.cluster, st.node):
                    continue
                for sid in sorted(st.agg):
                    agg = st.agg[sid]
                    metric, pairs = sid
                    extra = names_cache.get(sid)
                    if extra is None:
                        extra = names_cache[sid] = label_names([k for k, _ in pairs], fixed)
                    base = {"cluster": st.cluster, "node": st.node, "metric": metric}
                    for (_, v), ln in zip(pairs, extra):
                        base[ln] = v
                    f.add_stats(base, "stat", self.stats, agg)
        yield f

        def per_node(name: str, help_: str, value_of: object) -> _Family:
            fam = family(name, "gauge", help_)
            if self._wanted(name):
                for st in nodes:
                    v = value_of(st)  # type: ignore[operator]
                    if v is not None:
                        fam.add({"cluster": st.cluster, "node": st.node}, v)
            return fam

        yield per_node("swarmwatch_node_metric_window_seconds", "Length of the window behind swarmwatch_node_metric, per node.",
                       lambda st: st.window_s or None)
        yield per_node("swarmwatch_node_last_seen_timestamp_seconds", "Event time of the newest data from the node (UNIX seconds).",
                       lambda st: st.last_seen or None)
        f = family("swarmwatch_node_status", "gauge", "Node status from its firing alerts: 1 for the current status, 0 for the others.")
        if self._wanted(f.metric.name):
            for st in nodes:
                cur = st.status()
                for s in STATUSES:
                    f.add({"cluster": st.cluster, "node": st.node, "status": s}, 1.0 if s == cur else 0.0)
        yield f
        yield per_node("swarmwatch_node_trust", "Trust score of the node in [0, 1] (1 fully trusted).",
                       lambda st: None if st.trust is None else st.trust.trust)
        yield per_node("swarmwatch_node_suspicion", "Byzantine suspicion of the node in [0, 1].",
                       lambda st: None if st.trust is None else st.trust.suspicion)

        def quality(st: object) -> float | None:
            h = st.health  # type: ignore[attr-defined]
            q = None if h is None else h.get("quality")
            return float(q) if isinstance(q, (int, float)) and not isinstance(q, bool) else None

        yield per_node("swarmwatch_node_connection_quality", "Connection quality of the node 0-100 from its cluster's health score.", quality)

        clusters = sorted((c, ch.latest) for c, ch in state.clusters.items() if ch.latest is not None)

        def per_cluster(name: str, help_: str, value_of: object) -> _Family:
            fam = family(name, "gauge", help_)
            if self._wanted(name):
                for c, h in clusters:
                    fam.add({"cluster": c}, value_of(h))  # type: ignore[operator]
            return fam

        yield per_cluster("swarmwatch_cluster_health", "Overall network health of the cluster, 0-100.", lambda h: h.overall_health)
        f = family("swarmwatch_cluster_health_component", "gauge", "Components of the cluster health score, 0-100 each.")
        for c, h in clusters:
            for comp, v in sorted(h.components.items()):
                f.add({"cluster": c, "component": comp}, v)
        yield f
        yield per_cluster("swarmwatch_cluster_peers", "Live peers in the cluster.", lambda h: h.peer_count)
        yield per_cluster("swarmwatch_cluster_expected_peers", "Peers expected in the cluster.", lambda h: h.expected_peers)
        yield per_cluster("swarmwatch_cluster_connection_success_ratio", "Mean connection success rate of the cluster's nodes, 0-1.",
                          lambda h: h.connection_success_rate)
        yield per_cluster("swarmwatch_cluster_latency_seconds", "Mean peer latency in the cluster, in seconds.", lambda h: h.avg_latency / 1000.0)
        yield per_cluster("swarmwatch_cluster_bandwidth_usage", "Mean bandwidth use per node in the cluster (Mbit/s).", lambda h: h.bandwidth_usage)

        alerts = sorted(state.active_alerts.values(), key=lambda a: (a.cluster, a.node, a.rule, a.id))
        f = family("swarmwatch_alert_firing", "gauge", "1 for each firing alert.")
        seen: set[tuple[str, ...]] = set()
        for a in alerts:
            labels = {"cluster": a.cluster, "node": a.node, "rule": a.rule, "severity": a.severity.value, "kind": a.kind.value}
            key = tuple(labels.values())
            if key in seen:  # two episodes of one rule on one node (e.g. per series): one sample
                continue
            seen.add(key)
            f.add(labels, 1.0)
        yield f
        f = family("swarmwatch_alerts_active", "gauge", "Firing alerts by severity.")
        for sev in Severity:
            f.add({"severity": sev.value}, sum(1 for a in alerts if a.severity == sev))
        yield f

        yield from self._self_families()
        yield from self._api_families()

    def _self_families(self) -> Iterator[_Family]:
        state = self.state
        counters = _Family(self, "swarmwatch_self", "counter", "swarmwatch's own counters as published on sw.self.<component>.")
        gauges = _Family(self, "swarmwatch_self_metric", "gauge", "swarmwatch's own levels (lag, queue sizes, memory) as published on sw.self.<component>.")
        lag = _Family(self, "swarmwatch_consumer_lag_seconds", "gauge", "Consumer lag reported by each swarmwatch component, in seconds.")
        fixed = ("component", "metric")
        for comp in sorted(state.self_metrics):
            cur = state.self_metrics[comp]
            for sid in sorted(cur):
                v = cur[sid]
                metric, pairs = sid
                labels = {"component": comp, "metric": metric}
                for (_, lv), ln in zip(pairs, label_names([k for k, _ in pairs], fixed)):
                    labels[ln] = lv
                if is_counter_name(metric):
                    counters.add(labels, max(0.0, v))
                else:
                    gauges.add(labels, v)
                if metric.endswith("lag_s"):
                    lag.add({"component": comp, "metric": metric}, v)
        yield counters
        yield gauges
        yield lag

    def _api_families(self) -> Iterator[_Family]:
        c = self.state.counters
        f = _Family(self, "swarmwatch_api_messages", "counter", "Messages applied to the API's state, by subject family.")
        for fam in sorted(c.messages):
            f.add({"family": fam}, c.messages[fam])
        yield f
        f = _Family(self, "swarmwatch_api_invalid_messages", "counter", "Messages the API could not decode.")
        f.add({}, c.invalid)
        yield f
        f = _Family(self, "swarmwatch_api_refused", "counter", "Items refused at the API's limits (nodes, series, history series, alerts).")
        for what, v in (
            ("nodes", c.refused_nodes),
            ("series", c.refused_series),
            ("history_series", c.refused_history_series),
            ("alerts", c.refused_alerts),
        ):
            f.add({"what": what}, v)
        yield f
        f = _Family(self, "swarmwatch_api_auth_refused", "counter",
                    "Requests refused: missing or wrong token, throttled after wrong tokens, or a foreign Origin.")
        for reason in ("token", "throttled", "origin"):
            f.add({"reason": reason}, c.auth_refused.get(reason, 0))
        yield f
        f = _Family(self, "swarmwatch_api_evicted", "counter", "Idle items that gave way to new ones at the API's cardinality limits.")
        f.add({"what": "history_series"}, c.evicted_history_series)
        f.add({"what": "latest_series"}, c.evicted_latest_series)
        yield f
        f = _Family(self, "swarmwatch_api_out_of_order", "counter", "Aggregates older than the newest one of their node, not charted.")
        f.add({}, c.out_of_order)
        yield f
        f = _Family(self, "swarmwatch_api_dead_letters", "counter", "Dead letters seen on sw.dlq.<stage> since the API started.")
        for stage in sorted(c.dlq):
            f.add({"stage": stage}, c.dlq[stage])
        yield f
        f = _Family(self, "swarmwatch_api_websocket_dropped", "counter", "Messages dropped for slow WebSocket clients.")
        f.add({}, c.ws_dropped)
        yield f
        f = _Family(self, "swarmwatch_api_websocket_clients", "gauge", "Connected WebSocket clients.")
        f.add({}, c.ws_clients)
        yield f
        f = _Family(self, "swarmwatch_api_nodes", "gauge", "Nodes known to the API.")
        f.add({}, len(self.state.nodes))
        yield f
        f = _Family(self, "swarmwatch_api_exposition_label_collisions", "counter",
                    "Samples left out of this scrape because their labels equalled another's after sanitising label names.")
        f.add({}, self.collisions)
        yield f


class _One:
    """A collector of one ready metric family."""

    def __init__(self, metric: Metric) -> None:
        self.metric = metric

    def collect(self) -> Iterator[Metric]:
        yield self.metric


def negotiate(accept: str | None, fmt: str | None = None) -> str:
    """``text`` or ``openmetrics``: ``fmt`` (the ``?format=`` parameter) wins, else the Accept header."""
    if fmt:
        if fmt not in FORMATS:
            raise ValueError(f"format {fmt!r} is invalid; expected one of {', '.join(FORMATS)}")
        return fmt
    if accept and "application/openmetrics-text" in accept:
        return "openmetrics"
    return "text"


def render_bytes(
    state: FleetState, stats: Sequence[str] = DEFAULT_STATS, *, fmt: str = "text", match: Sequence[str] = ()
) -> tuple[bytes, str]:
    """(body, content type) of the exposition in ``fmt``, filtered by ``match`` selectors."""
    if fmt not in FORMATS:
        raise ValueError(f"format {fmt!r} is invalid; expected one of {', '.join(FORMATS)}")
    body = FleetCollector(state, stats, parse_selectors(match), text_lines=True).encode(fmt)
    return body, OPENMETRICS_CONTENT_TYPE if fmt == "openmetrics" else CONTENT_TYPE


def render(state: FleetState, stats: Sequence[str] = DEFAULT_STATS, *, fmt: str = "text", match: Sequence[str] = ()) -> str:
    """The whole exposition as text (format 0.0.4 unless ``fmt="openmetrics"``)."""
    return render_bytes(state, stats, fmt=fmt, match=match)[0].decode()
