"""Byzantine-node detection for training fleets: trust scores and ``byzantine`` alerts."""
from __future__ import annotations

from processors.byzantine.backtest import BacktestInputError, BacktestSummary, backtest_file, read_events, to_event
from processors.byzantine.detector import (
    FEATURES,
    STATISTICS,
    ClusterDetector,
    DetectorConfig,
    NodeVerdict,
    RoundResult,
)
from processors.byzantine.fleet import ATTACKS, Report, SyntheticFleet
from processors.byzantine.operator import TRAINING_UPDATE, ByzantineOperator, PayloadError, parse_update

__all__ = [
    "ATTACKS",
    "FEATURES",
    "STATISTICS",
    "TRAINING_UPDATE",
    "BacktestInputError",
    "BacktestSummary",
    "ByzantineOperator",
    "ClusterDetector",
    "DetectorConfig",
    "NodeVerdict",
    "PayloadError",
    "Report",
    "RoundResult",
    "SyntheticFleet",
    "backtest_file",
    "parse_update",
    "read_events",
    "to_event",
]
