"""One duration grammar everywhere: CLI flags, config files, rules, silences, the API's times."""
from __future__ import annotations

from pathlib import Path

import pytest

from processors.configfile import parse_duration as config_duration
from producers.options import parse_interval
from schemas.durations import DurationError, format_duration, parse_duration
from sinks.api.timerange import TimeRangeError, parse_time
from sinks.api.timerange import parse_duration as api_duration
from sinks.notify import SilenceError
from sinks.notify import parse_duration as silence_duration

GOOD = [
    ("500ms", 0.5), ("30s", 30.0), ("15m", 900.0), ("2h", 7200.0), ("7d", 604800.0), ("1w", 604800.0),
    ("1h30m", 5400.0), ("1h 30m", 5400.0), ("1w2d", 9 * 86400.0), ("1m30s500ms", 90.5), ("1.5h", 5400.0),
    ("90", 90.0), ("2.5", 2.5), ("1H30M", 5400.0), (" 10s ", 10.0),
]
BAD = ["", "h", "2x", "-5m", "1h1h", "2h junk", "1h-30m", "1..5s", "ms", "1 h 3"]


@pytest.mark.parametrize(("text", "seconds"), GOOD)
def test_the_grammar_reads_single_and_compound_units(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("bad", BAD)
def test_a_bad_duration_is_refused_with_the_value_and_the_expected_form(bad: str) -> None:
    with pytest.raises(DurationError) as e:
        parse_duration(bad)
    assert repr(bad) in str(e.value) and "1h30m" in str(e.value)


@pytest.mark.parametrize("parse", [config_duration, api_duration, silence_duration, parse_interval])
@pytest.mark.parametrize(("text", "seconds"), [("1h30m", 5400.0), ("1w", 604800.0), ("2m30s", 150.0)])
def test_every_surface_accepts_the_same_compound_durations(parse, text: str, seconds: float) -> None:  # noqa: ANN001
    assert parse(text) == pytest.approx(seconds)


@pytest.mark.parametrize(("parse", "error"), [(config_duration, ValueError), (api_duration, TimeRangeError),
                                              (silence_duration, SilenceError), (parse_interval, ValueError)])
def test_every_surface_refuses_the_same_bad_durations(parse, error: type[Exception]) -> None:  # noqa: ANN001
    for bad in BAD:
        with pytest.raises(error):
            parse(bad)


def test_since_accepts_a_compound_duration_ago() -> None:
    assert parse_time("1h30m", now=10_000.0) == 10_000.0 - 5400.0
    assert parse_time("-1h30m", now=10_000.0) == 10_000.0 - 5400.0
    assert parse_time("1700000000", now=10_000.0) == 1_700_000_000.0


def test_retention_of_a_week_is_read_from_a_config_file(tmp_path: Path) -> None:
    from swarmwatch.config import load_config

    p = tmp_path / "sw.yaml"
    p.write_text("retention:\n  telemetry: 1w\n  derived: 4w2d\nprocessor:\n  windows: [10s, 1m30s]\n")
    cfg = load_config(p, {})
    assert cfg.retention.telemetry_s == 604800.0
    assert cfg.retention.derived_s == 30 * 86400.0
    assert cfg.processor.windows_s == [10.0, 90.0]


def test_a_rule_waits_for_a_compound_duration(tmp_path: Path) -> None:
    from processors.rules import load_rules

    p = tmp_path / "rules.yaml"
    p.write_text("rules:\n  - name: x\n    metric: m\n    threshold: 1\n    for: 1m30s\n")
    assert [r.for_s for r in load_rules(p) if r.name == "x"] == [90.0]


def test_a_silence_still_needs_a_unit() -> None:
    with pytest.raises(SilenceError, match="needs a unit"):
        silence_duration("2")


@pytest.mark.parametrize("seconds", [0.0, 0.5, 30.0, 5400.0, 9 * 86400.0 + 61.25])
def test_format_duration_reads_back_to_the_same_value(seconds: float) -> None:
    assert parse_duration(format_duration(seconds)) == pytest.approx(seconds)
