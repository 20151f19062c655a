"""The one duration grammar of swarmwatch: CLI flags, config files, rules, silences and the API.

A duration is a number of seconds (``90``, ``2.5``) or one or more parts of a
number and a unit, largest first or not (``1h30m``, ``1h 30m``, ``500ms``,
``1w2d``). Units: ``ms``, ``s``, ``m``, ``h``, ``d``, ``w`` (any case).
Negative durations are refused; "ago" is the caller's business (``-2h`` in
``sinks.api.timerange``).
"""
from __future__ import annotations

import re

UNIT_S: dict[str, float] = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
EXAMPLES = "e.g. 30s, 500ms, 15m, 1h30m, 7d, 1w or a number of seconds"

_NUMBER = r"(?:\d+(?:\.\d*)?|\.\d+)"
_PART_RE = re.compile(rf"({_NUMBER})\s*(ms|s|m|h|d|w)\s*")
_BARE_RE = re.compile(rf"^{_NUMBER}$")


class DurationError(ValueError):
    """A duration cannot be read; the message names the value and the expected form."""


def parse_duration(value: str | float | int, what: str = "duration", *, require_unit: bool = False) -> float:
    """``"1h30m"`` -> 5400.0 seconds; numbers are seconds. ``require_unit`` refuses a bare number."""
    if isinstance(value, bool):
        raise DurationError(f"{what} {value!r} is invalid; expected {EXAMPLES}")
    if isinstance(value, (int, float)):
        if require_unit:
            raise DurationError(f"{what} {value!r} needs a unit; expected {EXAMPLES}")
        if not value >= 0 or value == float("inf"):
            raise DurationError(f"{what} {value!r} must be a finite number of seconds >= 0")
        return float(value)
    text = str(value).strip().lower()
    if _BARE_RE.match(text):
        if require_unit:
            raise DurationError(f"{what} {value!r} needs a unit; expected {EXAMPLES}")
        return float(text)
    total, pos, seen = 0.0, 0, set()
    while pos < len(text):
        m = _PART_RE.match(text, pos)
        if not m or m.group(2) in seen:
            raise DurationError(f"{what} {value!r} is invalid; expected {EXAMPLES}")
        seen.add(m.group(2))
        total += float(m.group(1)) * UNIT_S[m.group(2)]
        pos = m.end()
    if not seen:
        raise DurationError(f"{what} {value!r} is invalid; expected {EXAMPLES}")
    return total


def format_duration(seconds: float) -> str:
    """5400 -> ``"1h30m"``: the shortest form ``parse_duration`` reads back to the same value (to the ms)."""
    if seconds < 0:
        raise ValueError(f"duration {seconds!r} must be >= 0")
    ms = round(seconds * 1000)
    if ms == 0:
        return "0s"
    out = []
    for unit in ("w", "d", "h", "m", "s", "ms"):
        size = round(UNIT_S[unit] * 1000)
        n, ms = divmod(ms, size)
        if n:
            out.append(f"{n}{unit}")
    return "".join(out)
