"""Sinks: files (JSON lines, Parquet), notifications, HTTP API/WebSocket/dashboard, reports."""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

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


def __getattr__(name: str) -> Any:
    """Load a public name or a submodule on first use (PEP 562), so importing the package stays cheap."""
    target = _LAZY.get(name)
    if target is None:
        try:
            return importlib.import_module(f"{__name__}.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"{__name__}.{name}":
                raise
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
    value = getattr(importlib.import_module(target[0]), target[1])
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
