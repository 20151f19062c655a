"""Online anomaly detection: river-style detectors and the operator that runs them per series."""
from __future__ import annotations

from typing import TYPE_CHECKING

from swarmwatch.lazy import lazy_exports

if TYPE_CHECKING:
    from processors.anomaly.backtest import BacktestError, BacktestReport, FileResult, read_series, run_backtest
    from processors.anomaly.base import DEFAULT_THRESHOLD, AnomalyDetector
    from processors.anomaly.calibration import TailCalibrator
    from processors.anomaly.ensemble import MaxEnsemble
    from processors.anomaly.extremes import ExtremesDetector
    from processors.anomaly.operator import (
        ANOMALY_RULE,
        DEFAULT_FAMILIES,
        ERROR_SPIKE_RULE,
        LIVE_THRESHOLD,
        AnomalyOperator,
        MetricFamily,
    )
    from processors.anomaly.rarity import RarityDetector, SeasonalDetector, SequenceDetector
    from processors.anomaly.registry import DETECTORS, default_detector, make_detector
    from processors.anomaly.robust_z import RobustZDetector
    from processors.anomaly.suppression import RestPeriod

_LAZY: dict[str, tuple[str, str]] = {
    "TailCalibrator": ("processors.anomaly.calibration", "TailCalibrator"),
    "BacktestError": ("processors.anomaly.backtest", "BacktestError"),
    "BacktestReport": ("processors.anomaly.backtest", "BacktestReport"),
    "FileResult": ("processors.anomaly.backtest", "FileResult"),
    "read_series": ("processors.anomaly.backtest", "read_series"),
    "run_backtest": ("processors.anomaly.backtest", "run_backtest"),
    "DEFAULT_THRESHOLD": ("processors.anomaly.base", "DEFAULT_THRESHOLD"),
    "AnomalyDetector": ("processors.anomaly.base", "AnomalyDetector"),
    "MaxEnsemble": ("processors.anomaly.ensemble", "MaxEnsemble"),
    "ExtremesDetector": ("processors.anomaly.extremes", "ExtremesDetector"),
    "ANOMALY_RULE": ("processors.anomaly.operator", "ANOMALY_RULE"),
    "DEFAULT_FAMILIES": ("processors.anomaly.operator", "DEFAULT_FAMILIES"),
    "ERROR_SPIKE_RULE": ("processors.anomaly.operator", "ERROR_SPIKE_RULE"),
    "LIVE_THRESHOLD": ("processors.anomaly.operator", "LIVE_THRESHOLD"),
    "AnomalyOperator": ("processors.anomaly.operator", "AnomalyOperator"),
    "MetricFamily": ("processors.anomaly.operator", "MetricFamily"),
    "RarityDetector": ("processors.anomaly.rarity", "RarityDetector"),
    "SeasonalDetector": ("processors.anomaly.rarity", "SeasonalDetector"),
    "SequenceDetector": ("processors.anomaly.rarity", "SequenceDetector"),
    "DETECTORS": ("processors.anomaly.registry", "DETECTORS"),
    "default_detector": ("processors.anomaly.registry", "default_detector"),
    "make_detector": ("processors.anomaly.registry", "make_detector"),
    "RobustZDetector": ("processors.anomaly.robust_z", "RobustZDetector"),
    "RestPeriod": ("processors.anomaly.suppression", "RestPeriod"),
}

__all__ = [
    "ANOMALY_RULE",
    "DEFAULT_FAMILIES",
    "DEFAULT_THRESHOLD",
    "DETECTORS",
    "ERROR_SPIKE_RULE",
    "LIVE_THRESHOLD",
    "AnomalyDetector",
    "AnomalyOperator",
    "BacktestError",
    "BacktestReport",
    "ExtremesDetector",
    "FileResult",
    "MaxEnsemble",
    "MetricFamily",
    "RarityDetector",
    "RestPeriod",
    "RobustZDetector",
    "SeasonalDetector",
    "SequenceDetector",
    "TailCalibrator",
    "default_detector",
    "make_detector",
    "read_series",
    "run_backtest",
]


__getattr__, __dir__ = lazy_exports(__name__, globals(), _LAZY, __all__)
