"""Stream processors: pure operators and the runtime that feeds them from JetStream."""
from __future__ import annotations

from typing import TYPE_CHECKING

from processors.operator import Emit, FunctionOperator, Operator, OperatorStats, operator
from swarmwatch.lazy import lazy_exports

if TYPE_CHECKING:
    from processors.alerting import AlertTracker, alert_id
    from processors.anomaly import AnomalyOperator, MetricFamily
    from processors.byzantine import ByzantineOperator, DetectorConfig
    from processors.consumer import JetStreamPuller, ack_tokens, stream_seq
    from processors.configfile import ConfigError, parse_duration
    from processors.rules import Rule, ThresholdRules, default_rules, load_rules
    from processors.runtime import Runtime, RuntimeStats
    from processors.liveness import LivenessOperator
    from processors.network import NetworkHealthOperator
    from processors.windows import TumblingWindows, quantile, series_key

_LAZY: dict[str, tuple[str, str]] = {
    "AlertTracker": ("processors.alerting", "AlertTracker"),
    "alert_id": ("processors.alerting", "alert_id"),
    "AnomalyOperator": ("processors.anomaly", "AnomalyOperator"),
    "MetricFamily": ("processors.anomaly", "MetricFamily"),
    "ByzantineOperator": ("processors.byzantine", "ByzantineOperator"),
    "DetectorConfig": ("processors.byzantine", "DetectorConfig"),
    "JetStreamPuller": ("processors.consumer", "JetStreamPuller"),
    "ack_tokens": ("processors.consumer", "ack_tokens"),
    "stream_seq": ("processors.consumer", "stream_seq"),
    "ConfigError": ("processors.configfile", "ConfigError"),
    "parse_duration": ("processors.configfile", "parse_duration"),
    "Rule": ("processors.rules", "Rule"),
    "ThresholdRules": ("processors.rules", "ThresholdRules"),
    "default_rules": ("processors.rules", "default_rules"),
    "load_rules": ("processors.rules", "load_rules"),
    "Runtime": ("processors.runtime", "Runtime"),
    "RuntimeStats": ("processors.runtime", "RuntimeStats"),
    "LivenessOperator": ("processors.liveness", "LivenessOperator"),
    "NetworkHealthOperator": ("processors.network", "NetworkHealthOperator"),
    "TumblingWindows": ("processors.windows", "TumblingWindows"),
    "quantile": ("processors.windows", "quantile"),
    "series_key": ("processors.windows", "series_key"),
}

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


__getattr__, __dir__ = lazy_exports(__name__, globals(), _LAZY, __all__)
