"""TailCalibrator: a detector's raw strangeness becomes a tail probability of its own history.

Every detector computes a raw *strangeness* ``s >= 0`` (how far outside its
learned range, how rare in its context). Raw strangeness means different
things for different detectors and series, so it is never compared with a
threshold directly. Instead each detector keeps a small histogram of the
strangeness it has produced on this series, and reports

    score = 1 - tail,   tail = P(strangeness of this series >= s)

estimated from that history. A score of 0.99 means "rarer than 99 % of what
this series has done". Beyond the largest strangeness ever seen the tail is
extrapolated exponentially (the peaks-over-threshold idea of SPOT, Siffer et
al., KDD 2017, with an exponential tail):

    tail = exp(-(s - s_max) / sigma) / (n + 1),   sigma = scale * max(s_max, floor)

so a point strictly stranger than everything before scores above
``1 - 1/(n + 1)``, and how far above depends on by how much. ``sigma`` is
fitted to the series: it is the mean excess of its past records (each time
it beat its own maximum, by how much), shrunk towards the prior
``scale * max(s_max, floor)`` with the weight of ``prior_n`` records. A noisy
series that keeps setting small records needs a bigger margin to page than a
quiet one whose records are rare. Counts are halved
whenever ``n`` reaches ``cap``, so the rank is over the recent history and
scores mean the same thing after a day as after a year.

Strangeness 0 (inside the learned range, a perfectly common value) always has
tail 1 and scores 0. State: the counts of the bins from the lowest to the
highest one in use (at most ``BINS``; uint16: they never exceed ``cap``), the
first of those bins, and four numbers.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

BINS = 48  # log-spaced strangeness bins; bin 0 holds s <= 0
UNIT = 0.01  # strangeness at which the log spacing starts
PER_OCTAVE = 4  # bins per doubling of (1 + s / UNIT)
DEFAULT_CAP = 1024  # history held: counts are halved at this many; n counts at most this many
DEFAULT_PRIOR_N = 16.0  # weight of the prior tail scale, in records


def count_dtype(cap: int) -> type:
    """Smallest unsigned dtype that holds counts up to ``cap``."""
    return np.uint16 if cap <= 0xFFFF else np.uint32


def bin_of(s: float) -> int:
    """Histogram bin of strangeness ``s``."""
    if not s > 0.0:
        return 0
    return min(1 + int(math.log2(1.0 + s / UNIT) * PER_OCTAVE), BINS - 1)


def bins_of(s: np.ndarray) -> np.ndarray:
    """Vectorised :func:`bin_of` (NaN maps to bin 0)."""
    with np.errstate(invalid="ignore"):
        pos = s > 0.0
        b = np.zeros(len(s), dtype=np.int64)
        b[pos] = np.minimum(1 + (np.log2(1.0 + s[pos] / UNIT) * PER_OCTAVE).astype(np.int64), BINS - 1)
    return b


def fitted_scale(prior: float, prior_n: float, exc_sum: float, exc_n: float) -> float:
    """Mean excess of past records, shrunk towards ``prior`` with weight ``prior_n`` (the exponential tail's MLE)."""
    return (prior * prior_n + exc_sum) / (prior_n + exc_n)


def beyond_range(e: float, n: int, scale: float, cap: int = DEFAULT_CAP) -> float:
    """``1 - tail`` of a value ``e`` range widths beyond the range of ``n`` past values (0 inside it).

    A value beyond all ``n`` earlier ones has tail below ``1 / (n + 1)``; the
    exponential tail says how far below. ``n`` counts at most ``cap``, as the
    histogram does, so the same margin is needed after a day as after a year.
    """
    if not e > 0.0:
        return 0.0
    return 1.0 - math.exp(-e / scale) / (min(n, cap) + 1.0)


def beyond_range_many(e: np.ndarray, n: np.ndarray, scale: float, cap: int = DEFAULT_CAP) -> np.ndarray:
    """Vectorised :func:`beyond_range`."""
    with np.errstate(invalid="ignore"):
        return np.where(e > 0.0, 1.0 - np.exp(-np.where(e > 0.0, e, 0.0) / scale) / (np.minimum(n, cap) + 1.0), 0.0)


class TailCalibrator:
    """Histogram of past strangeness; maps new strangeness to ``1 - tail probability``."""

    __slots__ = ("scale", "floor", "cap", "prior_n", "min_history", "counts", "first", "n", "s_max", "exc_sum", "exc_n")

    def __init__(
        self, scale: float = 0.5, floor: float = 0.1, cap: int = DEFAULT_CAP, prior_n: float = DEFAULT_PRIOR_N, min_history: int = 0
    ) -> None:
        if scale <= 0 or floor <= 0:
            raise ValueError(f"calibration scale {scale!r} and floor {floor!r} must be > 0")
        if cap < 16:
            raise ValueError(f"calibration cap {cap!r} must be >= 16 points")
        self.scale = float(scale)
        self.floor = float(floor)
        self.cap = int(cap)
        if prior_n <= 0:
            raise ValueError(f"prior_n {prior_n!r} must be > 0 records")
        self.prior_n = float(prior_n)
        self.min_history = int(min_history)  # points learned before any score (no history, no tail)
        self.exc_sum = 0.0
        self.exc_n = 0
        self.counts = np.zeros(0, dtype=count_dtype(self.cap))  # bins first .. first + len - 1: the span in use
        self.first = 0
        self.n = 0
        self.s_max = 0.0

    def _full(self) -> np.ndarray:
        """Counts of all ``BINS`` bins."""
        full = np.zeros(BINS, dtype=self.counts.dtype)
        full[self.first : self.first + len(self.counts)] = self.counts
        return full

    def _hold(self, full: np.ndarray) -> None:
        """Hold only the span of ``full`` from its lowest to its highest non-zero bin."""
        nz = np.flatnonzero(full)
        if len(nz) == 0:
            self.first, self.counts = 0, full[:0].copy()
        else:
            self.first = int(nz[0])
            self.counts = full[nz[0] : nz[-1] + 1].copy()

    def score(self, s: float) -> float:
        """``1 - tail`` of strangeness ``s`` against the history (0 for s <= 0 or NaN)."""
        if not s > 0.0 or self.n < self.min_history:
            return 0.0
        if s > self.s_max:
            sigma = fitted_scale(self.scale * max(self.s_max, self.floor), self.prior_n, self.exc_sum, self.exc_n)
            return 1.0 - math.exp(-(s - self.s_max) / sigma) / (self.n + 1.0)
        i = bin_of(s) - self.first  # position of its bin in the held span
        held = self.counts
        if i < 0:
            above, eq = sum(held.tolist()), 0
        elif i >= len(held):
            above, eq = 0, 0
        else:
            above, eq = sum(held[i + 1 :].tolist()), held.item(i)
        tail = (above + 0.5 * eq + 1.0) / (self.n + 1.0)
        return max(0.0, 1.0 - tail)

    def learn(self, s: float) -> None:
        """Fold strangeness ``s`` into the history (NaN is ignored)."""
        if math.isnan(s):
            return
        b = bin_of(s)
        i = b - self.first
        if len(self.counts) == 0:
            self.first, i = b, 0
            self.counts = np.zeros(1, dtype=self.counts.dtype)
        elif i < 0:
            self.counts = np.concatenate((np.zeros(-i, dtype=self.counts.dtype), self.counts))
            self.first, i = b, 0
        elif i >= len(self.counts):
            self.counts = np.concatenate((self.counts, np.zeros(i + 1 - len(self.counts), dtype=self.counts.dtype)))
        self.counts[i] += 1
        self.n += 1
        if s > self.s_max:
            if self.s_max > 0.0:
                self.exc_sum += s - self.s_max
                self.exc_n += 1
            self.s_max = s
        if self.n >= self.cap:
            self._hold(self._full() // 2)
            self.n = int(self.counts.sum())

    def score_many(self, s: np.ndarray) -> np.ndarray:
        """Scores of a whole array as if ``score`` then ``learn`` ran row by row; leaves the state there."""
        s = np.asarray(s, dtype=float)
        out = np.zeros(len(s))
        valid = ~np.isnan(s)
        idx = np.flatnonzero(valid)
        sv = s[idx]
        b = bins_of(sv)
        self.counts, self.first = self._full(), 0  # all bins while scoring; the span in use again at the end
        res = np.zeros(len(sv))
        start = 0
        while start < len(sv):
            stop = min(len(sv), start + (self.cap - self.n))  # the next halving point
            seg_b, seg_s = b[start:stop], sv[start:stop]
            m = stop - start
            rows = np.arange(m)
            # only the bins this chunk uses: counts before each row = held counts + earlier rows of the chunk
            uniq, inv = np.unique(seg_b, return_inverse=True)
            onehot = np.zeros((m, len(uniq)), dtype=np.int32)
            onehot[rows, inv] = 1
            within = np.cumsum(onehot, axis=0) - onehot
            held_ge = np.cumsum(self.counts[::-1])[::-1]  # held counts in bins >= k
            ge = held_ge[seg_b] + np.cumsum(within[:, ::-1], axis=1)[:, ::-1][rows, inv]
            eq = self.counts[seg_b] + within[rows, inv]
            n_before = self.n + rows
            tail_in = (ge - eq + 0.5 * eq + 1.0) / (n_before + 1.0)
            prev_max = np.maximum.accumulate(np.concatenate(([self.s_max], seg_s)))[:-1]
            rec = (seg_s > prev_max) & (prev_max > 0.0)
            exc = np.where(rec, seg_s - prev_max, 0.0)
            cs = self.exc_sum + np.concatenate(([0.0], np.cumsum(exc)))
            cn = self.exc_n + np.concatenate(([0], np.cumsum(rec)))
            sigma = fitted_scale(self.scale * np.maximum(prev_max, self.floor), self.prior_n, cs[:-1], cn[:-1])
            tail_out = np.exp(-(seg_s - prev_max) / sigma) / (n_before + 1.0)
            r = np.where(seg_s > prev_max, 1.0 - tail_out, np.maximum(0.0, 1.0 - tail_in))
            res[start:stop] = np.where((seg_s > 0.0) & (n_before >= self.min_history), r, 0.0)
            self.counts = (self.counts + np.bincount(seg_b, minlength=BINS)).astype(count_dtype(self.cap))
            self.n += m
            self.s_max = float(max(self.s_max, seg_s.max()))
            self.exc_sum = float(cs[-1])
            self.exc_n = int(cn[-1])
            if self.n >= self.cap:
                self.counts //= 2
                self.n = int(self.counts.sum())
            start = stop
        self._hold(self.counts)
        out[idx] = res
        return out

    def snapshot(self) -> dict[str, Any]:
        nz = np.flatnonzero(self.counts)
        return {"nz": (nz + self.first).tolist(), "c": self.counts[nz].tolist(), "n": self.n, "max": self.s_max, "xs": self.exc_sum, "xn": self.exc_n}

    def restore(self, state: dict[str, Any]) -> None:
        counts = np.zeros(BINS, dtype=np.int64)
        counts[np.asarray(state.get("nz", []), dtype=np.int64)] = state.get("c", [])
        self._hold(np.minimum(counts, self.cap).astype(count_dtype(self.cap)))
        self.n = int(state.get("n", 0))
        self.s_max = float(state.get("max", 0.0))
        self.exc_sum = float(state.get("xs", 0.0))
        self.exc_n = int(state.get("xn", 0))
