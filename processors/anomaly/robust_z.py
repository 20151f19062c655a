"""RobustZDetector: distance from a robust running baseline, guarded against poisoning.

The baseline is an exponentially weighted centre and mean absolute deviation
learned from residuals clipped at ``clip`` deviations (a Huber-style update),
so no single point moves it far. Points the detector flags are not learned at
all (river's "refuse to learn from anomalies" guard); if ``relearn_after``
flagged points come in a row, that is a new normal: the baseline restarts from
their mean instead of alerting forever.

Direction ``"up"`` suits error counts and latencies (only rises matter),
``"down"`` throughput, ``"both"`` the rest. The score is ``z / (z + z_half)``
with z in deviations beyond the baseline, so it is 0.5 at ``z = z_half``.
A deviation floor (``min_scale``, and ``rel_min_scale`` of the baseline's
magnitude) keeps constant and all-zero series from turning noise into alerts.

This detector is sequential by nature (what it learns depends on what it
flags), so ``score_many`` runs row by row.
"""
from __future__ import annotations

import math

from processors.anomaly.base import AnomalyDetector

DIRECTIONS = ("both", "up", "down")
_MAD_TO_SIGMA = 1.2533  # mean absolute deviation -> standard deviation for a normal


class RobustZDetector(AnomalyDetector):
    """Robust z-score against an EWMA centre and deviation that flagged points cannot move.

    >>> d = RobustZDetector(direction="up", warmup=5, min_scale=1.0)
    >>> for x in [0, 1, 0, 2, 1, 0, 1, 0, 1, 2, 0, 1]:
    ...     _ = d.process_one(float(x))
    >>> d.score_one(1.0) < 0.5 <= d.score_one(30.0)
    True
    """

    name = "robust_z"
    _STATE = ("n", "center", "dev", "streak", "streak_sum", "flagged")

    def __init__(
        self,
        direction: str = "both",
        alpha: float = 0.02,
        z_half: float = 5.0,
        warmup: int = 30,
        min_scale: float = 1e-9,
        rel_min_scale: float = 0.01,
        clip: float = 3.0,
        relearn_after: int = 30,
        threshold: float = 0.5,
    ) -> None:
        if direction not in DIRECTIONS:
            raise ValueError(f"direction {direction!r} is unknown; expected one of {DIRECTIONS}")
        if not 0.0 < alpha < 1.0:
            raise ValueError(f"alpha {alpha!r} must be in (0, 1)")
        if z_half <= 0 or clip <= 0 or min_scale < 0 or rel_min_scale < 0:
            raise ValueError("z_half and clip must be > 0; min_scale and rel_min_scale >= 0")
        if warmup < 1 or relearn_after < 1:
            raise ValueError("warmup and relearn_after must be >= 1 point")
        if not 0.0 < threshold <= 1.0:
            raise ValueError(f"threshold {threshold!r} must be in (0, 1]")
        self.direction = direction
        self.alpha = float(alpha)
        self.z_half = float(z_half)
        self.warmup = int(warmup)
        self.min_scale = float(min_scale)
        self.rel_min_scale = float(rel_min_scale)
        self.clip = float(clip)
        self.relearn_after = int(relearn_after)
        self.threshold = float(threshold)
        self.n = 0
        self.center = 0.0
        self.dev = 0.0
        self.streak = 0
        self.streak_sum = 0.0
        self.flagged = False

    def _scale(self) -> float:
        return max(self.dev * _MAD_TO_SIGMA, self.min_scale, self.rel_min_scale * abs(self.center))

    def _z(self, x: float) -> float:
        d = (x - self.center) / self._scale()
        if self.direction == "up":
            return max(d, 0.0)
        if self.direction == "down":
            return max(-d, 0.0)
        return abs(d)

    def score_one(self, x: float, ts: float | None = None) -> float:
        if not math.isfinite(x) or self.n < self.warmup:
            return 0.0
        z = self._z(x)
        return z / (z + self.z_half)

    def learn_one(self, x: float, ts: float | None = None) -> None:
        if not math.isfinite(x):
            return
        if self.score_one(x, ts) >= self.threshold:
            self.flagged = True
            self.streak += 1
            self.streak_sum += x
            if self.streak >= self.relearn_after:  # a new normal: restart from it
                self.center = self.streak_sum / self.streak
                self.streak, self.streak_sum = 0, 0.0
            return
        self.flagged = False
        self.streak, self.streak_sum = 0, 0.0
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
