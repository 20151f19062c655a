"""ExtremesDetector: a value, or its recent level, outside everything seen before.

Most incidents in fleet metrics show up as a value or a short-term level that
the series has never reached: latency above its worst, throughput below its
lowest, a step to a level it never held. This detector keeps, for the raw
value and for rolling means over a few windows, the lowest and highest value
ever seen, and scores how far the current one lies outside that range in
units of the range's width. Once a new level has been seen it is part of the
range, so a step to a new normal alerts once and is then learned.

The score is a tail probability (:mod:`.calibration`): a value beyond all
``n`` earlier ones is rarer than ``n / (n + 1)`` of the series' history, and
an exponential tail beyond the range says by how much, so
``1 - exp(-e / sigma) / (n + 1)`` for an exceedance of ``e`` range widths.
``sigma`` is the mean margin of this series' past records, shrunk towards
``scale`` (:func:`~.calibration.fitted_scale`): pure noise keeps setting
small records and so needs a larger margin than a quiet series.

State per series: two floats per window and the last ``max(windows)`` values.
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
)
from processors.anomaly.calibration import DEFAULT_CAP, DEFAULT_PRIOR_N, beyond_range, beyond_range_many, fitted_scale

DEFAULT_WINDOWS = (1, 20)  # points: the value itself and its rolling mean (the level)
DEFAULT_WARMUP = 250  # points learned before anything is scored
DEFAULT_WARMUP_S = 3600.0  # ... and seconds of history: a 1 Hz series has not shown its range after 4 minutes
DEFAULT_LAG_BLOCKS = 4  # a record is also measured against the range as it was this many blocks ago (0: off; LOCO-chosen)
LAG_BLOCK = 32  # points per block
DEFAULT_SCALE = 0.02  # e-folding of the tail beyond the learned range (range widths; LOCO-chosen, bench/nab_loco.py)


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
    _STATE = ("n", "buf", "hi", "lo", "exc_sum", "exc_n", "first_ts", "snaps", "refill")

    def __init__(
        self,
        windows: Sequence[int] = DEFAULT_WINDOWS,
        warmup: int = DEFAULT_WARMUP,
        scale: float = DEFAULT_SCALE,
        cap: int = DEFAULT_CAP,
        prior_n: float = DEFAULT_PRIOR_N,
        warmup_s: float = DEFAULT_WARMUP_S,
        lag_blocks: int = DEFAULT_LAG_BLOCKS,
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
        self.cap = int(cap)
        self.prior_n = float(prior_n)
        self.warmup_s = float(warmup_s)
        if lag_blocks < 0:
            raise ValueError(f"lag_blocks {lag_blocks!r} must be >= 0")
        self.lag_blocks = int(lag_blocks)
        # (highs, lows) of every window at the last lag_blocks + 1 block boundaries
        self.snaps: deque[list[list[float]]] = deque(maxlen=self.lag_blocks + 1)
        self.first_ts: float | None = None
        self.exc_sum = 0.0
        self.exc_n = 0
        self.n = 0
        self.buf: deque[float] = deque(maxlen=max(self.windows))
        self.hi = [-math.inf] * len(self.windows)
        self.lo = [math.inf] * len(self.windows)
        self.refill = 0  # points still missing from the rolling windows after a gap
        self._cache: tuple[float, list[float]] | None = None

    def _features(self, x: float) -> list[float]:
        if self._cache is not None and self._cache[0] == x:
            return self._cache[1]
        vals = list(self.buf)
        feats = []
        for w in self.windows:
            if self.refill and len(vals) < w - 1:
                feats.append(math.nan)  # a rolling mean still refilling after a gap: neither scored nor learned
                continue
            tail = vals[max(0, len(vals) - (w - 1)):] if w > 1 else []
            feats.append((math.fsum(tail) + x) / (len(tail) + 1))
        self._cache = (x, feats)
        return feats

    def _young(self, ts: float | None) -> bool:
        """Whether the series has less than ``warmup_s`` of history at ``ts`` (never, without timestamps)."""
        if ts is None or self.warmup_s <= 0 or not math.isfinite(ts):
            return False
        return self.first_ts is None or ts - self.first_ts < self.warmup_s

    def strangeness(self, x: float, ts: float | None = None) -> float:
        """How far x or its rolling means leave their all-time range (range widths); NaN in warm-up."""
        if not math.isfinite(x) or self.n < self.warmup or self._young(ts):
            return math.nan
        feats = self._features(x)
        e = max(exceedance(f, h, l) for f, h, l in zip(feats, self.hi, self.lo) if f == f)
        if e > 0.0 and self.lag_blocks and len(self.snaps) == self.snaps.maxlen:
            his, los = self.snaps[0]
            e = max(e, max(exceedance(f, h, l) for f, h, l in zip(feats, his, los) if f == f))
        return e

    def _record(self, x: float, ts: float | None) -> float:
        """Exceedance over the current all-time range only (what the tail scale is fitted to)."""
        if not math.isfinite(x) or self.n < self.warmup or self._young(ts):
            return math.nan
        return max(exceedance(f, h, l) for f, h, l in zip(self._features(x), self.hi, self.lo) if f == f)

    def score_one(self, x: float, ts: float | None = None) -> float:
        sigma = fitted_scale(self.scale, self.prior_n, self.exc_sum, self.exc_n)
        return beyond_range(self.strangeness(x, ts), self.n, sigma, self.cap)

    def learn_one(self, x: float, ts: float | None = None) -> None:
        if not math.isfinite(x):
            return
        e = self._record(x, ts)
        if e > 0.0:
            self.exc_sum += e
            self.exc_n += 1
        if self.first_ts is None and ts is not None and math.isfinite(ts):
            self.first_ts = float(ts)
        for k, f in enumerate(self._features(x)):
            if f != f:
                continue
            if f > self.hi[k]:
                self.hi[k] = f
            if f < self.lo[k]:
                self.lo[k] = f
        self.buf.append(x)
        self.n += 1
        self._cache = None
        self.refill = max(0, self.refill - 1)
        if self.lag_blocks and self.n % LAG_BLOCK == 0:
            self.snaps.append([list(self.hi), list(self.lo)])

    def score_many(self, values: Any, ts: Any = None) -> np.ndarray:
        v, t, ok = split_valid(values, ts)
        if self.n:  # vectorised path assumes a fresh detector
            return super().score_many(values, ts)
        n = len(v)
        e = np.zeros(n)
        e_lag = np.zeros(n)
        i = np.arange(n)
        ref = (i // LAG_BLOCK - self.lag_blocks) * LAG_BLOCK - 1  # last row of the lagged boundary
        has_ref = (ref >= 0) if self.lag_blocks else np.zeros(n, dtype=bool)
        pmax: list[np.ndarray] = []
        pmin: list[np.ndarray] = []
        for k, w in enumerate(self.windows):
            f = expanding_mean(v, w)
            e = np.maximum(e, exceedance_many(f))
            hi_all = np.maximum.accumulate(f) if n else f
            lo_all = np.minimum.accumulate(f) if n else f
            pmax.append(hi_all)
            pmin.append(lo_all)
            if has_ref.any():
                r = np.where(has_ref, ref, 0)
                hr, lr = hi_all[r], lo_all[r]
                wdt = np.where(hr - lr > 0, hr - lr, np.abs(hr) * 0.01 + 1e-9)
                el = np.maximum(np.where(f > hr, (f - hr) / wdt, 0.0), np.where(f < lr, (lr - f) / wdt, 0.0))
                e_lag = np.maximum(e_lag, np.where(has_ref, el, 0.0))
            if n:
                self.hi[k] = float(f.max())
                self.lo[k] = float(f.min())
        rec = e.copy()
        e = np.where(e > 0.0, np.maximum(e, e_lag), 0.0)
        for arr in (e, rec):
            arr[: self.warmup] = 0.0
        if t is not None and self.warmup_s > 0:
            fin = np.isfinite(t)
            if fin.any():
                self.first_ts = float(t[fin][0])
                with np.errstate(invalid="ignore"):
                    young = fin & (t - self.first_ts < self.warmup_s)
                e[young] = 0.0
                rec[young] = 0.0
        out = np.zeros(len(ok))
        pos = np.where(rec > 0.0, rec, 0.0)
        cs = np.concatenate(([0.0], np.cumsum(pos)))
        cn = np.concatenate(([0], np.cumsum(rec > 0.0)))
        sigma = fitted_scale(self.scale, self.prior_n, cs[:-1], cn[:-1])
        out[ok] = beyond_range_many(e, np.arange(len(e)), sigma, self.cap)
        self.exc_sum, self.exc_n = float(cs[-1]), int(cn[-1])
        self.n = len(v)
        self.buf.extend(v[-self.buf.maxlen:].tolist() if len(v) else [])
        if self.lag_blocks:
            last = n // LAG_BLOCK
            for m in range(max(1, last - self.lag_blocks), last + 1):
                j = m * LAG_BLOCK - 1
                self.snaps.append([[float(p[j]) for p in pmax], [float(p[j]) for p in pmin]])
        return out

    def baseline(self) -> dict[str, float]:
        if not self.n:
            return {}
        level = sum(self.buf) / len(self.buf)
        return {"level": level, "low": self.lo[0], "high": self.hi[0]}

    def break_sequence(self) -> None:
        """After a gap: rolling means refill from points after it before they count again."""
        self.buf.clear()
        self.refill = max(self.windows) - 1
        self._cache = None
