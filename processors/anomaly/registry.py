"""Detectors by name, as the CLI and the per-family configuration refer to them."""
from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from processors.anomaly.base import DEFAULT_THRESHOLD, AnomalyDetector
from processors.anomaly.ensemble import MaxEnsemble
from processors.anomaly.extremes import ExtremesDetector
from processors.anomaly.rarity import RarityDetector
from processors.anomaly.robust_z import RobustZDetector
from processors.anomaly.suppression import DEFAULT_REST, RestPeriod

DEFAULT_DETECTOR = "default"
ROBUST_Z_REST = 10  # points


def default_detector(threshold: float = DEFAULT_THRESHOLD, rest: int = DEFAULT_REST) -> RestPeriod:
    """The strong default that needs no per-metric tuning.

    Extremes of the value and its rolling means, seasonal (hour-of-day) rarity
    and sequence (previous-value) rarity, the highest wins, one detection per
    episode.
    """
    return RestPeriod(
        MaxEnsemble([ExtremesDetector(), RarityDetector("hour"), RarityDetector("previous")]),
        threshold=threshold,
        rest=rest,
    )


def _wrapped(factory: Callable[..., AnomalyDetector], default_rest: int) -> Callable[..., RestPeriod]:
    def build(threshold: float = DEFAULT_THRESHOLD, rest: int = default_rest, **params: Any) -> RestPeriod:
        return RestPeriod(factory(**params), threshold=threshold, rest=rest)

    return build


def _robust_z(threshold: float = DEFAULT_THRESHOLD, rest: int = ROBUST_Z_REST, **params: Any) -> RestPeriod:
    return RestPeriod(RobustZDetector(threshold=threshold, **params), threshold=threshold, rest=rest)


DETECTORS: dict[str, Callable[..., AnomalyDetector]] = {
    "default": default_detector,
    "extremes": _wrapped(ExtremesDetector, DEFAULT_REST),
    "seasonal": _wrapped(lambda **p: RarityDetector("hour", **p), DEFAULT_REST),
    "sequence": _wrapped(lambda **p: RarityDetector("previous", **p), DEFAULT_REST),
    "robust_z": _robust_z,
}


def make_detector(name: str = DEFAULT_DETECTOR, threshold: float | None = None, params: Mapping[str, Any] | None = None) -> AnomalyDetector:
    """Build a detector by name; ``threshold`` overrides its alert threshold (default 0.5)."""
    factory = DETECTORS.get(name)
    if factory is None:
        raise ValueError(f"detector {name!r} is unknown; expected one of {sorted(DETECTORS)}")
    kw = dict(params or {})
    if threshold is not None:
        kw["threshold"] = threshold
    try:
        return factory(**kw)
    except TypeError as exc:
        raise ValueError(f"detector {name!r}: bad parameters {sorted(kw)}: {exc}") from None
