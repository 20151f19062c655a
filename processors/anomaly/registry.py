"""Detectors by name, as the CLI and the per-family configuration refer to them."""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from processors.anomaly.base import DEFAULT_THRESHOLD, AnomalyDetector
from processors.anomaly.ensemble import MaxEnsemble
from processors.anomaly.extremes import ExtremesDetector
from processors.anomaly.rarity import RarityDetector
from processors.anomaly.robust_z import RobustZDetector
from processors.anomaly.suppression import DEFAULT_REST, RestPeriod

DEFAULT_DETECTOR = "default"
ROBUST_Z_REST = 10  # points


MEMBERS = ("extremes", "seasonal", "sequence")


def member_detector(name: str, params: Mapping[str, Any] | None = None) -> AnomalyDetector:
    """One ensemble member by name (``extremes``, ``seasonal``, ``sequence``), built with ``params``."""
    p = dict(params or {})
    if name == "extremes":
        return ExtremesDetector(**p)
    if name == "seasonal":
        return RarityDetector("hour", **p)
    if name == "sequence":
        return RarityDetector("previous", **p)
    raise ValueError(f"member {name!r} is unknown; expected one of {MEMBERS}")


def default_detector(
    threshold: float = DEFAULT_THRESHOLD,
    rest: int = DEFAULT_REST,
    members: Sequence[str] = MEMBERS,
    extremes: Mapping[str, Any] | None = None,
    seasonal: Mapping[str, Any] | None = None,
    sequence: Mapping[str, Any] | None = None,
    **guards: Any,
) -> RestPeriod:
    """The strong default that needs no per-metric tuning; live and backtests run exactly this.

    Extremes of the value and its rolling means, seasonal (hour-of-day) rarity
    and sequence (previous-value) rarity, each calibrated to a tail
    probability of its own history; the highest wins, behind the
    constant/quantised guard and the family's change floors (``guards``:
    ``alphabet``, ``min_change``, ``min_rel_change``), one detection per episode.
    """
    per = {"extremes": extremes, "seasonal": seasonal, "sequence": sequence}
    return RestPeriod(MaxEnsemble([member_detector(m, per.get(m)) for m in members], **guards), threshold=threshold, rest=rest)


def _single(member: str) -> Callable[..., RestPeriod]:
    def build(threshold: float = DEFAULT_THRESHOLD, rest: int = DEFAULT_REST, **params: Any) -> RestPeriod:
        guards = {k: params.pop(k) for k in ("alphabet", "min_change", "min_rel_change") if k in params}
        return RestPeriod(MaxEnsemble([member_detector(member, params)], **guards), threshold=threshold, rest=rest)

    return build


def _robust_z(threshold: float = DEFAULT_THRESHOLD, rest: int = ROBUST_Z_REST, **params: Any) -> RestPeriod:
    """Robust z against a poisoning-proof baseline, calibrated like every detector: the shared threshold applies."""
    return RestPeriod(RobustZDetector(threshold=threshold, **params), threshold=threshold, rest=rest)


DETECTORS: dict[str, Callable[..., AnomalyDetector]] = {
    "default": default_detector,
    "extremes": _single("extremes"),
    "seasonal": _single("seasonal"),
    "sequence": _single("sequence"),
    "robust_z": _robust_z,
}


def make_detector(name: str = DEFAULT_DETECTOR, threshold: float | None = None, params: Mapping[str, Any] | None = None) -> AnomalyDetector:
    """Build a detector by name; ``threshold`` overrides its alert threshold (default :data:`DEFAULT_THRESHOLD`)."""
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
