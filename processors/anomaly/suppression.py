"""RestPeriod: after a detection, stay quiet for a while (one alert per episode).

Wraps any detector. Once a raw score reaches ``threshold`` the wrapper
returns 0 for the next ``rest`` points, and every further raw score at or
above the threshold restarts that rest. So an episode yields one detection at
its start, and ``active`` stays true while raw detections keep coming, which
is what the alert state machine needs to fire once and resolve once.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from processors.anomaly.base import DEFAULT_THRESHOLD, AnomalyDetector

DEFAULT_REST = 20  # points of silence after a detection (chosen by bench/nab_loco.py)


class RestPeriod(AnomalyDetector):
    """Reports the inner detector's score, muted for ``rest`` points after each detection."""

    _STATE = ("inner", "since_hit", "last_raw")

    def __init__(self, inner: AnomalyDetector, threshold: float = DEFAULT_THRESHOLD, rest: int = DEFAULT_REST) -> None:
        if not 0.0 < threshold <= 1.0:
            raise ValueError(f"threshold {threshold!r} must be in (0, 1]")
        if rest < 0:
            raise ValueError(f"rest {rest!r} must be >= 0 points")
        self.inner = inner
        self.name = inner.name
        self.threshold = float(threshold)
        self.rest = int(rest)
        self.since_hit = self.rest  # points since the last raw detection
        self.last_raw = 0.0
        self._cache: tuple[float, float | None, float] | None = None

    def _raw(self, x: float, ts: float | None) -> float:
        if self._cache is not None and self._cache[0] == x and self._cache[1] == ts:
            return self._cache[2]
        raw = self.inner.score_one(x, ts)
        self._cache = (x, ts, raw)
        return raw

    def score_one(self, x: float, ts: float | None = None) -> float:
        if not math.isfinite(x):
            return 0.0
        raw = self._raw(x, ts)
        return raw if self.since_hit >= self.rest else 0.0

    def learn_one(self, x: float, ts: float | None = None) -> None:
        if not math.isfinite(x):
            return
        raw = self._raw(x, ts)
        self._cache = None
        self.inner.learn_one(x, ts)
        self.last_raw = raw
        self.since_hit = 0 if raw >= self.threshold else min(self.since_hit + 1, self.rest)

    def learn_quietly(self, x: float, ts: float | None = None) -> None:
        if not math.isfinite(x):
            return
        self._cache = None
        self.inner.learn_one(x, ts)
        self.since_hit = min(self.since_hit + 1, self.rest)

    def break_sequence(self) -> None:
        self.inner.break_sequence()

    @property
    def active(self) -> bool:
        """True from a detection until ``rest`` points pass without another."""
        return self.since_hit < self.rest

    def score_many(self, values: Any, ts: Any = None) -> np.ndarray:
        v = np.asarray(values, dtype=float)
        ok = np.isfinite(v)
        raw = self.inner.score_many(v, ts)[ok]
        hit = raw >= self.threshold
        n = len(raw)
        # hits among the previous `rest` valid points, plus the carried-in state
        c = np.concatenate(([0], np.cumsum(hit)))
        i = np.arange(n)
        lo = np.maximum(0, i - self.rest)
        prior = c[i] - c[lo]
        carried = (self.rest - self.since_hit) > i  # a hit before this call still resting
        out_ok = np.where((prior > 0) | carried, 0.0, raw)
        if n:
            hits = np.nonzero(hit)[0]
            if len(hits):
                self.since_hit = min(n - 1 - int(hits[-1]), self.rest)
            else:
                self.since_hit = min(self.since_hit + n, self.rest)
            self.last_raw = float(raw[-1])
        out = np.zeros(len(v))
        out[ok] = out_ok
        return out

    def baseline(self) -> dict[str, float]:
        return self.inner.baseline()
