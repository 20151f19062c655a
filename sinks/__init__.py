"""Sinks: files (JSON lines, Parquet), notifications, HTTP API/WebSocket/dashboard, reports."""
from __future__ import annotations

from typing import TYPE_CHECKING

from swarmwatch.lazy import lazy_exports

if TYPE_CHECKING:
    from sinks.api import ApiServer, FleetState, create_app
    from sinks.compaction import compact
    from sinks.files import FileSink, FileSinkSettings, FileSinkStats, SinkError, run_file_sinks, start_file_sinks
    from sinks.reader import iter_records, read_records
    from sinks.retention import apply_retention
    from sinks.report import build_report, report_from_files, report_from_stream
    from sinks.report import render as render_report
    from sinks.rows import KINDS

_LAZY: dict[str, tuple[str, str]] = {
    "ApiServer": ("sinks.api", "ApiServer"),
    "FleetState": ("sinks.api", "FleetState"),
    "create_app": ("sinks.api", "create_app"),
    "compact": ("sinks.compaction", "compact"),
    "FileSink": ("sinks.files", "FileSink"),
    "FileSinkSettings": ("sinks.files", "FileSinkSettings"),
    "FileSinkStats": ("sinks.files", "FileSinkStats"),
    "SinkError": ("sinks.files", "SinkError"),
    "run_file_sinks": ("sinks.files", "run_file_sinks"),
    "start_file_sinks": ("sinks.files", "start_file_sinks"),
    "iter_records": ("sinks.reader", "iter_records"),
    "read_records": ("sinks.reader", "read_records"),
    "apply_retention": ("sinks.retention", "apply_retention"),
    "build_report": ("sinks.report", "build_report"),
    "report_from_files": ("sinks.report", "report_from_files"),
    "report_from_stream": ("sinks.report", "report_from_stream"),
    "render_report": ("sinks.report", "render"),
    "KINDS": ("sinks.rows", "KINDS"),
}

__all__ = [
    "KINDS",
    "ApiServer",
    "FleetState",
    "build_report",
    "create_app",
    "render_report",
    "report_from_files",
    "report_from_stream",
    "FileSink",
    "FileSinkSettings",
    "FileSinkStats",
    "SinkError",
    "apply_retention",
    "compact",
    "iter_records",
    "read_records",
    "run_file_sinks",
    "start_file_sinks",
]


__getattr__, __dir__ = lazy_exports(__name__, globals(), _LAZY, __all__)
