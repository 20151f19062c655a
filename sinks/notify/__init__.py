"""Notification sink: alerts to people through Apprise (e-mail, Slack, Telegram, SMS, webhooks).

Routing by severity (critical to all channels, warning to primary ones, info to
the log) with per-team routes, grouping, flap damping, inhibition, silences in
JetStream KV, at-least-once delivery with retries and a dead-letter subject.
See docs/notify.md.
"""
from __future__ import annotations

from sinks.notify.config import (
    CLUSTER_NODE,
    ChannelConfig,
    ConfigError,
    DeliveryConfig,
    FlapConfig,
    GroupingConfig,
    InhibitRule,
    NotifyConfig,
    RouteConfig,
    TimingConfig,
    load_config,
    parse_config,
    redact_url,
)
from sinks.notify.delivery import ChannelSender, DeliveryError
from sinks.notify.redaction import Redactor
from sinks.notify.grouping import Grouper, Notification, Tracked
from sinks.notify.messages import render
from sinks.notify.routing import Inhibitor, Router, alert_labels, glob_match, matches
from sinks.notify.silences import Silence, SilenceCache, SilenceError, SilenceStore, parse_duration, parse_matchers
from sinks.notify.worker import NotifySink, run_notify_sink

__all__ = [
    "CLUSTER_NODE",
    "ChannelConfig",
    "ChannelSender",
    "ConfigError",
    "DeliveryConfig",
    "DeliveryError",
    "FlapConfig",
    "Grouper",
    "GroupingConfig",
    "InhibitRule",
    "Inhibitor",
    "Notification",
    "NotifyConfig",
    "NotifySink",
    "Redactor",
    "RouteConfig",
    "Router",
    "Silence",
    "SilenceCache",
    "SilenceError",
    "SilenceStore",
    "TimingConfig",
    "Tracked",
    "alert_labels",
    "glob_match",
    "load_config",
    "matches",
    "parse_config",
    "parse_duration",
    "parse_matchers",
    "redact_url",
    "render",
    "run_notify_sink",
]
