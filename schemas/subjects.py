"""Subject names: builders, parsers and token validation.

Layout (see ARCHITECTURE.md)::

    sw.metrics.<cluster>.<node>                      MetricBatch
    sw.events.<cluster>.<node>.<kind...>             Event
    sw.agg.<window>.<cluster>.<node>                 WindowAggregate
    sw.alerts.<severity>.<cluster>.<node>.<rule>     Alert
    sw.trust.<cluster>.<node>                        TrustScore
    sw.health.<cluster>                              HealthScore
    sw.dlq.<stage>                                   DeadLetter
"""
from __future__ import annotations

import re
from typing import NamedTuple

PREFIX = "sw"
TELEMETRY_SUBJECTS = ("sw.metrics.>", "sw.events.>")
DERIVED_SUBJECTS = ("sw.agg.>", "sw.alerts.>", "sw.trust.>", "sw.health.>", "sw.dlq.>", "sw.self.>")

_TOKEN_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_KIND_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}(\.[A-Za-z0-9_-]{1,64}){0,4}$")


class SubjectError(ValueError):
    """A name cannot be used as a subject token, or a subject has the wrong shape."""


_KNOWN_TOKENS: set[str] = set()
_KNOWN_TOKENS_MAX = 1_000_000


def check_token(value: str, what: str = "token") -> str:
    """Return ``value`` if it is a valid subject token ([A-Za-z0-9_-], 1-64 chars)."""
    if value.__class__ is str and value in _KNOWN_TOKENS:
        return value
    if not isinstance(value, str) or not _TOKEN_RE.match(value):
        raise SubjectError(
            f"{what} {value!r} is not a valid name; expected 1-64 characters of letters, "
            "digits, '_' or '-' (no '.', '*', '>' or spaces)"
        )
    if len(_KNOWN_TOKENS) < _KNOWN_TOKENS_MAX:
        _KNOWN_TOKENS.add(value)
    return value


def check_kind(kind: str) -> str:
    """Event kinds are 1-5 dot-separated tokens, e.g. ``training.update``."""
    if not isinstance(kind, str) or not _KIND_RE.match(kind):
        raise SubjectError(
            f"event kind {kind!r} is invalid; expected dot-separated tokens of "
            "[A-Za-z0-9_-], e.g. 'training.update'"
        )
    return kind


def window_token(window_s: float) -> str:
    """``10`` -> ``10s``, ``60`` -> ``1m``, ``3600`` -> ``1h``."""
    w = int(window_s)
    if w <= 0 or w != window_s:
        raise SubjectError(f"window {window_s!r} must be a positive whole number of seconds")
    if w % 3600 == 0:
        return f"{w // 3600}h"
    if w % 60 == 0:
        return f"{w // 60}m"
    return f"{w}s"


def metrics(cluster: str, node: str) -> str:
    return f"{PREFIX}.metrics.{check_token(cluster, 'cluster')}.{check_token(node, 'node')}"


def events(cluster: str, node: str, kind: str) -> str:
    return f"{PREFIX}.events.{check_token(cluster, 'cluster')}.{check_token(node, 'node')}.{check_kind(kind)}"


def agg(window_s: float, cluster: str, node: str) -> str:
    return f"{PREFIX}.agg.{window_token(window_s)}.{cluster}.{node}"


def alerts(severity: str, cluster: str, node: str, rule: str) -> str:
    return f"{PREFIX}.alerts.{severity}.{cluster}.{node}.{check_token(rule, 'rule')}"


def trust(cluster: str, node: str) -> str:
    return f"{PREFIX}.trust.{cluster}.{node}"


def health(cluster: str) -> str:
    return f"{PREFIX}.health.{cluster}"


def dlq(stage: str) -> str:
    return f"{PREFIX}.dlq.{check_token(stage, 'stage')}"


def self_metrics(component: str) -> str:
    """swarmwatch's own counters, e.g. ``sw.self.processor``."""
    return f"{PREFIX}.self.{check_token(component, 'component')}"


class ParsedSubject(NamedTuple):
    family: str  # metrics, events, agg, alerts, trust, health, dlq, self
    cluster: str | None
    node: str | None
    rest: str | None  # event kind, window, severity/rule, dlq stage


def parse(subject: str) -> ParsedSubject:
    """Split a swarmwatch subject into its parts; raise SubjectError on other shapes."""
    parts = subject.split(".")
    if len(parts) < 3 or parts[0] != PREFIX:
        raise SubjectError(f"subject {subject!r} is not a swarmwatch subject (sw.<family>...)")
    fam = parts[1]
    if fam == "metrics" and len(parts) == 4:
        return ParsedSubject(fam, parts[2], parts[3], None)
    if fam == "events" and len(parts) >= 5:
        return ParsedSubject(fam, parts[2], parts[3], ".".join(parts[4:]))
    if fam == "agg" and len(parts) == 5:
        return ParsedSubject(fam, parts[3], parts[4], parts[2])
    if fam == "alerts" and len(parts) == 6:
        return ParsedSubject(fam, parts[3], parts[4], f"{parts[2]}.{parts[5]}")
    if fam == "trust" and len(parts) == 4:
        return ParsedSubject(fam, parts[2], parts[3], None)
    if fam == "health" and len(parts) == 3:
        return ParsedSubject(fam, parts[2], None, None)
    if fam in ("dlq", "self") and len(parts) == 3:
        return ParsedSubject(fam, None, None, parts[2])
    raise SubjectError(f"subject {subject!r} does not match any sw.{fam} layout")
