"""Stream processors: pure operators and the runtime that feeds them from JetStream."""
from __future__ import annotations

from processors.alerting import AlertTracker, alert_id
from processors.anomaly import AnomalyOperator, MetricFamily
from processors.byzantine import ByzantineOperator, DetectorConfig
from processors.consumer import JetStreamPuller, ack_tokens, stream_seq
from processors.operator import Emit, FunctionOperator, Operator, OperatorStats, operator
from processors.configfile import ConfigError, parse_duration
from processors.rules import Rule, ThresholdRules, default_rules, load_rules
from processors.runtime import Runtime, RuntimeStats
from processors.liveness import LivenessOperator
from processors.network import NetworkHealthOperator
from processors.windows import TumblingWindows, quantile, series_key

__all__ = [
    "AlertTracker",
    "AnomalyOperator",
    "ByzantineOperator",
    "LivenessOperator",
    "MetricFamily",
    "NetworkHealthOperator",
    "ConfigError",
    "DetectorConfig",
    "Emit",
    "FunctionOperator",
    "JetStreamPuller",
    "Operator",
    "OperatorStats",
    "Rule",
    "Runtime",
    "RuntimeStats",
    "ThresholdRules",
    "TumblingWindows",
    "ack_tokens",
    "alert_id",
    "default_rules",
    "load_rules",
    "operator",
    "parse_duration",
    "quantile",
    "series_key",
    "stream_seq",
]
