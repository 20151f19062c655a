"""Parse the times users type: UNIX seconds, ISO 8601, ``now``, or durations ago (``15m``, ``-2h``)."""
from __future__ import annotations

from datetime import datetime, timezone

from schemas.durations import DurationError
from schemas.durations import parse_duration as _parse_duration

class TimeRangeError(ValueError):
    """A time or range a user gave cannot be read."""


def parse_duration(value: str) -> float:
    """``90s``, ``15m``, ``1h30m``, ``7d``, ``1w`` -> seconds (the one grammar, ``schemas.durations``)."""
    try:
        return _parse_duration(value)
    except DurationError as exc:
        raise TimeRangeError(str(exc)) from None


def _ago(value: str) -> float | None:
    """``15m`` or ``-15m`` -> 900.0 seconds ago; None when ``value`` is not a duration with a unit."""
    try:
        return _parse_duration(value[1:] if value.startswith("-") else value, require_unit=True)
    except DurationError:
        return None


def parse_time(value: str | float | None, now: float, what: str = "time", default: float | None = None) -> float:
    """A point in time as UNIX seconds.

    Accepts UNIX seconds (``1732300000``), ISO 8601 (``2026-11-23T14:00:00Z``;
    naive times are UTC), ``now``, or a duration meaning that long before ``now``
    (``15m``, ``-2h``).
    """
    if value is None or value == "":
        if default is None:
            raise TimeRangeError(f"{what} is required")
        return default
    if isinstance(value, (int, float)):
        return float(value)
    v = value.strip()
    if v == "now":
        return now
    try:
        return float(v)
    except ValueError:
        pass
    ago = _ago(v)
    if ago is not None:
        return now - ago
    try:
        dt = datetime.fromisoformat(v.replace("Z", "+00:00") if v.endswith("Z") else v)
    except ValueError:
        raise TimeRangeError(
            f"{what} {value!r} is invalid; expected UNIX seconds, ISO 8601 (2026-11-23T14:00:00Z), 'now' or a duration ago like '1h'"
        ) from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return dt.timestamp()


def parse_range(since: str | float | None, until: str | float | None, now: float, default_span_s: float = 3600.0) -> tuple[float, float]:
    """(since, until) with defaults ``until=now`` and ``since=until-default_span_s``; refuses since > until."""
    u = parse_time(until, now, "until", default=now)
    s = parse_time(since, now, "since", default=u - default_span_s)
    if s > u:
        raise TimeRangeError(f"since ({since!r}) is after until ({until!r})")
    return s, u
