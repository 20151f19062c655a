"""Notification sink: alerts to people through Apprise (e-mail, Slack, Telegram, SMS, webhooks).

Routing by severity (critical to all channels, warning to primary ones, info to
the log) with per-team routes, grouping, flap damping, inhibition, silences in
JetStream KV, at-least-once delivery with retries and a dead-letter subject.
See docs/notify.md.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from swarmwatch.lazy import lazy_exports

if TYPE_CHECKING:
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

_LAZY: dict[str, tuple[str, str]] = {
    "CLUSTER_NODE": ("sinks.notify.config", "CLUSTER_NODE"),
    "ChannelConfig": ("sinks.notify.config", "ChannelConfig"),
    "ConfigError": ("sinks.notify.config", "ConfigError"),
    "DeliveryConfig": ("sinks.notify.config", "DeliveryConfig"),
    "FlapConfig": ("sinks.notify.config", "FlapConfig"),
    "GroupingConfig": ("sinks.notify.config", "GroupingConfig"),
    "InhibitRule": ("sinks.notify.config", "InhibitRule"),
    "NotifyConfig": ("sinks.notify.config", "NotifyConfig"),
    "RouteConfig": ("sinks.notify.config", "RouteConfig"),
    "TimingConfig": ("sinks.notify.config", "TimingConfig"),
    "load_config": ("sinks.notify.config", "load_config"),
    "parse_config": ("sinks.notify.config", "parse_config"),
    "redact_url": ("sinks.notify.config", "redact_url"),
    "ChannelSender": ("sinks.notify.delivery", "ChannelSender"),
    "DeliveryError": ("sinks.notify.delivery", "DeliveryError"),
    "Redactor": ("sinks.notify.redaction", "Redactor"),
    "Grouper": ("sinks.notify.grouping", "Grouper"),
    "Notification": ("sinks.notify.grouping", "Notification"),
    "Tracked": ("sinks.notify.grouping", "Tracked"),
    "render": ("sinks.notify.messages", "render"),
    "Inhibitor": ("sinks.notify.routing", "Inhibitor"),
    "Router": ("sinks.notify.routing", "Router"),
    "alert_labels": ("sinks.notify.routing", "alert_labels"),
    "glob_match": ("sinks.notify.routing", "glob_match"),
    "matches": ("sinks.notify.routing", "matches"),
    "Silence": ("sinks.notify.silences", "Silence"),
    "SilenceCache": ("sinks.notify.silences", "SilenceCache"),
    "SilenceError": ("sinks.notify.silences", "SilenceError"),
    "SilenceStore": ("sinks.notify.silences", "SilenceStore"),
    "parse_duration": ("sinks.notify.silences", "parse_duration"),
    "parse_matchers": ("sinks.notify.silences", "parse_matchers"),
    "NotifySink": ("sinks.notify.worker", "NotifySink"),
    "run_notify_sink": ("sinks.notify.worker", "run_notify_sink"),
}

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


__getattr__, __dir__ = lazy_exports(__name__, globals(), _LAZY, __all__)
