"""Online anomaly detection: river-style detectors and the operator that runs them per series."""
from __future__ import annotations

from processors.anomaly.backtest import BacktestError, BacktestReport, FileResult, read_series, run_backtest
from processors.anomaly.base import DEFAULT_THRESHOLD, AnomalyDetector
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
    "default_detector",
    "make_detector",
    "read_series",
    "run_backtest",
]
