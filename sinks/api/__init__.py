"""HTTP API, WebSocket stream, dashboard and Prometheus exposition over a live FleetState."""
from __future__ import annotations

from sinks.api.app import create_app
from sinks.api.backfill import replay
from sinks.api.exposition import render as render_metrics
from sinks.api.live import Hub, LiveFeed, TooManyClients
from sinks.api.server import DEFAULT_HOST, DEFAULT_PORT, ApiServer, check_bind, is_loopback
from sinks.api.state import STATUSES, FleetState, NodeState
from sinks.api.timerange import TimeRangeError, parse_duration, parse_range, parse_time

__all__ = [
    "DEFAULT_HOST",
    "DEFAULT_PORT",
    "STATUSES",
    "ApiServer",
    "FleetState",
    "Hub",
    "LiveFeed",
    "NodeState",
    "TimeRangeError",
    "TooManyClients",
    "check_bind",
    "create_app",
    "is_loopback",
    "parse_duration",
    "parse_range",
    "parse_time",
    "render_metrics",
    "replay",
]
