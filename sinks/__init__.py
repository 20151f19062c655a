"""Sinks: files (JSON lines, Parquet), notifications, HTTP API/WebSocket/dashboard, reports."""
from __future__ import annotations

from sinks.api import ApiServer, FleetState, create_app
from sinks.compaction import compact
from sinks.files import FileSink, FileSinkSettings, FileSinkStats, SinkError, run_file_sinks, start_file_sinks
from sinks.reader import iter_records, read_records
from sinks.retention import apply_retention
from sinks.report import build_report, report_from_files, report_from_stream
from sinks.report import render as render_report
from sinks.rows import KINDS

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
