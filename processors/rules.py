"""Threshold rules: evaluated on every sample as it arrives, not when a window closes.

A rule watches one metric (exact name or glob) on every node, optionally
restricted by labels, and fires when ``value <op> threshold`` has held for
``for_s``. Hysteresis: once firing, the condition stays true until the value
crosses back past ``threshold -/+ hysteresis``; ``keep_firing_for_s`` then
delays the resolve. Built-in defaults follow the requirements: CPU, memory and
disk usage warn at 85 % and are critical at 95 %.
"""
from __future__ import annotations

import fnmatch
import operator as _op
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from schemas import AlertKind, MetricBatch, Severity, subjects
from schemas.watches import Watch

from processors.alerting import AlertTracker
from processors.cardinality import CardinalityLimiter
from processors.configfile import ConfigError, format_validation_error, parse_duration, read_config_file
from processors.operator import Emit, Operator
from processors.windows import layout, series_key

_OPS: dict[str, Callable[[float, float], bool]] = {">": _op.gt, ">=": _op.ge, "<": _op.lt, "<=": _op.le}


class Rule(BaseModel):
    """One threshold rule (``for``/``keep_firing_for`` accept durations like ``30s``)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    name: str
    metric: str
    op: Literal[">", ">=", "<", "<="] = ">"
    threshold: float
    severity: Severity = Severity.WARNING
    for_s: float = Field(0.0, alias="for")
    keep_firing_for_s: float = Field(0.0, alias="keep_firing_for")
    hysteresis: float = Field(0.0, ge=0.0)
    labels: dict[str, str] | None = None  # None: any series; {}: unlabelled only; {k: v}: must match
    summary: str = "{metric} on {cluster}/{node} is {value:.4g} ({op} {threshold:g})"

    @field_validator("name")
    @classmethod
    def _name_is_token(cls, v: str) -> str:
        subjects.check_token(v, "rule name")
        return v

    @field_validator("for_s", "keep_firing_for_s", mode="before")
    @classmethod
    def _duration(cls, v: Any) -> float:
        return parse_duration(v)

    @property
    def clear_threshold(self) -> float:
        """Where a firing alert's condition ends: the threshold moved back by the hysteresis."""
        return self.threshold - self.hysteresis if self.op in (">", ">=") else self.threshold + self.hysteresis


class RuleSet(BaseModel):
    """A rules file: ``defaults`` keeps the built-in set; ``rules`` adds or overrides by name."""

    model_config = ConfigDict(extra="forbid")

    defaults: bool = True
    rules: list[Rule] = []


def default_rules() -> list[Rule]:
    """CPU, memory and disk usage: warning at 85 %, critical at 95 % (REQUIREMENTS.md); ``endpoint_down``."""
    out = []
    for metric, short, for_s, labels in (
        ("cpu.percent", "cpu", "10s", {}),  # total CPU; a busy single core is not an alert
        ("mem.percent", "memory", "0s", {}),
        ("disk.percent", "disk", "0s", None),  # every mount
    ):
        for sev, thr in ((Severity.WARNING, 85.0), (Severity.CRITICAL, 95.0)):
            out.append(
                Rule(
                    name=f"{short}_usage_{sev.value}",
                    metric=metric,
                    op=">",
                    threshold=thr,
                    severity=sev,
                    hysteresis=5.0,
                    keep_firing_for_s=10.0,
                    labels=labels,
                    summary=f"{short} usage on {{cluster}}/{{node}} is {{value:.1f}} % (over {thr:g} %)",
                    **{"for": for_s},
                )
            )
    out.append(endpoint_down_rule())
    return out


def endpoint_down_rule(for_s: str = "30s") -> Rule:
    """``http.up`` (the sidecar's HTTP health checks) at 0 for ``for_s``, per checked target: critical."""
    return Rule(
        name="endpoint_down",
        metric="http.up",
        op="<",
        threshold=0.5,
        severity=Severity.CRITICAL,
        labels=None,  # every target
        summary="endpoint {series} checked from {cluster}/{node} is down",
        **{"for": for_s},
    )


def load_rules(path: str | Path | None) -> list[Rule]:
    """Rules from a YAML or TOML file (or the defaults when ``path`` is None). Raises ConfigError."""
    if path is None:
        return default_rules()
    p = Path(path)
    raw = read_config_file(p, "rules")
    if raw is None:
        raw = {}
    if isinstance(raw, list):
        raw = {"rules": raw}
    if not isinstance(raw, dict):
        raise ConfigError(f"{p}: expected a mapping with a 'rules' list, got {type(raw).__name__}")
    try:
        rs = RuleSet.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(str(p), exc)) from None
    rules = {r.name: r for r in default_rules()} if rs.defaults else {}
    for r in rs.rules:
        rules[r.name] = r
    return list(rules.values())


class _Compiled:
    __slots__ = ("rule", "tracker", "test", "labels")

    def __init__(self, rule: Rule, max_keys: int) -> None:
        self.rule = rule
        self.tracker = AlertTracker(
            rule.name, AlertKind.THRESHOLD, rule.severity, rule.for_s, rule.keep_firing_for_s, max_keys=max_keys
        )
        self.test = _OPS[rule.op]
        self.labels = rule.labels


DEFAULT_MAX_ALERTING_SERIES_PER_NODE = 500  # pending or firing series per node, over all rules
_CARDINALITY_KEY = "~cardinality"  # not a rule name (rule names are subject tokens)


class ThresholdRules(Operator):
    """Evaluates every rule on every matching sample as it arrives."""

    name = "rules"
    wants_metrics = True
    event_kinds = ()
    tick_interval_s = 5.0

    def __init__(
        self, rules: Iterable[Rule] | None = None, max_keys_per_rule: int = 200_000, max_series_per_node: int = DEFAULT_MAX_ALERTING_SERIES_PER_NODE
    ) -> None:
        super().__init__()
        # pending or firing (rule, series) per node: a flood of label variants above a threshold cannot page 200k times
        self.limiter = CardinalityLimiter(self.name, max_series_per_node, max_keys_per_rule)
        self.rules = list(default_rules() if rules is None else rules)
        names = [r.name for r in self.rules]
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise ValueError(f"duplicate rule names: {sorted(dup)}")
        self._compiled = [_Compiled(r, max_keys_per_rule) for r in self.rules]
        self._exact: dict[str, list[_Compiled]] = {}
        self._globs: list[_Compiled] = []
        for c in self._compiled:
            if any(ch in c.rule.metric for ch in "*?["):
                self._globs.append(c)
            else:
                self._exact.setdefault(c.rule.metric, []).append(c)
        self._resolved_names: dict[str, list[_Compiled]] = {}
        self._shapes: dict[tuple[str, str], tuple[list[str], list[Any], list[tuple[int, _Compiled, str]]]] = {}
        self._max_shapes = 200_000

    def _rules_for(self, name: str) -> list[_Compiled]:
        got = self._resolved_names.get(name)
        if got is None:
            got = list(self._exact.get(name, ()))
            got += [c for c in self._globs if fnmatch.fnmatchcase(name, c.rule.metric)]
            if len(self._resolved_names) < 100_000:
                self._resolved_names[name] = got
        return got

    def _slots(self, samples: list[Any]) -> list[tuple[int, _Compiled, str]]:
        """(sample position, rule, series key) for every rule that applies to a batch layout."""
        slots = []
        for i, smp in enumerate(samples):
            for c in self._rules_for(smp.name):
                want = c.labels
                if want is not None:
                    if not want:  # labels: {} means the unlabelled series only (e.g. total CPU, not per core)
                        if smp.labels:
                            continue
                    elif smp.labels is None or any(smp.labels.get(k) != v for k, v in want.items()):
                        continue
                slots.append((i, c, "" if smp.labels is None else series_key(smp.name, smp.labels)))
        return slots

    def on_metrics(self, batch: MetricBatch, now: float) -> Iterable[Emit]:
        self.stats.inputs += 1
        cluster, node, ts, samples = batch.cluster, batch.node, batch.ts, batch.samples
        names, labels = layout(batch)
        nkey = (cluster, node)
        cached = self._shapes.get(nkey)
        if cached is None or cached[0] != names or cached[1] != labels:
            if cached is None and len(self._shapes) >= self._max_shapes:
                self._shapes.clear()  # bounded: layouts are cheap to recompute
            cached = self._shapes[nkey] = (names, labels, self._slots(samples))
        out: list[Emit] = []
        for i, c, series in cached[2]:
            value = samples[i].value
            r = c.rule
            states = c.tracker.states
            key = (cluster, node, series)
            st = states.get(key)
            if st is None:
                if not c.test(value, r.threshold):
                    continue  # the common case: nothing pending, nothing firing
                if not self.limiter.seen(cluster, node, (r.name, series), now):
                    self.stats.inc("series_refused")
                    continue
                if self.limiter.evicted:
                    out.extend(self._drop_evicted(ts))
                active = True
            elif st.firing_since is not None:
                active = c.test(value, r.clear_threshold)
                if active and ts >= st.last_ts:
                    st.last_ts = st.last_active = ts
                    st.value = value
                    self.limiter.seen(cluster, node, (r.name, series), now)  # still firing: not idle
                    continue
            else:
                active = c.test(value, r.threshold)
            name = names[i]
            emits = c.tracker.update(
                cluster,
                node,
                active,
                ts,
                value,
                series=series,
                metric=name,
                threshold=r.threshold,
                summary=r.summary.format(metric=name, series=series, cluster=cluster, node=node, value=value, op=r.op, threshold=r.threshold),
                details={"op": r.op, "for_s": r.for_s, "hysteresis": r.hysteresis, "clear_threshold": r.clear_threshold},
            )
            if emits:
                out.extend(emits)
            if key not in states:
                self.limiter.forget(cluster, node, (r.name, series))
            else:
                self.limiter.seen(cluster, node, (r.name, series), now)
        self.stats.outputs += len(out)
        return out

    def _drop_evicted(self, ts: float) -> list[Emit]:
        """Resolve what the limiter evicted: pending or firing series not seen for its idle time."""
        out: list[Emit] = []
        by_name = {c.rule.name: c for c in self._compiled}
        for cluster, node, (rule, series) in self.limiter.pop_evicted():  # type: ignore[misc]
            c = by_name.get(rule)
            if c is not None:
                self.stats.inc("series_evicted")
                out.extend(c.tracker.expire(cluster, node, ts, f"{series or rule} on {cluster}/{node} went silent", series=series))
        return out

    def on_tick(self, now: float) -> Iterable[Emit]:
        """``cardinality_limit`` alerts of nodes with refused series (and their resolves)."""
        return self.limiter.alerts(now)

    def watches(self) -> list[Watch]:
        """The thresholds these rules compare, for producers' edge sampling (:mod:`schemas.watches`)."""
        return [
            Watch(metric=r.metric, op=r.op, threshold=r.threshold, hysteresis=r.hysteresis,
                  labels=None if r.labels is None else dict(r.labels), rule=r.name)
            for r in self.rules
        ]

    def firing(self) -> list[tuple[str, str, str, str]]:
        """(rule, cluster, node, series) of every firing alert."""
        return [(c.rule.name, *k) for c in self._compiled for k in c.tracker.firing()]

    def snapshot(self) -> Any:
        out: dict[str, Any] = {c.rule.name: c.tracker.snapshot() for c in self._compiled}
        out[_CARDINALITY_KEY] = self.limiter.snapshot()
        return out

    def restore(self, state: Any) -> None:
        state = state or {}
        lim = self.limiter
        self.limiter = CardinalityLimiter(self.name, lim.max_per_node, lim.max_per_cluster, idle_s=lim.idle_s, quiet_s=lim.quiet_s)
        self.limiter.restore(state.get(_CARDINALITY_KEY))
        for c in self._compiled:
            c.tracker.restore(state.get(c.rule.name))
            for (cluster, node, series), st in c.tracker.states.items():
                self.limiter.seen(cluster, node, (c.rule.name, series), st.last_ts)
