"""Series admission with caps per node and per cluster: one node cannot crowd out the others.

Every place that creates state per series (the windows operator, the anomaly
operator, the API's history rings) asks a :class:`CardinalityLimiter` before
creating it. A new series is admitted while its node holds fewer than
``max_per_node`` series and its cluster fewer than ``max_per_cluster``. At a
cap, the least recently seen series of that node (at the node cap) or of the
cluster (at the cluster cap) is evicted if it has not been seen for ``idle_s``;
otherwise the new series is refused. So a node sending 300,000 distinct names
churns through its own budget while every other node keeps its series.

A refusal is counted (``refused``, per node in ``refused_by_node``), logged at
most once per LOG_INTERVAL_S per limiter (a summary naming the worst node), and
raises a ``cardinality_limit`` alert on the node (from operators, via
:meth:`alerts`), resolved once the node has had no refusal for ``quiet_s``.
"""
from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Hashable
from typing import Any

from schemas import AlertKind, Severity

from processors.alerting import AlertTracker
from processors.operator import Emit

log = logging.getLogger(__name__)

CARDINALITY_RULE = "cardinality_limit"
DEFAULT_IDLE_S = 300.0  # a series unseen this long may give its place to a new one (seconds)
DEFAULT_QUIET_S = 300.0  # the alert resolves after this long without a refusal (seconds)
LOG_INTERVAL_S = 60.0  # at most one log line per limiter per this many seconds
MAX_TRACKED_NODES = 100_000  # nodes with refusal counts kept; the oldest are forgotten beyond this


class CardinalityLimiter:
    """Admits series keys per (cluster, node) under per-node and per-cluster caps, evicting the least recently seen.

    ``owner`` names the user (an operator name) in logs and alerts. Keys are any
    hashable value, unique within a node. ``seen(cluster, node, key, now)``
    returns whether the series is tracked; evicted series are queued in
    ``evicted`` as (cluster, node, key) for the owner to drop with its state.
    """

    def __init__(
        self,
        owner: str,
        max_per_node: int,
        max_per_cluster: int,
        *,
        idle_s: float = DEFAULT_IDLE_S,
        quiet_s: float = DEFAULT_QUIET_S,
        severity: Severity = Severity.WARNING,
    ) -> None:
        if max_per_node < 1 or max_per_cluster < 1:
            raise ValueError(f"{owner}: max_per_node ({max_per_node}) and max_per_cluster ({max_per_cluster}) must be >= 1")
        if idle_s < 0 or quiet_s < 0:
            raise ValueError(f"{owner}: idle_s ({idle_s}) and quiet_s ({quiet_s}) must be >= 0")
        self.owner = owner
        self.max_per_node = max_per_node
        self.max_per_cluster = max_per_cluster
        self.idle_s = idle_s
        self.quiet_s = quiet_s
        self._nodes: dict[tuple[str, str], OrderedDict[Hashable, float]] = {}  # least recently seen first
        self._clusters: dict[str, OrderedDict[tuple[str, Hashable], None]] = {}
        self.evicted: list[tuple[str, str, Hashable]] = []
        self.refused = 0
        self.evictions = 0
        self.refused_by_node: OrderedDict[tuple[str, str], list[float]] = OrderedDict()  # -> [count, last refusal time]
        self._tracker = AlertTracker(CARDINALITY_RULE, AlertKind.THRESHOLD, severity)
        self._pending_alerts: list[Emit] = []
        self._next_log = 0.0
        self._since_log = 0
        self._example: tuple[str, str, Hashable] | None = None

    def __len__(self) -> int:
        return sum(len(od) for od in self._nodes.values())

    def count(self, cluster: str, node: str) -> int:
        od = self._nodes.get((cluster, node))
        return 0 if od is None else len(od)

    def cluster_count(self, cluster: str) -> int:
        cl = self._clusters.get(cluster)
        return 0 if cl is None else len(cl)

    def seen(self, cluster: str, node: str, key: Hashable, now: float) -> bool:
        """Note a series seen at ``now``; True if tracked (already, or admitted now), False if refused."""
        nk = (cluster, node)
        od = self._nodes.get(nk)
        if od is not None and key in od:
            od[key] = now
            od.move_to_end(key)
            self._clusters[cluster].move_to_end((node, key))
            return True
        if od is None:
            od = self._nodes[nk] = OrderedDict()
        cl = self._clusters.get(cluster)
        if cl is None:
            cl = self._clusters[cluster] = OrderedDict()
        if len(od) >= self.max_per_node:
            old_key, old_t = next(iter(od.items()))
            if now - old_t < self.idle_s:
                return self._refuse(cluster, node, key, now, f"{self.max_per_node} series per node")
            self._evict(cluster, node, old_key)
        elif len(cl) >= self.max_per_cluster:
            old_node, old_key = next(iter(cl))
            if now - self._nodes[(cluster, old_node)][old_key] < self.idle_s:
                return self._refuse(cluster, node, key, now, f"{self.max_per_cluster} series per cluster")
            self._evict(cluster, old_node, old_key)
        od[key] = now
        cl[(node, key)] = None
        return True

    def touch(self, cluster: str, node: str, keys: Any, now: float) -> None:
        """Mark tracked ``keys`` of one node as seen at ``now`` (unknown keys are ignored)."""
        od = self._nodes.get((cluster, node))
        if od is None:
            return
        cl = self._clusters[cluster]
        for k in keys:
            if k in od:
                od[k] = now
                od.move_to_end(k)
                cl.move_to_end((node, k))

    def forget(self, cluster: str, node: str, key: Hashable) -> None:
        """The owner dropped a series itself (e.g. expired): free its place."""
        od = self._nodes.get((cluster, node))
        if od is not None and od.pop(key, None) is not None:
            self._clusters[cluster].pop((node, key), None)
            if not od:
                del self._nodes[(cluster, node)]

    def forget_node(self, cluster: str, node: str) -> None:
        od = self._nodes.pop((cluster, node), None)
        if od:
            cl = self._clusters[cluster]
            for k in od:
                cl.pop((node, k), None)

    def pop_evicted(self) -> list[tuple[str, str, Hashable]]:
        out, self.evicted = self.evicted, []
        return out

    def _evict(self, cluster: str, node: str, key: Hashable) -> None:
        od = self._nodes[(cluster, node)]
        del od[key]
        del self._clusters[cluster][(node, key)]
        self.evicted.append((cluster, node, key))
        self.evictions += 1

    def _refuse(self, cluster: str, node: str, key: Hashable, now: float, limit: str) -> bool:
        self.refused += 1
        self._since_log += 1
        nk = (cluster, node)
        rec = self.refused_by_node.get(nk)
        if rec is None:
            rec = self.refused_by_node[nk] = [0.0, now]
            if len(self.refused_by_node) > MAX_TRACKED_NODES:
                self.refused_by_node.popitem(last=False)
        rec[0] += 1
        rec[1] = now
        if self._example is None:
            self._example = (cluster, node, key)
        if not self._tracker.is_firing(cluster, node, self.owner):
            self._pending_alerts.extend(
                self._tracker.update(
                    cluster, node, True, now, float(self.count(cluster, node)), series=self.owner,
                    threshold=float(self.max_per_node),
                    summary=f"{cluster}/{node} exceeds the {self.owner} cardinality limit ({limit}); new series are refused",
                    details={"limit": limit, "max_per_node": self.max_per_node, "max_per_cluster": self.max_per_cluster},
                )
            )
        if now >= self._next_log:
            self._log(now, limit)
        return False

    def _log(self, now: float, limit: str) -> None:
        self._next_log = now + LOG_INTERVAL_S
        c, n, k = self._example or ("?", "?", "?")
        worst = max(self.refused_by_node.items(), key=lambda kv: kv[1][0], default=None)
        log.warning(
            "cardinality limit of %s (%s): refused %d new series since the last report, %d in all; e.g. %r from %s/%s; "
            "most from %s (%d)",
            self.owner, limit, self._since_log, self.refused, k, c, n,
            "/".join(worst[0]) if worst else "-", int(worst[1][0]) if worst else 0,
        )
        self._since_log = 0
        self._example = None

    def alerts(self, now: float) -> list[Emit]:
        """``cardinality_limit`` alerts to publish: new ones, and resolves for nodes quiet for ``quiet_s``."""
        out, self._pending_alerts = self._pending_alerts, []
        for cluster, node, series in self._tracker.firing():
            rec = self.refused_by_node.get((cluster, node))
            if rec is None or now - rec[1] >= self.quiet_s:
                out.extend(self._tracker.update(
                    cluster, node, False, max(now, self._tracker.states[(cluster, node, series)].last_ts), series=series,
                    summary=f"{cluster}/{node} is back under the {self.owner} cardinality limit",
                ))
        return out

    def snapshot(self) -> Any:
        return self._tracker.snapshot()

    def restore(self, state: Any) -> None:
        self._tracker.restore(state)
