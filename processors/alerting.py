"""Alert state machine shared by every rule-like operator.

``AlertTracker`` follows one rule over many (cluster, node, series) keys and
turns a stream of "condition active?" observations into at most one firing
and one resolved Alert per episode:

    inactive --active--> pending --held for_s--> firing --inactive for keep_firing_for_s--> resolved

Alert ids are deterministic (rule, cluster, node, series, start time), so an
operator replayed after a restart re-emits the same ids and JetStream drops the
duplicates.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from schemas import Alert, AlertKind, AlertStatus, Severity, subjects

from processors.operator import Emit

DEFAULT_MAX_KEYS = 200_000


@dataclass(slots=True)
class _State:
    pending_since: float | None = None
    firing_since: float | None = None
    last_active: float = 0.0
    last_ts: float = 0.0
    severity: str = ""
    value: float | None = None


def alert_id(rule: str, cluster: str, node: str, series: str, started_at: float) -> str:
    """Deterministic id: same rule, node, series and start give the same id."""
    raw = f"{rule}|{cluster}|{node}|{series}|{round(started_at, 3)}"
    return hashlib.blake2b(raw.encode(), digest_size=10).hexdigest()


class AlertTracker:
    """Firing/resolved state for one rule over many nodes and series.

    ``for_s``: how long the condition must hold before firing (seconds of event time).
    ``keep_firing_for_s``: how long it must be clear before resolving.
    Observations older than the key's newest are ignored (counted in ``stale``).
    """

    def __init__(
        self,
        rule: str,
        kind: AlertKind = AlertKind.THRESHOLD,
        severity: Severity = Severity.WARNING,
        for_s: float = 0.0,
        keep_firing_for_s: float = 0.0,
        max_keys: int = DEFAULT_MAX_KEYS,
    ) -> None:
        subjects.check_token(rule, "rule")
        if for_s < 0 or keep_firing_for_s < 0:
            raise ValueError(f"rule {rule!r}: for_s and keep_firing_for_s must be >= 0")
        self.rule = rule
        self.kind = AlertKind(kind)
        self.severity = Severity(severity)
        self.for_s = float(for_s)
        self.keep_firing_for_s = float(keep_firing_for_s)
        self.max_keys = max_keys
        self.states: dict[tuple[str, str, str], _State] = {}  # (cluster, node, series) -> state
        self.stale = 0
        self.refused = 0

    def update(
        self,
        cluster: str,
        node: str,
        active: bool,
        ts: float,
        value: float | None = None,
        *,
        series: str = "",
        metric: str | None = None,
        threshold: float | None = None,
        summary: str = "",
        details: dict[str, Any] | None = None,
        severity: Severity | str | None = None,
    ) -> list[Emit]:
        """Feed one observation; return the Alert Emits it causes (usually none)."""
        key = (cluster, node, series)
        st = self.states.get(key)
        if st is None:
            if not active:
                return []
            if len(self.states) >= self.max_keys:
                self.refused += 1
                return []
            st = self.states[key] = _State(last_ts=ts)
        elif ts < st.last_ts:
            self.stale += 1
            return []
        st.last_ts = ts
        if active:
            st.last_active = ts
            st.value = value
            if st.firing_since is not None:
                return []
            if st.pending_since is None:
                st.pending_since = ts
            if ts - st.pending_since >= self.for_s:
                st.firing_since = st.pending_since
                sev = Severity(severity) if severity is not None else self.severity
                st.severity = sev.value
                return [self._emit(AlertStatus.FIRING, cluster, node, series, st, ts, value, metric, threshold, summary, details)]
            return []
        # inactive
        if st.firing_since is None:
            del self.states[key]
            return []
        if ts - st.last_active >= self.keep_firing_for_s:
            out = self._emit(AlertStatus.RESOLVED, cluster, node, series, st, ts, value, metric, threshold, summary, details)
            del self.states[key]
            return [out]
        return []

    def expire(self, cluster: str, node: str, ts: float, summary: str = "", series: str | None = None) -> list[Emit]:
        """Forget a node (e.g. it left cleanly): resolve what is firing, drop what is pending."""
        out: list[Emit] = []
        for key in [k for k in self.states if k[0] == cluster and k[1] == node and (series is None or k[2] == series)]:
            st = self.states.pop(key)
            if st.firing_since is not None:
                out.append(self._emit(AlertStatus.RESOLVED, cluster, node, key[2], st, ts, st.value, None, None, summary, None))
        return out

    def is_firing(self, cluster: str, node: str, series: str = "") -> bool:
        st = self.states.get((cluster, node, series))
        return st is not None and st.firing_since is not None

    def firing(self) -> list[tuple[str, str, str]]:
        """Keys (cluster, node, series) currently firing."""
        return [k for k, st in self.states.items() if st.firing_since is not None]

    def __len__(self) -> int:
        return len(self.states)

    def _emit(
        self,
        status: AlertStatus,
        cluster: str,
        node: str,
        series: str,
        st: _State,
        ts: float,
        value: float | None,
        metric: str | None,
        threshold: float | None,
        summary: str,
        details: dict[str, Any] | None,
    ) -> Emit:
        started = st.firing_since if st.firing_since is not None else ts
        aid = alert_id(self.rule, cluster, node, series, started)
        sev = st.severity or self.severity.value
        d = dict(details) if details else {}
        if series:
            d.setdefault("series", series)
        alert = Alert(
            id=aid,
            status=status,
            severity=Severity(sev),
            kind=self.kind,
            rule=self.rule,
            cluster=cluster,
            node=node,
            started_at=started,
            ended_at=ts if status is AlertStatus.RESOLVED else None,
            summary=summary or f"{self.rule} {status.value} on {cluster}/{node}",
            metric=metric,
            value=value,
            threshold=threshold,
            details=d,
        )
        return Emit(subjects.alerts(sev, cluster, node, self.rule), alert, f"alert:{aid}:{status.value}")

    def snapshot(self) -> list[list[Any]]:
        return [
            [c, n, s, st.pending_since, st.firing_since, st.last_active, st.last_ts, st.severity, st.value]
            for (c, n, s), st in self.states.items()
        ]

    def restore(self, state: list[list[Any]] | None) -> None:
        self.states = {}
        for c, n, s, pend, fire, last_active, last_ts, sev, value in state or []:
            self.states[(c, n, s)] = _State(pend, fire, last_active, last_ts, sev, value)
