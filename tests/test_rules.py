"""Threshold rules: per-sample evaluation, for, hysteresis, keep_firing_for, config errors."""
from __future__ import annotations

from pathlib import Path

import pytest

from schemas import Alert, AlertStatus, MetricBatch, Sample, Severity
from processors import ConfigError, Rule, ThresholdRules, default_rules, load_rules

T0 = 1_700_000_040.0  # aligned to 10 s and 60 s


def feed(op: ThresholdRules, values: list[float], metric: str = "mem.percent", start: float = T0, **labels: str) -> list[Alert]:
    out: list[Alert] = []
    for i, v in enumerate(values):
        b = MetricBatch("c1", "n1", start + i, [Sample(metric, v, labels=labels or None)])
        out += [e.message for e in op.on_metrics(b, now=0.0)]
    return out


def rule(**kw: object) -> Rule:
    base: dict[str, object] = {"name": "r", "metric": "mem.percent", "threshold": 90.0}
    base.update(kw)
    return Rule.model_validate(base)


def test_crossing_fires_on_the_sample_that_crosses() -> None:
    op = ThresholdRules([rule()])
    (a,) = feed(op, [10, 95])
    assert a.status is AlertStatus.FIRING and a.value == 95 and a.started_at == T0 + 1
    assert a.threshold == 90 and "mem.percent" in a.summary


def test_for_requires_the_condition_to_hold() -> None:
    op = ThresholdRules([rule(**{"for": "3s"})])
    assert feed(op, [95, 95, 10, 95, 95, 95]) == []  # broken after 2 s, then held only 2 s
    (a,) = feed(op, [95], start=T0 + 6)
    assert a.status is AlertStatus.FIRING and a.started_at == T0 + 3


def test_hysteresis_stops_a_hovering_value_from_flapping() -> None:
    op = ThresholdRules([rule(hysteresis=5)])
    out = feed(op, [91, 89, 91, 88, 90.5, 86, 84, 84])
    assert [a.status for a in out] == [AlertStatus.FIRING, AlertStatus.RESOLVED]
    assert out[1].ended_at == T0 + 6


def test_keep_firing_for_delays_the_resolve() -> None:
    op = ThresholdRules([rule(keep_firing_for="3s")])
    out = feed(op, [95, 10, 10, 95, 10, 10, 10, 10])
    assert [a.status for a in out] == [AlertStatus.FIRING, AlertStatus.RESOLVED]
    assert out[0].id == out[1].id and out[1].ended_at == T0 + 6


def test_one_alert_per_episode_with_deterministic_ids() -> None:
    a = feed(ThresholdRules([rule()]), [95, 96, 97, 10])
    b = feed(ThresholdRules([rule()]), [95, 96, 97, 10])
    assert [x.status for x in a] == [AlertStatus.FIRING, AlertStatus.RESOLVED]
    assert [x.id for x in a] == [x.id for x in b]


def test_default_rules_warn_at_85_and_are_critical_at_95() -> None:
    op = ThresholdRules()
    out = feed(op, [50, 90, 96], metric="disk.percent", mount="/")
    assert [(a.rule, a.severity) for a in out] == [("disk_usage_warning", Severity.WARNING), ("disk_usage_critical", Severity.CRITICAL)]
    assert {r.name for r in default_rules()} >= {"cpu_usage_warning", "memory_usage_critical"}


def test_default_cpu_rule_ignores_busy_single_cores() -> None:
    assert feed(ThresholdRules(), [99] * 30, metric="cpu.percent", core="3") == []
    assert len(feed(ThresholdRules(), [99] * 30, metric="cpu.percent")) == 2


def test_glob_rules_and_label_matchers() -> None:
    op = ThresholdRules([rule(metric="gpu.*_c", threshold=80, labels={"gpu": "1"})])
    assert feed(op, [90], metric="gpu.temperature_c", gpu="0") == []
    assert len(feed(op, [90], metric="gpu.temperature_c", gpu="1")) == 1


def test_rules_file_overrides_defaults_by_name(tmp_path: Path) -> None:
    f = tmp_path / "rules.yaml"
    f.write_text("rules:\n  - name: cpu_usage_warning\n    metric: cpu.percent\n    threshold: 70\n    for: 1m\n")
    rules = {r.name: r for r in load_rules(f)}
    assert rules["cpu_usage_warning"].threshold == 70 and rules["cpu_usage_warning"].for_s == 60
    assert "disk_usage_critical" in rules


def test_toml_rules_without_defaults(tmp_path: Path) -> None:
    f = tmp_path / "rules.toml"
    f.write_text('defaults = false\n[[rules]]\nname = "lat"\nmetric = "latency_ms"\nthreshold = 500\nseverity = "critical"\n')
    assert [r.name for r in load_rules(f)] == ["lat"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("rules:\n  - name: x\n    metric: m\n    threshold: high\n", "rules.0.threshold"),
        ("rules:\n  - name: x\n    metric: m\n    threshold: 1\n    for: soon\n", "duration 'soon' is invalid"),
        ("rules:\n  - name: a.b\n    metric: m\n    threshold: 1\n", "rule name 'a.b'"),
        ("rules:\n  - name: x\n    metric: m\n    threshold: 1\n    severity: huge\n", "rules.0.severity"),
        ("rules: [\n", "not valid YAML"),
    ],
)
def test_config_errors_name_the_file_and_key(tmp_path: Path, text: str, message: str) -> None:
    f = tmp_path / "rules.yaml"
    f.write_text(text)
    with pytest.raises(ConfigError) as exc:
        load_rules(f)
    assert str(f) in str(exc.value) and message in str(exc.value)


def test_state_survives_snapshot_and_restore() -> None:
    op = ThresholdRules([rule()])
    feed(op, [95])
    op2 = ThresholdRules([rule()])
    op2.restore(op.snapshot())
    out = feed(op2, [96, 10], start=T0 + 1)
    assert [a.status for a in out] == [AlertStatus.RESOLVED]
