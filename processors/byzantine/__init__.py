"""Byzantine-node detection for training fleets: trust scores and ``byzantine`` alerts."""
from __future__ import annotations

from typing import TYPE_CHECKING

from swarmwatch.lazy import lazy_exports

if TYPE_CHECKING:
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

_LAZY: dict[str, tuple[str, str]] = {
    "BacktestInputError": ("processors.byzantine.backtest", "BacktestInputError"),
    "BacktestSummary": ("processors.byzantine.backtest", "BacktestSummary"),
    "backtest_file": ("processors.byzantine.backtest", "backtest_file"),
    "read_events": ("processors.byzantine.backtest", "read_events"),
    "to_event": ("processors.byzantine.backtest", "to_event"),
    "FEATURES": ("processors.byzantine.detector", "FEATURES"),
    "STATISTICS": ("processors.byzantine.detector", "STATISTICS"),
    "ClusterDetector": ("processors.byzantine.detector", "ClusterDetector"),
    "DetectorConfig": ("processors.byzantine.detector", "DetectorConfig"),
    "NodeVerdict": ("processors.byzantine.detector", "NodeVerdict"),
    "RoundResult": ("processors.byzantine.detector", "RoundResult"),
    "ATTACKS": ("processors.byzantine.fleet", "ATTACKS"),
    "Report": ("processors.byzantine.fleet", "Report"),
    "SyntheticFleet": ("processors.byzantine.fleet", "SyntheticFleet"),
    "TRAINING_UPDATE": ("processors.byzantine.operator", "TRAINING_UPDATE"),
    "ByzantineOperator": ("processors.byzantine.operator", "ByzantineOperator"),
    "PayloadError": ("processors.byzantine.operator", "PayloadError"),
    "parse_update": ("processors.byzantine.operator", "parse_update"),
}

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


__getattr__, __dir__ = lazy_exports(__name__, globals(), _LAZY, __all__)
