"""MaxEnsemble: several calibrated detectors on one series; the strongest opinion wins.

Members' scores are all tail probabilities of their own history
(:mod:`.calibration`), so taking the highest compares like with like. Two
guards sit in front of them, for the ways fleet data misleads a detector:

* **constant and quantised series** (``cpu.count``, a 0/1 flag, a series
  stuck on a few levels): while the series has taken at most ``alphabet``
  distinct values, a value it has taken before scores 0. It can alert only
  once it changes to a value it has never had.
* **change floors** (per metric family): a value within ``min_change``
  (absolute, in the metric's unit) or ``min_rel_change`` (a fraction of the
  level) of the mean of the previous ``level_window`` values, and no further
  than that outside the range the series has ever had, scores 0. So 1.55 ->
  1.72 ms of jitter never pages whatever the detectors think, while a leak
  that climbs slowly (always close to its recent level) still pages once it
  leaves the old range by more than the floor.

The members' tails are per point; what a person paged by them cares about is
per unit of time. So the ensemble reports the tail per ``period_s`` of the
series' own time: ``1 - min(1, tail * period_s / interval_s)`` with
``interval_s`` the series' mean sampling interval so far (never below one
point). A
series sampled every 5 minutes (NAB) is unchanged; a 1 Hz series needs to be
300 times rarer per point to reach the same score, so a threshold means the
same number of alerts per day whatever the sampling rate.
"""
from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence
from typing import Any

import numpy as np

from processors.anomaly.base import AnomalyDetector, expanding_mean, past_extremes

DEFAULT_ALPHABET = 1  # distinct values a series may take and still count as constant or quantised
DEFAULT_LEVEL_WINDOW = 20  # points whose mean is the level that change floors compare with
DEFAULT_PERIOD_S = 300.0  # tails are reported per this much of the series' time (seconds)


class MaxEnsemble(AnomalyDetector):
    """Score = the highest member score, after the constant/quantised guard and the change floors."""

    name = "ensemble"
    _STATE = ("members", "n", "seen", "overflow", "level", "hi", "lo", "first_ts", "n_ts")

    def __init__(
        self,
        members: Sequence[AnomalyDetector],
        alphabet: int = DEFAULT_ALPHABET,
        min_change: float = 0.0,
        min_rel_change: float = 0.0,
        level_window: int = DEFAULT_LEVEL_WINDOW,
        period_s: float = DEFAULT_PERIOD_S,
    ) -> None:
        if not members:
            raise ValueError("an ensemble needs at least one member detector")
        if alphabet < 0 or level_window < 1:
            raise ValueError(f"alphabet {alphabet!r} must be >= 0 and level_window {level_window!r} >= 1")
        if min_change < 0 or min_rel_change < 0:
            raise ValueError(f"min_change {min_change!r} and min_rel_change {min_rel_change!r} must be >= 0")
        if period_s <= 0:
            raise ValueError(f"period_s {period_s!r} must be > 0 seconds")
        self.members = list(members)
        self.period_s = float(period_s)
        self.first_ts: float | None = None
        self.n_ts = 0  # points learned with a timestamp
        self.alphabet = int(alphabet)
        self.min_change = float(min_change)
        self.min_rel_change = float(min_rel_change)
        self.floors = self.min_change > 0 or self.min_rel_change > 0
        self.n = 0
        self.seen: list[float] = []
        self.overflow = self.alphabet == 0
        self.level: deque[float] = deque(maxlen=int(level_window) if self.floors else 0)
        self.hi = -math.inf  # range of the values so far (for the change floors)
        self.lo = math.inf

    # ------------------------------------------------------------ guards

    def _guarded(self, x: float) -> bool:
        if not self.overflow and x in self.seen:
            return True
        if self.floors and self.level:
            level = math.fsum(self.level) / len(self.level)
            f = max(self.min_change, self.min_rel_change * abs(level))
            if abs(x - level) < f and self.lo - f <= x <= self.hi + f:
                return True
        return False

    def score_one(self, x: float, ts: float | None = None) -> float:
        if not math.isfinite(x) or self._guarded(x):
            # members still see the point in learn_one; nothing to score
            return 0.0
        s = max(m.score_one(x, ts) for m in self.members)
        return self._per_period(s, self._interval(ts))

    def _interval(self, ts: float | None) -> float:
        """Mean sampling interval up to ``ts`` (seconds; inf without two timestamps)."""
        if ts is None or self.first_ts is None or not math.isfinite(ts) or ts <= self.first_ts:
            return math.inf
        return (ts - self.first_ts) / self.n_ts

    def _per_period(self, s: float, interval_s: float) -> float:
        k = self.period_s / interval_s if interval_s < self.period_s else 1.0
        return max(0.0, 1.0 - (1.0 - s) * k) if s > 0.0 else 0.0

    def learn_one(self, x: float, ts: float | None = None) -> None:
        if not math.isfinite(x):
            return
        for m in self.members:
            m.learn_one(x, ts)
        if ts is not None and math.isfinite(ts):
            if self.first_ts is None:
                self.first_ts = float(ts)
            self.n_ts += 1
        self.n += 1
        if not self.overflow and x not in self.seen:
            if len(self.seen) < self.alphabet:
                self.seen.append(x)
            else:
                self.overflow, self.seen = True, []
        if self.floors:
            self.level.append(x)
            self.hi, self.lo = max(self.hi, x), min(self.lo, x)

    def score_many(self, values: Any, ts: Any = None) -> np.ndarray:
        if self.n or self.alphabet == 0:
            return super().score_many(values, ts)
        v = np.asarray(values, dtype=float)
        ok = np.isfinite(v)
        out = self.members[0].score_many(v, ts)
        for m in self.members[1:]:
            out = np.maximum(out, m.score_many(v, ts))
        x = v[ok]
        n = len(x)
        self.n = n
        guard = np.zeros(n, dtype=bool)
        if n:
            uniq, first, inv = np.unique(x, return_index=True, return_inverse=True)
            order = np.sort(first)
            j_over = int(order[self.alphabet]) if len(order) > self.alphabet else n
            i = np.arange(n)
            guard = (i < j_over) & (first[inv] < i)
            if j_over < n:
                self.overflow, self.seen = True, []
            else:
                self.seen = [float(u) for u in x[order]]
            if self.floors:
                lvl = np.empty(n)
                lvl[0] = np.nan
                lvl[1:] = expanding_mean(x, self.level.maxlen or 1)[:-1]
                hi, lo = past_extremes(x)
                with np.errstate(invalid="ignore"):
                    floor = np.maximum(self.min_change, self.min_rel_change * np.abs(lvl))
                    guard |= (np.abs(x - lvl) < floor) & (x <= hi + floor) & (x >= lo - floor)
                self.level.extend(x[-(self.level.maxlen or 1):].tolist())
                self.hi, self.lo = float(x.max()), float(x.min())
        sub = out[ok]
        sub[guard] = 0.0
        if n and ts is not None:
            t = np.asarray(ts, dtype=float)[ok]
            fin = np.isfinite(t)
            interval = np.full(n, np.inf)
            tf = t[fin]
            if len(tf):
                j = np.arange(len(tf))
                with np.errstate(divide="ignore", invalid="ignore"):
                    iv = np.where((j > 0) & (tf > tf[0]), (tf - tf[0]) / np.maximum(j, 1), np.inf)
                interval[fin] = iv
                self.first_ts = float(tf[0])
                self.n_ts = len(tf)
            with np.errstate(divide="ignore"):
                k = np.where(interval < self.period_s, self.period_s / interval, 1.0)
            sub = np.where(sub > 0.0, np.maximum(0.0, 1.0 - (1.0 - sub) * k), 0.0)
        out[ok] = sub
        return out

    # ------------------------------------------------------------ the rest

    def member_scores(self, x: float, ts: float | None = None) -> dict[str, float]:
        """Each member's score for ``x`` (for alert details)."""
        return {m.name: m.score_one(x, ts) for m in self.members}

    def baseline(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for m in self.members:
            out.update(m.baseline())
        return out

    def break_sequence(self) -> None:
        for m in self.members:
            m.break_sequence()
