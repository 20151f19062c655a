"""MaxEnsemble: several detectors on one series; the strongest opinion wins."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from processors.anomaly.base import AnomalyDetector


class MaxEnsemble(AnomalyDetector):
    """Score = the highest member score. Members are calibrated alike (0.5 = worth a detection)."""

    name = "ensemble"
    _STATE = ("members",)

    def __init__(self, members: Sequence[AnomalyDetector]) -> None:
        if not members:
            raise ValueError("an ensemble needs at least one member detector")
        self.members = list(members)

    def score_one(self, x: float, ts: float | None = None) -> float:
        return max(m.score_one(x, ts) for m in self.members)

    def learn_one(self, x: float, ts: float | None = None) -> None:
        for m in self.members:
            m.learn_one(x, ts)

    def score_many(self, values: Any, ts: Any = None) -> np.ndarray:
        out = self.members[0].score_many(values, ts)
        for m in self.members[1:]:
            out = np.maximum(out, m.score_many(values, ts))
        return out

    def member_scores(self, x: float, ts: float | None = None) -> dict[str, float]:
        """Each member's score for ``x`` (for alert details)."""
        return {m.name: m.score_one(x, ts) for m in self.members}

    def baseline(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for m in self.members:
            out.update(m.baseline())
        return out
