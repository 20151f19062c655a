"""Liveness: a node whose messages stop for longer than a deadline is unresponsive.

``LivenessOperator`` remembers when each (cluster, node) was last heard from —
any MetricBatch or Event counts — and on every tick raises the critical alert
``node_unresponsive`` (kind ``liveness``) for nodes silent longer than
``deadline_s`` (60 s by default, as the requirements ask). The alert comes from
the timer, not from a message, since a dead node sends none; it resolves as
soon as the node is heard from again. A clean shutdown (``peer.leave``) is not
an outage: the node is marked departed, raises nothing, and a firing alert for
it resolves.

Silence is measured on the processor's clock (the ``now`` the runtime passes
with each message), so clock skew between nodes cannot fake an outage.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from schemas import AlertKind, Event, MetricBatch, Severity

from processors.alerting import AlertTracker
from processors.operator import Emit, Operator

RULE = "node_unresponsive"
LEAVE_KIND = "peer.leave"
DEFAULT_DEADLINE_S = 60.0  # seconds of silence before a node is unresponsive
DEFAULT_TICK_S = 1.0  # how often the runtime should call on_tick
DEFAULT_MAX_NODES = 100_000  # nodes tracked; messages from more are refused and counted
DEFAULT_FORGET_AFTER_S = 7 * 86_400.0  # silent or departed nodes are forgotten after this long


@dataclass(slots=True)
class _Node:
    last_seen: float
    departed: bool = False


class LivenessOperator(Operator):
    """Raises ``node_unresponsive`` (critical) for nodes silent over ``deadline_s``.

    ``deadline_s``: silence that counts as an outage (seconds).
    ``max_nodes``: bound on tracked nodes; nodes beyond it are refused (``stats.extra['refused_nodes']``).
    ``forget_after_s``: a node silent or departed this long is dropped (its alert, if
    firing, stays firing — the node never came back).
    """

    name = "liveness"
    wants_metrics = True
    event_kinds = None  # every event is a sign of life

    def __init__(
        self,
        deadline_s: float = DEFAULT_DEADLINE_S,
        *,
        tick_interval_s: float = DEFAULT_TICK_S,
        max_nodes: int = DEFAULT_MAX_NODES,
        forget_after_s: float = DEFAULT_FORGET_AFTER_S,
        severity: Severity = Severity.CRITICAL,
    ) -> None:
        super().__init__()
        if not deadline_s > 0:
            raise ValueError(f"liveness deadline_s must be > 0 seconds, got {deadline_s!r}")
        if not tick_interval_s > 0:
            raise ValueError(f"liveness tick_interval_s must be > 0 seconds, got {tick_interval_s!r}")
        if max_nodes < 1:
            raise ValueError(f"liveness max_nodes must be >= 1, got {max_nodes!r}")
        if forget_after_s < deadline_s:
            raise ValueError(f"liveness forget_after_s ({forget_after_s!r}) must be >= deadline_s ({deadline_s!r})")
        self.deadline_s = float(deadline_s)
        self.tick_interval_s = float(tick_interval_s)
        self.max_nodes = int(max_nodes)
        self.forget_after_s = float(forget_after_s)
        self.tracker = AlertTracker(RULE, kind=AlertKind.LIVENESS, severity=severity, max_keys=max_nodes)
        self._nodes: dict[tuple[str, str], _Node] = {}
        self._restored = False

    # --- inputs -------------------------------------------------------------
    def on_metrics(self, batch: MetricBatch, now: float) -> Iterable[Emit]:
        self.stats.inputs += 1
        return self._seen(batch.cluster, batch.node, now)

    def on_event(self, event: Event, now: float) -> Iterable[Emit]:
        self.stats.inputs += 1
        if event.kind == LEAVE_KIND:
            return self._departed(event.cluster, event.node, now)
        return self._seen(event.cluster, event.node, now)

    def _seen(self, cluster: str, node: str, now: float) -> list[Emit]:
        key = (cluster, node)
        st = self._nodes.get(key)
        if st is None:
            if len(self._nodes) >= self.max_nodes:
                self.stats.inc("refused_nodes")
                self.stats.dropped += 1
                return []
            self._nodes[key] = _Node(now)
            return []
        st.last_seen = max(st.last_seen, now)
        st.departed = False
        if self.tracker.is_firing(cluster, node):
            return self._out(
                self.tracker.update(cluster, node, False, now, 0.0, summary=f"node {cluster}/{node} is responding again")
            )
        return []

    def _departed(self, cluster: str, node: str, now: float) -> list[Emit]:
        key = (cluster, node)
        st = self._nodes.get(key)
        if st is None:
            if len(self._nodes) >= self.max_nodes:
                self.stats.inc("refused_nodes")
                self.stats.dropped += 1
                return []
            st = self._nodes[key] = _Node(now)
        st.last_seen = max(st.last_seen, now)
        st.departed = True
        self.stats.inc("departures")
        return self._out(self.tracker.expire(cluster, node, now, summary=f"node {cluster}/{node} left cleanly"))

    # --- timer ----------------------------------------------------------------
    def on_tick(self, now: float) -> Iterable[Emit]:
        if self._restored:
            # After a restart, silence measured against a checkpoint would include the
            # processor's own downtime: give every node not already firing a fresh deadline.
            self._restored = False
            for (cluster, node), st in self._nodes.items():
                if not self.tracker.is_firing(cluster, node):
                    st.last_seen = max(st.last_seen, now)
        out: list[Emit] = []
        forget: list[tuple[str, str]] = []
        for (cluster, node), st in self._nodes.items():
            silent = now - st.last_seen
            if silent > self.forget_after_s:
                forget.append((cluster, node))
                continue
            if st.departed or silent <= self.deadline_s:
                continue
            out += self.tracker.update(
                cluster,
                node,
                True,
                now,
                round(silent, 3),
                metric="silence_s",
                threshold=self.deadline_s,
                summary=f"node {cluster}/{node} sent nothing for {silent:.1f} s (deadline {self.deadline_s:g} s)",
                details={"last_seen": st.last_seen, "deadline_s": self.deadline_s},
            )
        for key in forget:
            del self._nodes[key]
            self.stats.inc("forgotten_nodes")
        return self._out(out)

    def _out(self, emits: list[Emit]) -> list[Emit]:
        self.stats.outputs += len(emits)
        return emits

    # --- introspection and checkpoints ---------------------------------------
    def last_seen(self, cluster: str, node: str) -> float | None:
        st = self._nodes.get((cluster, node))
        return None if st is None else st.last_seen

    def unresponsive(self) -> list[tuple[str, str]]:
        """(cluster, node) whose node_unresponsive alert is firing."""
        return [(c, n) for c, n, _ in self.tracker.firing()]

    def __len__(self) -> int:
        return len(self._nodes)

    def snapshot(self) -> dict[str, Any]:
        return {
            "nodes": [[c, n, st.last_seen, st.departed] for (c, n), st in self._nodes.items()],
            "tracker": self.tracker.snapshot(),
        }

    def restore(self, state: Any) -> None:
        state = state or {}
        self._nodes = {(c, n): _Node(float(ls), bool(dep)) for c, n, ls, dep in state.get("nodes", [])}
        self.tracker.restore(state.get("tracker"))
        self._restored = True
