"""RobustZDetector: distance from a robust running baseline, as a calibrated tail probability.

The baseline is an exponentially weighted centre and mean absolute deviation
learned from residuals clipped at ``clip`` deviations (a Huber-style update),
so no single point moves it far. Points the detector flags are not learned at
all (river's "refuse to learn from anomalies" guard); if ``relearn_after``
flagged points come in a row, that is a new normal: the baseline restarts from
their mean instead of alerting forever.

Direction ``"up"`` suits error counts and latencies (only rises matter),
``"down"`` throughput, ``"both"`` the rest. The raw strangeness is z, the
distance beyond the baseline in deviations. A deviation floor
(``min_scale``, and ``rel_min_scale`` of the baseline's magnitude) keeps
constant and all-zero series from turning noise into large z.

The score is what every detector reports (:mod:`.calibration`): ``1 - tail``
of z against the z this series has shown in normal times, per ``period_s``
of the series' own time (as :class:`~.ensemble.MaxEnsemble` does for the
default detector), so it is compared with the same
:data:`~.base.DEFAULT_THRESHOLD`. Beyond the largest normal z the tail
decays by e every ``tail_scale * max(largest z, tail_floor)`` deviations
(then fitted to this series' own records). An error count that was always 0
has no normal z above 0, so at 1 Hz it pages at about 5.5 deviations
(two errors a second with ``min_scale`` 0.25); zeros themselves have z = 0
and never page. Flagged points teach neither the baseline nor the tail, so a
big burst does not raise the bar for the next one.

This detector is sequential by nature (what it learns depends on what it
flags), so ``score_many`` runs row by row.
"""
from __future__ import annotations

import math

from processors.anomaly.base import DEFAULT_THRESHOLD, AnomalyDetector
from processors.anomaly.calibration import TailCalibrator

DIRECTIONS = ("both", "up", "down")
_MAD_TO_SIGMA = 1.2533  # mean absolute deviation -> standard deviation for a normal
DEFAULT_TAIL_SCALE = 0.1  # prior e-folding of the tail beyond the largest normal z, as a fraction of it
DEFAULT_TAIL_FLOOR = 7.0  # deviations: the prior e-folding is never below tail_scale * this (0.7 deviations)
DEFAULT_PERIOD_S = 300.0  # tails are reported per this much of the series' time (seconds), as the ensemble's


class RobustZDetector(AnomalyDetector):
    """Robust z-score against an EWMA centre and deviation that flagged points cannot move, calibrated.

    >>> d = RobustZDetector(direction="up", warmup=5, min_scale=1.0)
    >>> for x in [0, 1, 0, 2, 1, 0, 1, 0, 1, 2, 0, 1] * 20:
    ...     _ = d.process_one(float(x))
    >>> d.score_one(2.0) < d.threshold <= d.score_one(30.0)
    True
    """

    name = "robust_z"
    _STATE = ("n", "center", "dev", "streak", "streak_sum", "flagged", "calib", "first_ts", "n_ts")

    def __init__(
        self,
        direction: str = "both",
        alpha: float = 0.02,
        warmup: int = 30,
        min_scale: float = 1e-9,
        rel_min_scale: float = 0.01,
        clip: float = 3.0,
        relearn_after: int = 30,
        threshold: float = DEFAULT_THRESHOLD,
        tail_scale: float = DEFAULT_TAIL_SCALE,
        tail_floor: float = DEFAULT_TAIL_FLOOR,
        period_s: float = DEFAULT_PERIOD_S,
    ) -> None:
        if direction not in DIRECTIONS:
            raise ValueError(f"direction {direction!r} is unknown; expected one of {DIRECTIONS}")
        if not 0.0 < alpha < 1.0:
            raise ValueError(f"alpha {alpha!r} must be in (0, 1)")
        if clip <= 0 or min_scale < 0 or rel_min_scale < 0:
            raise ValueError("clip must be > 0; min_scale and rel_min_scale >= 0")
        if warmup < 1 or relearn_after < 1:
            raise ValueError("warmup and relearn_after must be >= 1 point")
        if not 0.0 < threshold <= 1.0:
            raise ValueError(f"threshold {threshold!r} must be in (0, 1]")
        if period_s <= 0:
            raise ValueError(f"period_s {period_s!r} must be > 0 seconds")
        self.direction = direction
        self.alpha = float(alpha)
        self.warmup = int(warmup)
        self.min_scale = float(min_scale)
        self.rel_min_scale = float(rel_min_scale)
        self.clip = float(clip)
        self.relearn_after = int(relearn_after)
        self.threshold = float(threshold)
        self.period_s = float(period_s)
        self.calib = TailCalibrator(scale=tail_scale, floor=tail_floor)
        self.n = 0
        self.center = 0.0
        self.dev = 0.0
        self.streak = 0
        self.streak_sum = 0.0
        self.flagged = False
        self.first_ts: float | None = None
        self.n_ts = 0  # points seen with a timestamp (flagged ones too: they are samples all the same)

    def _scale(self) -> float:
        return max(self.dev * _MAD_TO_SIGMA, self.min_scale, self.rel_min_scale * abs(self.center))

    def _z(self, x: float) -> float:
        d = (x - self.center) / self._scale()
        if self.direction == "up":
            return max(d, 0.0)
        if self.direction == "down":
            return max(-d, 0.0)
        return abs(d)

    def z(self, x: float) -> float:
        """Raw strangeness of ``x``: deviations beyond the baseline (NaN in warm-up)."""
        if not math.isfinite(x) or self.n < self.warmup:
            return math.nan
        return self._z(x)

    def _interval(self, ts: float | None) -> float:
        """Mean sampling interval up to ``ts`` (seconds; inf without two timestamps)."""
        if ts is None or self.first_ts is None or not math.isfinite(ts) or ts <= self.first_ts:
            return math.inf
        return (ts - self.first_ts) / self.n_ts

    def score_one(self, x: float, ts: float | None = None) -> float:
        z = self.z(x)
        if not z > 0.0:
            return 0.0
        s = self.calib.score(z)
        interval = self._interval(ts)
        k = self.period_s / interval if interval < self.period_s else 1.0
        return max(0.0, 1.0 - (1.0 - s) * k) if s > 0.0 else 0.0

    def learn_one(self, x: float, ts: float | None = None) -> None:
        if not math.isfinite(x):
            return
        hit = self.score_one(x, ts) >= self.threshold
        if ts is not None and math.isfinite(ts):
            if self.first_ts is None:
                self.first_ts = float(ts)
            self.n_ts += 1
        if hit:
            self.flagged = True
            self.streak += 1
            self.streak_sum += x
            if self.streak >= self.relearn_after:  # a new normal: restart from it
                self.center = self.streak_sum / self.streak
                self.streak, self.streak_sum = 0, 0.0
            return
        self.flagged = False
        self.streak, self.streak_sum = 0, 0.0
        z = self.z(x)
        if z == z:
            self.calib.learn(z)  # what normal looks like in deviations: only unflagged points
        self.n += 1
        if self.n == 1:
            self.center, self.dev = x, 0.0
            return
        a = max(self.alpha, 1.0 / self.n)
        r = x - self.center
        if self.n > self.warmup:
            lim = self.clip * self._scale()
            r = min(max(r, -lim), lim)
        self.center += a * r
        self.dev += a * (abs(r) - self.dev)

    @property
    def active(self) -> bool:
        return self.flagged

    def baseline(self) -> dict[str, float]:
        return {"center": self.center, "scale": self._scale()}
