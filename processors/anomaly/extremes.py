"""ExtremesDetector: a value, or its recent level, outside everything seen before.

Most incidents in fleet metrics show up as a value or a short-term level that
the series has never reached: latency above its worst, throughput below its
lowest, a step to a level it never held. This detector keeps, for the raw
value and for rolling means over a few windows, the lowest and highest value
ever seen, and scores how far the current one lies outside that range in
units of the range's width. Once a new level has been seen it is part of the
range, so a step to a new normal alerts once and is then learned.

State per series: two floats per window plus the last ``max(windows)`` values.
"""
from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence
from typing import Any

import numpy as np

from processors.anomaly.base import (
    AnomalyDetector,
    exceedance,
    exceedance_many,
    expanding_mean,
    split_valid,
    squash,
    squash_many,
)

DEFAULT_WINDOWS = (1, 20)  # points: the value itself and its rolling mean (the level)
DEFAULT_WARMUP = 250  # points learned before anything is scored
DEFAULT_SCALE = 0.2  # exceedance (in range widths) that scores 1 - 1/e before calibration


class ExtremesDetector(AnomalyDetector):
    """Scores how far the value, or its rolling means, leave their all-time range.

    >>> import random
    >>> rng = random.Random(0)
    >>> d = ExtremesDetector(warmup=100)
    >>> for _ in range(1000):
    ...     _ = d.process_one(50 + rng.uniform(-5, 5))
    >>> d.score_one(52.0) < 0.5 <= d.score_one(80.0)
    True
    """

    name = "extremes"
    _STATE = ("n", "buf", "hi", "lo")

    def __init__(
        self,
        windows: Sequence[int] = DEFAULT_WINDOWS,
        warmup: int = DEFAULT_WARMUP,
        scale: float = DEFAULT_SCALE,
    ) -> None:
        if not windows or any(int(w) < 1 for w in windows):
            raise ValueError(f"windows {windows!r} must be positive point counts")
        if warmup < 1:
            raise ValueError(f"warmup {warmup!r} must be at least 1 point")
        if scale <= 0:
            raise ValueError(f"scale {scale!r} must be > 0")
        self.windows = tuple(int(w) for w in windows)
        self.warmup = int(warmup)
        self.scale = float(scale)
        self.n = 0
        self.buf: deque[float] = deque(maxlen=max(self.windows))
        self.hi = [-math.inf] * len(self.windows)
        self.lo = [math.inf] * len(self.windows)
        self._cache: tuple[float, list[float]] | None = None

    def _features(self, x: float) -> list[float]:
        if self._cache is not None and self._cache[0] == x:
            return self._cache[1]
        vals = list(self.buf)
        feats = []
        for w in self.windows:
            tail = vals[max(0, len(vals) - (w - 1)):] if w > 1 else []
            feats.append((math.fsum(tail) + x) / (len(tail) + 1))
        self._cache = (x, feats)
        return feats

    def score_one(self, x: float, ts: float | None = None) -> float:
        if not math.isfinite(x) or self.n < self.warmup:
            return 0.0
        e = max(exceedance(f, h, l) for f, h, l in zip(self._features(x), self.hi, self.lo))
        return squash(e, self.scale)

    def learn_one(self, x: float, ts: float | None = None) -> None:
        if not math.isfinite(x):
            return
        for k, f in enumerate(self._features(x)):
            if f > self.hi[k]:
                self.hi[k] = f
            if f < self.lo[k]:
                self.lo[k] = f
        self.buf.append(x)
        self.n += 1
        self._cache = None

    def score_many(self, values: Any, ts: Any = None) -> np.ndarray:
        v, _, ok = split_valid(values, ts)
        if self.n:  # vectorised path assumes a fresh detector
            return super().score_many(values, ts)
        e = np.zeros(len(v))
        for k, w in enumerate(self.windows):
            f = expanding_mean(v, w)
            e = np.maximum(e, exceedance_many(f))
            if len(f):
                self.hi[k] = float(f.max())
                self.lo[k] = float(f.min())
        e[: self.warmup] = 0.0
        out = np.zeros(len(ok))
        out[ok] = squash_many(e, self.scale)
        self.n = len(v)
        self.buf.extend(v[-self.buf.maxlen:].tolist() if len(v) else [])
        return out

    def baseline(self) -> dict[str, float]:
        if not self.n:
            return {}
        level = sum(self.buf) / len(self.buf)
        return {"level": level, "low": self.lo[0], "high": self.hi[0]}
