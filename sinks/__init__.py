"""Sinks: files (JSON lines, Parquet), notifications, HTTP API/WebSocket/dashboard, reports."""
from __future__ import annotations

from sinks.compaction import compact
from sinks.files import FileSink, FileSinkSettings, FileSinkStats, SinkError, run_file_sinks, start_file_sinks
from sinks.reader import iter_records, read_records
from sinks.retention import apply_retention
from sinks.rows import KINDS

__all__ = [
    "KINDS",
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
