"""RarityDetector: values that are rare in their context (time of day, or the previous value).

The value is quantised into coarse bins (their width fixed from the first
``bin_warmup`` points; values beyond that range get bins of their own). A
count table remembers how often each bin followed each context:

* ``context="hour"`` (the *seasonal* detector): the time of day of the
  sample, in ``buckets`` slots (2-hour slots by default), so a value normal
  at noon but never seen at 3 am stands out, and so does a day whose usual
  peak does not come;
* ``context="previous"`` (the *sequence* detector): the bin of the previous
  value, so a transition the series never makes (a sudden flat line, a new
  oscillation) stands out, in the spirit of CAD OSE's contexts.

The rarity of a point is ``-log((count(context, bin) + 0.5) / (count(context) + 1))``;
its mean over the last ``smooth`` points is the raw strangeness, and the
score is its tail probability against this series' own history of smoothed
rarities (:mod:`.calibration`), so an episode alerts when it is stranger than
anything before it and a new normal stops alerting once it is familiar.

Calendar contexts count only once the series has covered ``min_cycles`` full
periods (days), so that every hour slot has a baseline: before that the
seasonal detector learns but scores nothing, and a first top of the hour or
first morning is never an anomaly. Its calibration then learns for another
``calib_cycles`` periods before it scores, so that the tail of a rarity is
measured against a history that has seen every slot at least once.

State per series: a (contexts x bins) table of uint16 counts. Only the bins
the series has visited are held: a 31-bit mask marks them, and the table has
a column per visited bin in bin order (and, for the sequence context, a row
per visited bin), so a series that lives in 12 of the 31 bins holds 12 x 12
(seasonal, 12 slots of the day) and 12 x 12 cells, not 12 x 31 and 31 x 31.
The row and column sums (how often a context, how often a bin) are not held:
they are summed from the table when a point is scored. The sequence table is
held sparse whenever that is smaller (mostly empty: a series that wanders
over many bins moves only between neighbours): one uint16 array of the
non-zero cells' keys ``context * n_bins + bin`` in order, then their counts,
4 B a cell instead of 2 B for every cell; the form follows from the table
alone, so live and backtest hold the same one, and the scores are the same. Checkpoints hold the
full table (sparse) and its sums, as before. Until the bins are fixed (the
first ``bin_warmup`` points) the detector holds those values instead (float64)
and, for the calendar context, each one's slot (one byte), not their
timestamps. Also held: the last ``smooth - 1`` rarities, a calibration histogram
and a few floats. When a cell would reach 65535 every cell is halved,
rounding up (a pair seen once stays seen), and the sums are recounted: the
rarity ratios are kept and the table forgets slowly. That happens only
after tens of thousands of points in one cell (never within a NAB file;
after about 18 hours of a 1 Hz series stuck in one transition).
"""
from __future__ import annotations

import math
from bisect import bisect_left
from collections import deque
from typing import Any

import numpy as np

from processors.anomaly.base import (
    AnomalyDetector,
    expanding_mean,
    occurrences_before,
    sparse_array,
    split_valid,
)
from processors.anomaly.calibration import DEFAULT_CAP, DEFAULT_PRIOR_N, TailCalibrator

CONTEXTS = ("hour", "previous")
DEFAULT_BINS = 10  # bins across the warm-up range (plus as many below and twice above)
DEFAULT_BIN_WARMUP = 300  # points that fix the bin width
DEFAULT_SMOOTH = {"hour": 12, "previous": 24}  # points averaged into the rarity that is compared (LOCO-chosen per context)
DEFAULT_BUCKETS = 12  # calendar slots per period: 2-hour slots of the day (LOCO chose 12 of {12, 24})
DEFAULT_WARMUP = 400  # points learned before anything is scored
DEFAULT_SCALE = {"hour": 0.1, "previous": 0.05}  # tail extrapolation beyond the largest past rarity, in units of it (LOCO-chosen per context)
DEFAULT_FLOOR = 0.5  # smallest extrapolation base (nats)
DEFAULT_MIN_CYCLES = 3  # full periods covered before calendar contexts count (fixed before the LOCO choice: the missing-peak spec)
DEFAULT_CALIB_CYCLES = 1.0  # ... and then periods of calibration history before they score (LOCO-chosen)
DEFAULT_WARMUP_S = 3600.0  # seconds of history before anything is scored (as well as `warmup` points)
DAY_S = 86_400.0
COUNT_MAX = 0xFFFF  # a cell reaching this halves the table (cells are uint16)
COUNT_DTYPE = np.uint16
SUM_DTYPE = np.uint32  # row and column sums of the table


def halve_counts(counts: np.ndarray) -> np.ndarray:
    """Every count halved, rounding up (no overflow at the dtype's maximum)."""
    return (counts >> 1) + (counts & 1)


class RarityDetector(AnomalyDetector):
    """Scores runs of values that are rare after their context (hour of day or previous value)."""

    _STATE = ("n", "lo", "step", "warm", "counts", "prev", "rbuf", "first_ts", "calib")

    def __init__(
        self,
        context: str = "hour",
        bins: int = DEFAULT_BINS,
        bin_warmup: int = DEFAULT_BIN_WARMUP,
        smooth: int | None = None,
        warmup: int = DEFAULT_WARMUP,
        scale: float | None = None,
        period_s: float = DAY_S,
        buckets: int = DEFAULT_BUCKETS,
        backoff: bool = True,
        floor: float = DEFAULT_FLOOR,
        min_cycles: float = DEFAULT_MIN_CYCLES,
        calib_cycles: float = DEFAULT_CALIB_CYCLES,
        cap: int = DEFAULT_CAP,
        prior_n: float = DEFAULT_PRIOR_N,
        warmup_s: float = DEFAULT_WARMUP_S,
    ) -> None:
        if context not in CONTEXTS:
            raise ValueError(f"context {context!r} is unknown; expected one of {CONTEXTS}")
        if smooth is None:
            smooth = DEFAULT_SMOOTH[context]
        if bins < 1 or bin_warmup < 2 or smooth < 1 or buckets < 1:
            raise ValueError("bins, smooth and buckets must be >= 1 and bin_warmup >= 2")
        if warmup < bin_warmup:
            raise ValueError(f"warmup {warmup!r} must be >= bin_warmup {bin_warmup!r}")
        if scale is None:
            scale = DEFAULT_SCALE[context]
        if scale <= 0 or period_s <= 0:
            raise ValueError("scale and period_s must be > 0")
        if min_cycles < 0 or calib_cycles < 0:
            raise ValueError(f"min_cycles {min_cycles!r} and calib_cycles {calib_cycles!r} must be >= 0")
        self.context = context
        self.name = "seasonal" if context == "hour" else "sequence"
        self.bins = int(bins)
        self.bin_warmup = int(bin_warmup)
        self.smooth = int(smooth)
        self.warmup = int(warmup)
        self.scale = float(scale)
        self.period_s = float(period_s)
        self.buckets = int(buckets)
        self.backoff = bool(backoff)
        self.min_cycles = float(min_cycles) if context == "hour" else 0.0
        self.covered_s = max(self.min_cycles * self.period_s, float(warmup_s))
        # seconds of history before a score counts: coverage, then calibration (calendar contexts only)
        self.scored_s = self.covered_s + (float(calib_cycles) * self.period_s if context == "hour" and self.min_cycles > 0 else 0.0)
        self.n_bins = 3 * self.bins + 1
        self.n_ctx = self.buckets if context == "hour" else self.n_bins
        self.n = 0
        self.lo: float | None = None
        self.step = 1.0
        # until the bins are fixed: the first n values, and (calendar context) the slot of each, in arrays
        # that grow by doubling up to bin_warmup
        self.warm = np.zeros(0)
        self.warm_ctx = np.zeros(0, dtype=np.uint8)
        self.counts: np.ndarray | None = None
        self.visited = 0  # bit b set: bin b has been visited and has a column in the held table (columns in bin order)
        self.prev = -1
        self.rbuf: deque[float] = deque(maxlen=self.smooth - 1)  # the rarities the next smoothed one averages with its own
        self.first_ts: float | None = None
        self.calib = TailCalibrator(scale=self.scale, floor=floor, cap=cap, prior_n=prior_n, min_history=self.warmup - self.bin_warmup)
        self._cache: tuple[float, float | None, float, int, int] | None = None
        self._at: tuple[int, int, int, bool] | None = None  # the sparse table's (context, bin, index, found) last looked up

    # ------------------------------------------------------------ helpers

    def _bin(self, x: float) -> int:
        b = math.floor((x - self.lo) / self.step) if self.lo is not None else 0
        return min(max(b, -self.bins), 2 * self.bins) + self.bins

    def _ctx(self, b: int, ts: float | None) -> int:
        if self.context == "hour":
            if ts is None or not math.isfinite(ts):
                return 0
            return int((ts % self.period_s) // (self.period_s / self.buckets))
        return b if self.prev < 0 else self.prev

    def _fix_bins(self) -> None:
        xs = self.warm[: self._warm_len()].tolist()
        lo, hi = min(xs), max(xs)
        self.lo = lo
        self.step = (hi - lo) / self.bins if hi > lo else max(abs(lo), 1e-9) / self.bins
        self.visited = 0
        self.counts = np.zeros((self.n_ctx if self.context == "hour" else 0, 0), dtype=COUNT_DTYPE)
        hour = self.context == "hour"
        for i, x in enumerate(xs):
            b = self._bin(x)
            self._add(int(self.warm_ctx[i]) if hour else self._ctx(b, None), b)
            self.prev = b
        self.warm = np.zeros(0)
        self.warm_ctx = np.zeros(0, dtype=np.uint8)

    def _slot(self, b: int) -> int:
        """Column of bin b in the held table (-1 if never visited): visited bins below it."""
        if not (self.visited >> b) & 1:
            return -1
        return (self.visited & ((1 << b) - 1)).bit_count()

    def _sparse(self) -> bool:
        """Whether the held table is in the sparse form (1-D: sorted keys ``context * n_bins + bin``, then their counts)."""
        return self.counts is not None and self.counts.ndim == 1

    def table(self) -> np.ndarray:
        """The held table in the dense form (held contexts x visited bins, in bin order), whichever form is held."""
        counts: np.ndarray = self.counts  # type: ignore[assignment]
        if counts.ndim == 2:
            return counts
        seen = self._seen()
        m = len(counts) // 2
        keys = counts[:m].astype(np.int64)
        rows = len(seen) if self.context != "hour" else self.n_ctx
        table = np.zeros((rows, len(seen)), dtype=COUNT_DTYPE)
        ctx, col = np.divmod(keys, self.n_bins)
        r = ctx if self.context == "hour" else np.searchsorted(seen, ctx)
        table[r, np.searchsorted(seen, col)] = counts[m:]
        return table

    def _settle(self) -> None:
        """Hold the sequence table in whichever form is smaller: dense (2 B a cell) or sparse (4 B a non-zero cell);
        dense on a tie.

        The form is a function of the table alone (checked whenever the dense form grows or the sparse form gains a
        cell), so the live and the vectorised path hold the same form. The seasonal table (12 rows, growing with the
        visited bins, not with their square) stays dense: sparse would save ~20 B on the median NAB file and cost
        its live lookups a column scan."""
        if self.counts is None or self.context == "hour" or self.n_ctx * self.n_bins > 0x10000:  # keys must fit uint16
            return
        k = self.visited.bit_count()
        dense_bytes = 2 * k * k
        sparse = self._sparse()
        nnz = len(self.counts) // 2 if sparse else int(np.count_nonzero(self.counts))
        if (4 * nnz < dense_bytes) == sparse:
            return
        self._at = None
        if sparse:
            self.counts = self.table()
            return
        seen = self._seen()
        r, col = np.nonzero(self.counts)  # row-major: keys come out sorted
        ctx = r if self.context == "hour" else seen[r]
        keys = ctx * self.n_bins + seen[col]
        self.counts = np.concatenate((keys, self.counts[r, col])).astype(COUNT_DTYPE)

    @property
    def slot_of(self) -> np.ndarray | None:
        """Column of every bin in the held table, -1 if never visited (int8; computed from ``visited``)."""
        if self.counts is None:
            return None
        out = np.full(self.n_bins, -1, dtype=np.int8)
        seen = self._seen()
        out[seen] = np.arange(len(seen))
        return out

    def _seen(self) -> np.ndarray:
        """Visited bins, ascending (the held table's columns in order)."""
        return np.flatnonzero([(self.visited >> b) & 1 for b in range(self.n_bins)])

    @property
    def ctx_counts(self) -> np.ndarray | None:
        """Points counted per held context (the held table's row sums)."""
        return None if self.counts is None else self.table().sum(axis=1, dtype=np.int64).astype(SUM_DTYPE)

    @property
    def bin_counts(self) -> np.ndarray | None:
        """Points counted per visited bin (the held table's column sums)."""
        return None if self.counts is None else self.table().sum(axis=0, dtype=np.int64).astype(SUM_DTYPE)

    def _lookup(self, c: int, b: int) -> tuple[int, int, int]:
        """(count of bin b after context c, count of context c, count of bin b) so far (row and column sums of the held table)."""
        counts: np.ndarray = self.counts  # type: ignore[assignment]
        if counts.ndim == 1:  # sparse: the context's cells are contiguous (keys sorted), the bin's are picked out
            m = len(counts) // 2
            keys, vals = counts[:m], counts[m:]
            key = c * self.n_bins
            held = keys.tolist()  # bisecting a short list beats numpy's per-call cost
            lo = bisect_left(held, key)
            hi = bisect_left(held, key + self.n_bins, lo)
            i = bisect_left(held, key + b, lo, hi)
            found = i < hi and held[i] == key + b
            self._at = (c, b, i, found)  # where learn_one's _add will count this point (saves it a search)
            return (vals.item(i) if found else 0), sum(vals[lo:hi].tolist()), sum(vals[keys % self.n_bins == b].tolist())
        sb = self._slot(b)
        sc = c if self.context == "hour" else self._slot(c)
        binc = sum(counts[:, sb].tolist()) if sb >= 0 else 0  # Python sums: tiny rows, cheaper than numpy's
        if sc < 0:
            return 0, 0, binc
        ctx = sum(counts[sc].tolist())
        if sb < 0:
            return 0, ctx, 0
        return counts.item(sc, sb), ctx, binc

    def _new_slot(self, b: int) -> int:
        """Give bin b (first visited now) its slot: a zero column (and, for the sequence context, a zero row) in bin order."""
        assert self.counts is not None
        self.visited |= 1 << b
        k = self._slot(b)
        if self.counts.ndim == 1:  # sparse: keys name bins, not slots, so nothing moves
            return k
        self.counts = np.insert(self.counts, k, 0, axis=1)
        if self.context != "hour":
            self.counts = np.insert(self.counts, k, 0, axis=0)
        self._settle()  # the dense form grew: the sparse one may now be smaller
        return k

    def _add(self, c: int, b: int) -> None:
        """Count bin b after context c (halving the table when a cell fills; tables held)."""
        if not (self.visited >> b) & 1:
            self._new_slot(b)
        if self.context != "hour" and not (self.visited >> c) & 1:
            self._new_slot(c)
        counts: np.ndarray = self.counts  # type: ignore[assignment]
        if counts.ndim == 1:
            m = len(counts) // 2
            key = c * self.n_bins + b
            at, self._at = self._at, None
            if at is not None and at[0] == c and at[1] == b:
                i, found = at[2], at[3]
            else:
                i = int(np.searchsorted(counts[:m], key))
                found = i < m and counts.item(i) == key
            if found:
                counts[m + i] += 1
                if counts.item(m + i) >= COUNT_MAX:
                    self._halve()
                return
            self.counts = np.concatenate((counts[:i], [key], counts[i:m], counts[m : m + i], [1], counts[m + i :])).astype(COUNT_DTYPE)
            self._settle()  # one more cell: the dense form may now be smaller
            return
        sc = c if self.context == "hour" else self._slot(c)
        sb = self._slot(b)
        counts[sc, sb] += 1
        if counts.item(sc, sb) >= COUNT_MAX:
            self._halve()

    def _load_dense(self, dense: np.ndarray) -> None:
        """Hold a full (contexts x bins) table compactly: the visited bins' columns (and rows, for the sequence context)."""
        hour = self.context == "hour"
        seen = dense.sum(axis=0) > 0
        if not hour:
            seen |= dense.sum(axis=1) > 0
        order = np.flatnonzero(seen)
        self.visited = sum(1 << int(b) for b in order)
        rows = np.arange(self.n_ctx) if hour else order
        self.counts = dense[np.ix_(rows, order)].astype(COUNT_DTYPE)
        self._settle()

    def _dense(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The held table as full (contexts x bins) counts, context counts and bin counts."""
        assert self.counts is not None
        seen = self._seen()
        counts = np.zeros((self.n_ctx, self.n_bins), dtype=COUNT_DTYPE)
        bins = np.zeros(self.n_bins, dtype=SUM_DTYPE)
        bins[seen] = self.bin_counts
        if self.context == "hour":
            counts[:, seen] = self.table()
            return counts, self.ctx_counts, bins  # type: ignore[return-value]
        counts[np.ix_(seen, seen)] = self.table()
        ctx = np.zeros(self.n_ctx, dtype=SUM_DTYPE)
        ctx[seen] = self.ctx_counts
        return counts, ctx, bins

    def snapshot(self) -> dict[str, Any]:
        """State as plain lists; the count table in the full (contexts x bins) layout, sparse, with its row and column sums."""
        held_counts, held_warm = self.counts, self.warm
        dense = None if self.counts is None else self._dense()
        self.warm = self._warm_pairs()  # type: ignore[assignment]
        if dense is not None:
            self.counts = dense[0]
        try:
            out = super().snapshot()
        finally:
            self.counts, self.warm = held_counts, held_warm
        if dense is None:
            return out
        _, ctx, bins = dense
        snap: dict[str, Any] = {}
        for key, val in out.items():  # the layout checkpoints have always had: the sums follow the table
            snap[key] = val
            if key == "counts":  # not held, and not read back: restore recounts them from the table
                snap["ctx_counts"], snap["bin_counts"] = sparse_array(ctx), sparse_array(bins)
        return snap

    def _warm_pairs(self) -> list[list[float | None]]:
        """The warm-up points as checkpoints hold them, ``[x, ts]``: a calendar context keeps each point's slot (``ts`` is
        the middle of that slot on day 0, which is all the slot needs), the previous-value context no time."""
        k = self._warm_len()
        if self.context != "hour":
            return [[x, None] for x in self.warm[:k].tolist()]
        width = self.period_s / self.buckets
        return [[x, (c + 0.5) * width] for x, c in zip(self.warm[:k].tolist(), self.warm_ctx[:k].tolist())]

    def _warm_len(self) -> int:
        """How many warm-up points are held (the first ``n``; the arrays may be longer)."""
        return min(self.n, len(self.warm)) if self.counts is None else 0

    def _rarity(self, x: float, ts: float | None) -> tuple[float, float, int, int]:
        """(rarity, smoothed rarity, bin, context) of x against the counts so far."""
        if self._cache is not None and self._cache[0] == x and self._cache[1] == ts:
            return self._cache[2:]  # type: ignore[return-value]
        if self.counts is None:
            r, b, c = 0.0, -1, -1
        else:
            b = self._bin(x)
            c = self._ctx(b, ts)
            cell, ctx, binc = self._lookup(c, b)
            prior = (binc + 0.5) / (self.n + 1.0) if self.backoff else 0.5  # bin b's share over all contexts
            r = -math.log((cell + prior) / (ctx + 1.0))
        tail = list(self.rbuf)
        rs = (math.fsum(tail) + r) / (len(tail) + 1)
        self._cache = (x, ts, r, rs, b, c)  # type: ignore[assignment]
        return r, rs, b, c

    # ------------------------------------------------------------ contract

    def _covered(self, ts: float | None) -> bool:
        """Whether enough full periods have passed for calendar contexts to count."""
        if self.covered_s <= 0:
            return True
        if ts is None or not math.isfinite(ts):
            return self.min_cycles <= 0  # without timestamps only the calendar cannot count
        if self.first_ts is None:
            return False
        return ts - self.first_ts >= self.covered_s

    def _calibrated(self, ts: float | None) -> bool:
        """Whether the calibration has learned long enough after coverage for scores to count."""
        if self.scored_s <= self.covered_s or ts is None or not math.isfinite(ts):
            return True  # nothing extra asked, or no clock (then coverage alone decides)
        return self.first_ts is not None and ts - self.first_ts >= self.scored_s

    def strangeness(self, x: float, ts: float | None = None) -> float:
        """Smoothed rarity (nats) of x in its context; NaN while warming up or not yet covered."""
        if not math.isfinite(x) or self.n < self.bin_warmup or not self._covered(ts):
            return math.nan
        return self._rarity(x, ts)[1]

    def score_one(self, x: float, ts: float | None = None) -> float:
        if self.n < self.warmup or not self._calibrated(ts):
            return 0.0
        return self.calib.score(self.strangeness(x, ts))

    def learn_one(self, x: float, ts: float | None = None) -> None:
        if not math.isfinite(x):
            return
        self.calib.learn(self.strangeness(x, ts))
        if self.first_ts is None and ts is not None and math.isfinite(ts):
            self.first_ts = float(ts)
        r, rs, b, c = self._rarity(x, ts)
        self._cache = None
        self.rbuf.append(r)
        self.n += 1
        if self.counts is None:
            i = self.n - 1
            hour = self.context == "hour"
            if i >= len(self.warm):
                grow = min(max(16, 2 * len(self.warm), i + 1), self.bin_warmup) - len(self.warm)
                self.warm = np.concatenate((self.warm, np.zeros(grow)))
                if hour:
                    self.warm_ctx = np.concatenate((self.warm_ctx, np.zeros(grow, dtype=np.uint8)))
            self.warm[i] = x
            if hour:
                self.warm_ctx[i] = self._ctx(-1, ts)
            if self.n >= self.bin_warmup:
                self._fix_bins()
            return
        self._add(c, b)
        self.prev = b

    def _halve(self) -> None:
        """Halve the count table (rounding up); ``n`` becomes its new total."""
        assert self.counts is not None
        if self.counts.ndim == 1:  # sparse: halve the counts, not the keys (no cell empties: rounding up)
            m = len(self.counts) // 2
            self.counts[m:] = halve_counts(self.counts[m:])
            self.n = int(self.counts[m:].sum(dtype=np.int64))
            return
        self.counts = halve_counts(self.counts)
        self.n = int(self.counts.sum(dtype=np.int64))

    def restore(self, state: dict[str, Any]) -> None:
        """Load a snapshot; tables of older checkpoints (int32/int64 counts) are narrowed to uint16.

        A calendar table written with a finer slot count that is a multiple of
        this detector's (24 hourly slots, before slots became 2-hourly) is
        folded: each slot of this detector gets the sum of the finer slots it
        spans, which is what it would have counted itself.
        """
        super().restore(state)
        self._cache = self._at = None
        if isinstance(self.warm, list):  # checkpoints hold the warm-up points as [x, ts] pairs
            pairs = self.warm
            self.warm = np.array([float(p[0]) for p in pairs], dtype=float)
            hour = self.context == "hour"
            self.warm_ctx = np.array([self._ctx(-1, None if p[1] is None else float(p[1])) for p in pairs] if hour else [], dtype=np.uint8)
        if self.counts is None:
            return
        counts = np.asarray(self.counts, dtype=np.int64).ravel()
        rows = counts.size // self.n_bins
        if self.context == "hour" and rows > self.n_ctx and rows % self.n_ctx == 0 and counts.size == rows * self.n_bins:
            counts = counts.reshape(self.n_ctx, rows // self.n_ctx, self.n_bins).sum(axis=1)
        counts = counts.reshape(self.n_ctx, self.n_bins)
        if counts.min(initial=0) < 0:
            raise ValueError("anomaly checkpoint holds negative rarity counts")
        halved = False
        while counts.max(initial=0) >= COUNT_MAX:
            counts, halved = halve_counts(counts), True
        self._load_dense(counts)  # the checkpoint's row and column sums are recounted from the table, not read
        if halved:  # unless halved, n (the table's total) stays as written
            self.n = int(self.table().sum(dtype=np.int64))

    def score_many(self, values: Any, ts: Any = None) -> np.ndarray:
        if self.n:
            return super().score_many(values, ts)
        v, t, ok = split_valid(values, ts)
        n = len(v)
        out = np.zeros(len(ok))
        if n < self.bin_warmup:  # bins never fixed: replay row by row (cheap, short)
            return super().score_many(values, ts)
        out[ok] = self._score_fresh(v, t)
        return out

    def _score_fresh(self, v: np.ndarray, t: np.ndarray | None) -> np.ndarray:
        """Vectorised scores of finite values ``v`` on a fresh detector (row by row after a halving)."""
        n = len(v)
        w = v[: self.bin_warmup]
        lo, hi = float(w.min()), float(w.max())
        self.lo = lo
        self.step = (hi - lo) / self.bins if hi > lo else max(abs(lo), 1e-9) / self.bins
        b = np.clip(np.floor((v - lo) / self.step), -self.bins, 2 * self.bins).astype(np.int64) + self.bins
        if self.context == "hour":
            if t is None:
                c = np.zeros(n, dtype=np.int64)
            else:
                tt = np.where(np.isfinite(t), t, 0.0)
                c = ((tt % self.period_s) // (self.period_s / self.buckets)).astype(np.int64)
        else:
            c = np.empty(n, dtype=np.int64)
            c[0] = b[0]
            c[1:] = b[:-1]
        key = c * self.n_bins + b
        occ = occurrences_before(key)
        full = np.flatnonzero(occ >= COUNT_MAX - 1)
        if len(full) and int(full[0]) + 1 < n:  # a cell reaches COUNT_MAX at row full[0]: vectorise up to it, the rest row by row
            cut = int(full[0]) + 1
            head = self._score_fresh(v[:cut], None if t is None else t[:cut])
            tail = AnomalyDetector.score_many(self, v[cut:], None if t is None else t[cut:])
            return np.concatenate((head, tail))
        prior = (occurrences_before(b) + 0.5) / (np.arange(n) + 1.0) if self.backoff else 0.5
        r = -np.log((occ + prior) / (occurrences_before(c) + 1.0))
        r[: self.bin_warmup] = 0.0
        rs = expanding_mean(r, self.smooth)
        strange = rs.copy()
        strange[: self.bin_warmup] = np.nan
        first = None
        if t is not None and np.isfinite(t).any():
            first = float(t[np.isfinite(t)][0])
        if self.covered_s > 0:
            if first is None:
                if self.min_cycles > 0:
                    strange[:] = np.nan
            else:
                with np.errstate(invalid="ignore"):
                    strange[~(t - first >= self.covered_s)] = np.nan
        sc = self.calib.score_many(strange)
        sc[: self.warmup] = 0.0
        if self.scored_s > self.covered_s and first is not None:
            with np.errstate(invalid="ignore"):
                sc[np.isfinite(t) & (t - first < self.scored_s)] = 0.0  # type: ignore[operator]
        self.first_ts = first
        # leave the state where the row-by-row path would
        self.n = n
        counts = np.bincount(key, minlength=self.n_ctx * self.n_bins).reshape(self.n_ctx, self.n_bins)
        self._load_dense(counts)
        self.prev = int(b[-1])
        self.rbuf.extend(r[-self.smooth:].tolist())  # the deque keeps the last smooth - 1
        if counts.max() >= COUNT_MAX:  # the last row filled a cell: halve as learn_one would
            self._halve()
        return sc

    def baseline(self) -> dict[str, float]:
        if self.counts is None:
            return {}
        return {"rarity_high": self.calib.s_max, "rarity_now": sum(self.rbuf) / max(len(self.rbuf), 1)}  # over the last smooth - 1 points

    def break_sequence(self) -> None:
        """After a gap: the next value has no previous one (the jump across the gap is no transition)."""
        self.prev = -1
        self._cache = None


def SeasonalDetector(**params: Any) -> RarityDetector:
    """Rarity of the value at this hour of the day."""
    return RarityDetector(context="hour", **params)


def SequenceDetector(**params: Any) -> RarityDetector:
    """Rarity of the value after the previous one."""
    return RarityDetector(context="previous", **params)
