"""HTTP API, WebSocket stream, dashboard and Prometheus exposition over a live FleetState."""
from __future__ import annotations

from typing import TYPE_CHECKING

from swarmwatch.lazy import lazy_exports

if TYPE_CHECKING:
    from sinks.api.app import create_app
    from sinks.api.backfill import replay
    from sinks.api.exposition import render as render_metrics
    from sinks.api.live import Hub, LiveFeed, TooManyClients
    from sinks.api.server import DEFAULT_HOST, DEFAULT_PORT, ApiServer, check_bind, is_loopback
    from sinks.api.state import STATUSES, FleetState, NodeState
    from sinks.api.timerange import TimeRangeError, parse_duration, parse_range, parse_time

_LAZY: dict[str, tuple[str, str]] = {
    "create_app": ("sinks.api.app", "create_app"),
    "replay": ("sinks.api.backfill", "replay"),
    "render_metrics": ("sinks.api.exposition", "render"),
    "Hub": ("sinks.api.live", "Hub"),
    "LiveFeed": ("sinks.api.live", "LiveFeed"),
    "TooManyClients": ("sinks.api.live", "TooManyClients"),
    "DEFAULT_HOST": ("sinks.api.server", "DEFAULT_HOST"),
    "DEFAULT_PORT": ("sinks.api.server", "DEFAULT_PORT"),
    "ApiServer": ("sinks.api.server", "ApiServer"),
    "check_bind": ("sinks.api.server", "check_bind"),
    "is_loopback": ("sinks.api.server", "is_loopback"),
    "STATUSES": ("sinks.api.state", "STATUSES"),
    "FleetState": ("sinks.api.state", "FleetState"),
    "NodeState": ("sinks.api.state", "NodeState"),
    "TimeRangeError": ("sinks.api.timerange", "TimeRangeError"),
    "parse_duration": ("sinks.api.timerange", "parse_duration"),
    "parse_range": ("sinks.api.timerange", "parse_range"),
    "parse_time": ("sinks.api.timerange", "parse_time"),
}

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


__getattr__, __dir__ = lazy_exports(__name__, globals(), _LAZY, __all__)
