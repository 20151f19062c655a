"""The detector contract: river-style ``score_one`` / ``learn_one``, a high score is anomalous.

Every detector follows one series. ``score_one(x, ts)`` returns a score in
[0, 1] computed only from what was learned before; ``learn_one(x, ts)`` then
folds the point in. Non-finite values (NaN for a gap) score 0 and teach
nothing. State is bounded (O(1) per series), so a fleet of series fits in
memory.

``score_many(values, ts)`` scores a whole array as if the pair had been
called row by row; detectors override it with a vectorised equivalent for
backtests (``tests/test_anomaly_detectors.py`` checks the two agree) and
leave their state exactly where the row-by-row path would have.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from collections import deque
from typing import Any

import numpy as np

from processors.anomaly.calibration import TailCalibrator

DEFAULT_THRESHOLD = 0.9998
"""Score at or above which a point is flagged, live and in backtests alike.

Scores are calibrated tail probabilities (:mod:`.calibration`): 0.9998 means
"rarer than 99.98 % of what this series has done". Chosen by
leave-one-category-out on NAB (``bench/nab_loco.py``, ``bench/RESULTS.md``).
"""


class AnomalyDetector(ABC):
    """Online anomaly detector for one series (river's ``AnomalyDetector`` contract).

    Subclasses implement ``score_one`` and ``learn_one``; ``_STATE`` lists the
    attributes that ``snapshot``/``restore`` carry across restarts.
    """

    name: str = "detector"
    threshold: float = DEFAULT_THRESHOLD
    _STATE: tuple[str, ...] = ()

    @abstractmethod
    def score_one(self, x: float, ts: float | None = None) -> float:
        """Score ``x`` (observed at UNIX time ``ts``) in [0, 1] without learning it."""

    @abstractmethod
    def learn_one(self, x: float, ts: float | None = None) -> None:
        """Fold ``x`` into the state. Non-finite ``x`` is ignored."""

    @property
    def active(self) -> bool:
        """Whether the series is in an anomalous episode after the last learned point."""
        return False

    def process_one(self, x: float, ts: float | None = None) -> float:
        """``score_one`` then ``learn_one``; returns the score."""
        s = self.score_one(x, ts)
        self.learn_one(x, ts)
        return s

    def score_many(self, values: Any, ts: Any = None) -> np.ndarray:
        """Scores of a whole array, row by row (subclasses vectorise this)."""
        v = np.asarray(values, dtype=float)
        t = None if ts is None else np.asarray(ts, dtype=float)
        out = np.zeros(len(v))
        for i in range(len(v)):
            out[i] = self.process_one(float(v[i]), None if t is None else float(t[i]))
        return out

    def baseline(self) -> dict[str, float]:
        """What the detector currently takes as normal (for alert details)."""
        return {}

    def learn_quietly(self, x: float, ts: float | None = None) -> None:
        """Learn ``x`` without it counting as a detection (points in a grace period after a gap)."""
        self.learn_one(x, ts)

    def break_sequence(self) -> None:
        """The series had a gap: forget short-term context (previous value, rolling means), keep the baseline."""

    def snapshot(self) -> dict[str, Any]:
        """State as plain lists and numbers (msgpack/JSON-encodable)."""
        out: dict[str, Any] = {}
        for key in self._STATE:
            val = getattr(self, key)
            if isinstance(val, np.ndarray):
                val = sparse_array(val)
            elif isinstance(val, deque):
                val = {"dq": list(val)}
            elif isinstance(val, AnomalyDetector):
                val = {"det": val.snapshot()}
            elif isinstance(val, TailCalibrator):
                val = {"tail": val.snapshot()}
            elif isinstance(val, list) and val and isinstance(val[0], AnomalyDetector):
                val = {"dets": [d.snapshot() for d in val]}
            out[key] = val
        return out

    def restore(self, state: dict[str, Any]) -> None:
        """Load what ``snapshot`` produced (from a detector built with the same parameters)."""
        for key in self._STATE:
            if key not in state:
                continue
            val = state[key]
            cur = getattr(self, key)
            if isinstance(val, dict) and "nd" in val:
                arr = np.zeros(int(np.prod(val["shape"])), dtype=val["dtype"])
                arr[np.asarray(val["nd"], dtype=np.int64)] = val["v"]
                val = arr.reshape(val["shape"])
            elif isinstance(val, dict) and "dq" in val:
                val = deque(val["dq"], maxlen=cur.maxlen if isinstance(cur, deque) else None)
            elif isinstance(val, dict) and "det" in val:
                cur.restore(val["det"])
                continue
            elif isinstance(val, dict) and "tail" in val:
                cur.restore(val["tail"])
                continue
            elif isinstance(val, dict) and "dets" in val:
                for d, s in zip(cur, val["dets"]):
                    d.restore(s)
                continue
            setattr(self, key, val)


def sparse_array(arr: np.ndarray) -> dict[str, Any]:
    """An array as a checkpoint holds it: count tables are mostly zeros, so only the non-zero cells."""
    flat = arr.ravel()
    nz = np.flatnonzero(flat)
    return {"nd": [int(i) for i in nz], "v": flat[nz].tolist(), "shape": list(arr.shape), "dtype": str(arr.dtype)}


def span(hi: float, lo: float) -> float:
    """Width of a learned range; a zero-width range falls back to 1 % of its magnitude."""
    r = hi - lo
    return r if r > 0 else abs(hi) * 0.01 + 1e-9


def span_many(hi: np.ndarray, lo: np.ndarray) -> np.ndarray:
    """Vectorised :func:`span`."""
    r = hi - lo
    return np.where(r > 0, r, np.abs(hi) * 0.01 + 1e-9)


def exceedance(f: float, hi: float, lo: float, up: bool = True, down: bool = True) -> float:
    """How far ``f`` lies outside [lo, hi], in units of the range width (0 inside)."""
    w = span(hi, lo)
    e = 0.0
    if up and f > hi:
        e = (f - hi) / w
    if down and f < lo:
        e = max(e, (lo - f) / w)
    return e


def past_extremes(f: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Max and min of ``f[:i]`` for every row i (NaN for row 0)."""
    hi = np.empty(len(f))
    lo = np.empty(len(f))
    if len(f):
        hi[0] = lo[0] = np.nan
        hi[1:] = np.maximum.accumulate(f)[:-1]
        lo[1:] = np.minimum.accumulate(f)[:-1]
    return hi, lo


def exceedance_many(f: np.ndarray, up: bool = True, down: bool = True) -> np.ndarray:
    """Row i: exceedance of ``f[i]`` over the range of ``f[:i]`` (0 for row 0)."""
    hi, lo = past_extremes(f)
    w = span_many(hi, lo)
    e = np.zeros(len(f))
    with np.errstate(invalid="ignore"):
        if up:
            e = np.where(f > hi, (f - hi) / w, e)
        if down:
            e = np.where(f < lo, np.maximum(e, (lo - f) / w), e)
    return np.nan_to_num(e, nan=0.0)


def expanding_mean(v: np.ndarray, window: int) -> np.ndarray:
    """Row i: mean of ``v[max(0, i-window+1) : i+1]``."""
    n = len(v)
    if n == 0 or window <= 1:
        return v.astype(float, copy=True)
    ref = v[0]
    c = np.concatenate(([0.0], np.cumsum(v - ref)))
    i = np.arange(1, n + 1)
    lo = np.maximum(0, i - window)
    return (c[i] - c[lo]) / (i - lo) + ref


def occurrences_before(keys: np.ndarray) -> np.ndarray:
    """Row i: how many rows before i hold the same key."""
    n = len(keys)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    order = np.argsort(keys, kind="stable")
    ks = keys[order]
    start = np.ones(n, dtype=bool)
    start[1:] = ks[1:] != ks[:-1]
    pos = np.arange(n)
    first = np.maximum.accumulate(np.where(start, pos, 0))
    out = np.empty(n, dtype=np.int64)
    out[order] = pos - first
    return out


def split_valid(values: Any, ts: Any) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    """Finite values, their timestamps, and the mask of finite rows."""
    v = np.asarray(values, dtype=float)
    ok = np.isfinite(v)
    t = None if ts is None else np.asarray(ts, dtype=float)[ok]
    return v[ok], t, ok
