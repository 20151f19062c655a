"""Which channels an alert goes to, and which firing alerts inhibit others.

Matchers are globs on alert labels (cluster, node, rule, kind, severity):
``cpu_*`` matches, ``!n1`` matches anything but ``n1``.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from fnmatch import fnmatchcase

from schemas import Alert, AlertStatus

from sinks.notify.config import InhibitRule, NotifyConfig


def alert_labels(alert: Alert) -> dict[str, str]:
    """The labels matchers see: cluster, node, rule, kind, severity."""
    return {
        "cluster": alert.cluster,
        "node": alert.node,
        "rule": alert.rule,
        "kind": alert.kind.value,
        "severity": alert.severity.value,
    }


def glob_match(pattern: str, value: str) -> bool:
    """``fnmatch`` glob, case-sensitive; a leading ``!`` negates."""
    if pattern.startswith("!"):
        return not fnmatchcase(value, pattern[1:])
    return fnmatchcase(value, pattern)


def matches(matchers: Mapping[str, str], labels: Mapping[str, str]) -> bool:
    """True if every matcher matches its label (an empty matcher set matches everything)."""
    return all(glob_match(pat, labels.get(key, "")) for key, pat in matchers.items())


class Router:
    """Routes alerts to channel names: explicit routes first, then severity defaults.

    Defaults: critical to every channel, warning to ``primary`` channels, info to
    none (the log only).
    """

    def __init__(self, config: NotifyConfig) -> None:
        self.config = config
        self._order = {ch.name: i for i, ch in enumerate(config.channels)}
        self._all = tuple(ch.name for ch in config.channels)
        self._primary = tuple(ch.name for ch in config.channels if ch.primary)

    def default_channels(self, severity: str) -> tuple[str, ...]:
        if severity == "critical":
            return self._all
        if severity == "warning":
            return self._primary
        return ()

    def channels_for(self, alert: Alert) -> tuple[str, ...]:
        """Channel names for ``alert`` in config order; empty means log only."""
        labels = alert_labels(alert)
        chosen: set[str] = set()
        fall_through = True
        for route in self.config.routes:
            if labels["severity"] == "info" and "severity" not in route.match:
                continue
            if matches(route.match, labels):
                chosen.update(route.channels)
                if not route.continue_:
                    fall_through = False
                    break
        if fall_through:
            chosen.update(self.default_channels(labels["severity"]))
        return tuple(sorted(chosen, key=self._order.__getitem__))


class Inhibitor:
    """Tracks firing alerts that match an inhibit rule's source; says whether a target is inhibited."""

    def __init__(self, rules: Iterable[InhibitRule]) -> None:
        self.rules = list(rules)
        self._sources: list[dict[str, dict[str, str]]] = [{} for _ in self.rules]  # per rule: id -> labels
        self.version = 0  # bumped whenever the set of inhibiting alerts changes

    def observe(self, alert: Alert) -> None:
        """Feed every alert (firing or resolved) the sink sees."""
        if alert.status is not AlertStatus.FIRING:
            self.forget(alert.id)
            return
        labels = alert_labels(alert)
        for rule, sources in zip(self.rules, self._sources):
            if matches(rule.source_match, labels) and alert.id not in sources:
                sources[alert.id] = labels
                self.version += 1

    def forget(self, alert_id: str) -> None:
        for sources in self._sources:
            if sources.pop(alert_id, None) is not None:
                self.version += 1

    def inhibited_by(self, alert: Alert) -> str | None:
        """Id of a firing source alert that inhibits ``alert``, or None."""
        labels: dict[str, str] | None = None
        for rule, sources in zip(self.rules, self._sources):
            if not sources:
                continue
            if labels is None:
                labels = alert_labels(alert)
            if not matches(rule.target_match, labels):
                continue
            for sid, slabels in sources.items():
                if sid != alert.id and all(slabels.get(k) == labels.get(k) for k in rule.equal):
                    return sid
        return None

    def __len__(self) -> int:
        return sum(len(s) for s in self._sources)
