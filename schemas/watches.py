"""Watched thresholds: what the processor's rules compare, published for the producers.

The processor puts one record per processor name into the JetStream KV bucket
:data:`WATCH_BUCKET` (key ``rules.<processor>``); producers watch the bucket,
sample just the watched metrics at a fast cadence and publish an out-of-band
batch the moment a value crosses a threshold. The processor stays the
authority: a watch only tells a producer when to publish early.

Wire form (JSON)::

    {"v": 1, "watches": [{"rule": "cpu_usage_critical", "metric": "cpu.percent",
      "labels": {}, "op": ">", "threshold": 95.0, "hysteresis": 5.0}, ...]}
"""
from __future__ import annotations

import fnmatch

import msgspec

WATCH_BUCKET = "sw_watch"
WATCH_KEY_PREFIX = "rules."
MAX_WATCHES = 1000  # per record; a bigger rule set is cut here (the processor still evaluates every rule)
OPS = (">", ">=", "<", "<=")


class Watch(msgspec.Struct, frozen=True, omit_defaults=True):
    """One threshold: ``metric`` (name or glob) ``op`` ``threshold``, cleared past ``threshold -/+ hysteresis``.

    ``labels``: None matches any series, ``{}`` only the unlabelled one, ``{k: v}`` series carrying those labels.
    """

    metric: str
    op: str
    threshold: float
    hysteresis: float = 0.0
    labels: dict[str, str] | None = None
    rule: str = ""

    @property
    def above(self) -> bool:
        """True when the condition is ``value > / >= threshold``."""
        return self.op in (">", ">=")

    @property
    def clear_threshold(self) -> float:
        return self.threshold - self.hysteresis if self.above else self.threshold + self.hysteresis

    def matches_name(self, name: str) -> bool:
        return name == self.metric or (any(c in self.metric for c in "*?[") and fnmatch.fnmatchcase(name, self.metric))

    def matches_labels(self, labels: dict[str, str] | None) -> bool:
        want = self.labels
        if want is None:
            return True
        if not want:
            return not labels
        return labels is not None and all(labels.get(k) == v for k, v in want.items())

    def active(self, value: float, was_active: bool) -> bool:
        """Whether the condition holds for ``value``: against the threshold, or the clear threshold once active."""
        limit = self.clear_threshold if was_active else self.threshold
        if self.op == ">":
            return value > limit
        if self.op == ">=":
            return value >= limit
        if self.op == "<":
            return value < limit
        return value <= limit


class WatchSet(msgspec.Struct, omit_defaults=True):
    """One processor's watched thresholds (the value stored under ``rules.<processor>``)."""

    watches: list[Watch]
    v: int = 1


_decoder = msgspec.json.Decoder(WatchSet)


def encode_watches(watches: list[Watch]) -> bytes:
    return msgspec.json.encode(WatchSet(watches[:MAX_WATCHES]))


def decode_watches(data: bytes) -> list[Watch]:
    """The watches in a record; ValueError for an unreadable record or an unknown operator."""
    try:
        ws = _decoder.decode(data)
    except msgspec.DecodeError as exc:
        raise ValueError(f"unreadable watch record: {exc}") from None
    for w in ws.watches:
        if w.op not in OPS:
            raise ValueError(f"watch {w.rule or w.metric!r} has operator {w.op!r}; expected one of {', '.join(OPS)}")
    return ws.watches[:MAX_WATCHES]


def watch_key(processor: str) -> str:
    return WATCH_KEY_PREFIX + processor
