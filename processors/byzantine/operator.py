"""ByzantineOperator: ``training.update`` events in, trust scores and ``byzantine`` alerts out."""
from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

from schemas import AlertKind, Event, Severity, TrustScore, subjects

from processors.alerting import AlertTracker
from processors.byzantine.detector import ClusterDetector, DetectorConfig, RoundResult
from processors.operator import Emit, Operator

TRAINING_UPDATE = "training.update"
DEFAULT_ROUND_TIMEOUT_S = 60.0  # an open round with no new report for this long is judged
DEFAULT_MAX_CLUSTERS = 256
DEFAULT_MAX_OPEN_ROUNDS = 4


class PayloadError(ValueError):
    """A training.update payload lacks a field or has one of the wrong type."""


def parse_update(payload: dict[str, Any]) -> tuple[int, float, float, np.ndarray]:
    """``(round, update_norm, loss, sketch)`` from a training.update payload; PayloadError names the problem."""
    try:
        rnd = payload["round"]
        norm = payload["update_norm"]
        sketch = payload["sketch"]
    except KeyError as exc:
        raise PayloadError(f"training.update payload lacks {exc.args[0]!r}") from None
    if isinstance(rnd, bool) or not isinstance(rnd, int) or rnd < 0:
        raise PayloadError(f"round must be a non-negative integer, got {rnd!r}")
    if isinstance(norm, bool) or not isinstance(norm, (int, float)) or not math.isfinite(norm) or norm < 0:
        raise PayloadError(f"update_norm must be a finite number >= 0, got {norm!r}")
    loss = payload.get("loss")
    if loss is None:
        loss_f = math.nan
    elif isinstance(loss, (int, float)) and not isinstance(loss, bool):
        loss_f = float(loss)
    else:
        raise PayloadError(f"loss must be a number, got {loss!r}")
    if not isinstance(sketch, list) or not sketch:
        raise PayloadError("sketch must be a non-empty list of numbers")
    try:
        x = np.asarray(sketch, dtype=np.float64)
    except (TypeError, ValueError):
        raise PayloadError("sketch must be a non-empty list of numbers") from None
    if x.ndim != 1 or not np.all(np.isfinite(x)):
        raise PayloadError("sketch must be a flat list of finite numbers")
    return rnd, float(norm), loss_f, x


class ByzantineOperator(Operator):
    """Judges each cluster's training rounds and publishes trust and ``byzantine`` alerts.

    A round closes when a report of a later round arrives (``close_lag_rounds``
    later), when it has had no report for ``round_timeout_s`` (on tick), or at
    flush. Every node that reported gets a TrustScore on ``sw.trust.<cluster>.<node>``;
    a node whose evidence crosses a threshold gets a firing alert of kind
    ``byzantine``, resolved after it has behaved for ``resolve_after_rounds``.
    ``observer``, if given, sees every RoundResult (backtests use it).
    """

    name = "byzantine"
    wants_metrics = False
    event_kinds: tuple[str, ...] | None = (TRAINING_UPDATE,)
    tick_interval_s = 1.0

    def __init__(
        self,
        config: DetectorConfig | None = None,
        *,
        severity: Severity = Severity.WARNING,
        close_lag_rounds: int = 0,
        round_timeout_s: float = DEFAULT_ROUND_TIMEOUT_S,
        max_clusters: int = DEFAULT_MAX_CLUSTERS,
        max_open_rounds: int = DEFAULT_MAX_OPEN_ROUNDS,
        emit_trust: bool = True,
        observer: Callable[[str, RoundResult], None] | None = None,
    ) -> None:
        super().__init__()
        if close_lag_rounds < 0:
            raise ValueError(f"close_lag_rounds must be >= 0, got {close_lag_rounds}")
        if round_timeout_s <= 0:
            raise ValueError(f"round_timeout_s must be > 0, got {round_timeout_s}")
        if max_open_rounds < close_lag_rounds + 1:
            raise ValueError(f"max_open_rounds={max_open_rounds} must exceed close_lag_rounds={close_lag_rounds}")
        self.config = config or DetectorConfig()
        self.close_lag_rounds = close_lag_rounds
        self.round_timeout_s = round_timeout_s
        self.max_clusters = max_clusters
        self.max_open_rounds = max_open_rounds
        self.emit_trust = emit_trust
        self.observer = observer
        self.tracker = AlertTracker("byzantine", kind=AlertKind.BYZANTINE, severity=severity)
        self.detectors: dict[str, ClusterDetector] = {}
        self._arrival: dict[str, dict[int, float]] = {}  # cluster -> open round -> wall time of last report

    # ------------------------------------------------------------------ input

    def on_event(self, event: Event, now: float) -> Iterable[Emit]:
        if event.kind != TRAINING_UPDATE:
            return ()
        self.stats.inputs += 1
        try:
            rnd, norm, loss, sketch = parse_update(event.payload)
        except PayloadError:
            self.stats.errors += 1
            self.stats.inc("invalid")
            return ()
        det = self.detectors.get(event.cluster)
        if det is None:
            if len(self.detectors) >= self.max_clusters:
                self.stats.dropped += 1
                self.stats.inc("refused_clusters")
                return ()
            det = self.detectors[event.cluster] = ClusterDetector(self.config)
            self._arrival[event.cluster] = {}
        restarts = det.counts.get("restarts", 0)
        status = det.add(event.node, rnd, norm, loss, sketch, event.ts)
        if det.counts.get("restarts", 0) != restarts:
            self._arrival[event.cluster] = {}
            self.stats.inc("restarts")
        if status != "ok":
            if status == "late":
                self.stats.late += 1
            else:
                self.stats.dropped += 1
                self.stats.inc(status)
            return ()
        arrivals = self._arrival[event.cluster]
        arrivals[rnd] = now
        out: list[Emit] = []
        due = sorted(r for r in arrivals if r < rnd - self.close_lag_rounds)
        extra = len(arrivals) - len(due) - self.max_open_rounds
        if extra > 0:
            due = sorted(set(due) | set(sorted(arrivals)[:extra]))
        for r in due:
            out.extend(self._close(event.cluster, r))
        return out

    def on_tick(self, now: float) -> Iterable[Emit]:
        out: list[Emit] = []
        for cluster, arrivals in list(self._arrival.items()):
            for r in sorted(arrivals):
                if now - arrivals[r] >= self.round_timeout_s:
                    out.extend(self._close(cluster, r))
        return out

    def flush(self, now: float) -> Iterable[Emit]:
        out: list[Emit] = []
        for cluster, arrivals in list(self._arrival.items()):
            for r in sorted(arrivals):
                out.extend(self._close(cluster, r))
        return out

    # ------------------------------------------------------------------ output

    def _close(self, cluster: str, rnd: int) -> list[Emit]:
        arrivals = self._arrival[cluster]
        for r in [r for r in arrivals if r <= rnd]:
            del arrivals[r]
        res = self.detectors[cluster].close(rnd)
        if res is None:
            return []
        self.stats.inc("rounds")
        if self.observer is not None:
            self.observer(cluster, res)
        out: list[Emit] = []
        for v in res.verdicts:
            if self.emit_trust:
                ts = TrustScore(
                    cluster=cluster,
                    node=v.node,
                    ts=res.ts,
                    round=res.round,
                    trust=v.trust,
                    suspicion=v.suspicion,
                    evidence=dict(v.evidence, flagged=v.flagged) if v.flagged or v.evidence else {},
                )
                out.append(Emit(subjects.trust(cluster, v.node), ts, f"trust:{cluster}:{v.node}:{res.round}"))
            if v.flagged or v.resolved:
                details = dict(v.details)
                details.update(round=res.round, detected_round=v.detected_round, evidence=v.evidence, trust=v.trust)
                stat = details.get("statistic", v.reason)
                summary = (
                    f"{v.node} looks Byzantine since round {v.detected_round}: {stat}"
                    + (f" {details['distance_sd']} sd from the honest majority" if "distance_sd" in details else "")
                    + (f" over {details['rounds']} rounds" if "rounds" in details else "")
                )
                out.extend(
                    self.tracker.update(
                        cluster,
                        v.node,
                        v.flagged,
                        res.ts,
                        v.suspicion,
                        metric=f"byzantine.{stat}" if stat else None,
                        threshold=1.0,
                        summary=summary if v.flagged else f"{v.node} has behaved for {self.config.resolve_after_rounds} rounds",
                        details=details,
                    )
                )
        for node in res.evicted:
            out.extend(self.tracker.expire(cluster, node, res.ts, summary=f"{node} stopped reporting"))
        self.stats.outputs += len(out)
        return out

    # ------------------------------------------------------------------ checkpoints

    def snapshot(self) -> dict[str, Any]:
        return {
            "detectors": {c: d.snapshot() for c, d in self.detectors.items()},
            "arrival": {c: {str(r): t for r, t in a.items()} for c, a in self._arrival.items()},
            "tracker": self.tracker.snapshot(),
        }

    def restore(self, state: Any) -> None:
        if not state:
            return
        self.detectors = {}
        for c, snap in state.get("detectors", {}).items():
            d = ClusterDetector(self.config)
            d.restore(snap)
            self.detectors[c] = d
        self._arrival = {c: {int(r): float(t) for r, t in a.items()} for c, a in state.get("arrival", {}).items()}
        for c in self.detectors:
            self._arrival.setdefault(c, {})
        self.tracker.restore(state.get("tracker"))

    def trust_of(self, cluster: str, node: str) -> float | None:
        """Current trust of a node (None if unknown)."""
        d = self.detectors.get(cluster)
        return None if d is None else d.trust_of(node)
