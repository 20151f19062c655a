"""Fuzzing the config loaders with hypothesis: a file either loads or is refused with the loader's
own error naming the file; a rules file that loads never makes the rules operator fail."""
from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from processors import ThresholdRules
from processors.configfile import ConfigError
from processors.rules import load_rules
from producers.options import read_sidecar_config
from schemas import MetricBatch, Sample
from sinks.notify.config import ConfigError as NotifyConfigError
from sinks.notify.config import load_config as load_notify_config
from swarmwatch.config import Config, load_config

FUZZ = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
DIR = Path(tempfile.mkdtemp(prefix="sw-fuzz-config-"))

scalars = st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=24) | st.sampled_from(
    ["1h30m", "10s", "-5s", "1w", "0", "nats://127.0.0.1:4222", "../../etc/passwd", "${ENV_THAT_IS_NOT_SET}", "{value:zz}", "%s%n"]
)
values = st.recursive(scalars, lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=10), c, max_size=4), max_leaves=10)


def _section(fields: list[str]) -> st.SearchStrategy[dict[str, Any]]:
    return st.dictionaries(st.sampled_from(fields) | st.text(max_size=8), values, max_size=5)


config_docs = st.fixed_dictionaries(
    {},
    optional={
        name: (_section(list(getattr(f.annotation, "model_fields", {}))) if hasattr(f.annotation, "model_fields") else values)
        for name, f in Config.model_fields.items()
    },
) | values
rule_docs = st.lists(
    st.fixed_dictionaries(
        {"name": st.from_regex(r"[a-z_]{1,12}", fullmatch=True) | st.text(max_size=12), "metric": st.just("cpu.percent") | st.text(max_size=12),
         "threshold": st.floats() | st.integers(-(2**70), 2**70) | values},
        optional={"op": st.sampled_from([">", ">=", "<", "<=", "=="]), "severity": st.sampled_from(["info", "warning", "critical", "fatal"]),
                  "for": scalars, "keep_firing_for": scalars, "hysteresis": scalars, "labels": values,
                  "summary": st.text(max_size=40) | st.sampled_from(["{value:zz}", "{nope}", "{metric!x}", "{{}}", "{0}", "{value:.4g} {threshold:g}"])},
    ),
    max_size=4,
).map(lambda rules: {"rules": rules}) | values
notify_docs = st.fixed_dictionaries(
    {},
    optional={
        "channels": st.lists(
            st.fixed_dictionaries({"name": st.text(max_size=10), "url": st.sampled_from(["json://127.0.0.1:9/x", "mailto://u:p@h", "bogus://"]) | st.text(max_size=20)},
                                  optional={"primary": values}),
            max_size=3,
        ) | values,
        "routes": values, "group_wait_s": scalars, "inhibit": values, "silences": values, "delivery": values,
    },
) | values
raw_text = st.text(max_size=300) | st.sampled_from(
    ["a: [", "{{{", "- - -", "!!python/object:os.system ls", "a: &x [*x]", "\x00\xff"]
) | st.binary(max_size=200)  # bytes: not necessarily UTF-8


def _write(name: str, doc: Any, raw: str | bytes | None) -> Path:
    p = DIR / name
    if isinstance(raw, bytes):
        p.write_bytes(raw)
    else:
        p.write_text(raw if raw is not None else yaml.safe_dump(doc, allow_unicode=True), encoding="utf-8")
    return p


@FUZZ
@given(doc=config_docs, raw=st.none() | raw_text)
def test_the_main_config_loads_or_is_refused_with_a_config_error(doc: Any, raw: str | bytes | None) -> None:
    p = _write("swarmwatch.yaml", doc, raw)
    try:
        load_config(p)
    except ConfigError as exc:
        assert str(p) in str(exc)


@FUZZ
@given(doc=rule_docs, raw=st.none() | raw_text)
def test_a_rules_file_loads_or_is_refused_and_loaded_rules_never_fail_the_operator(doc: Any, raw: str | bytes | None) -> None:
    p = _write("rules.yaml", doc, raw)
    try:
        rules = load_rules(p)
    except ConfigError as exc:
        assert str(p) in str(exc)
        return
    op = ThresholdRules(rules)
    now = time.time()
    for i, v in enumerate((-1e300, 0.0, 50.0, 1e300, 50.0)):  # crosses every threshold both ways
        list(op.on_metrics(MetricBatch("c", "n", now + i, [Sample("cpu.percent", v)]), now + i))
        list(op.on_tick(now + i))


@FUZZ
@given(doc=notify_docs, raw=st.none() | raw_text)
def test_the_notify_config_loads_or_is_refused_with_its_config_error(doc: Any, raw: str | bytes | None) -> None:
    p = _write("notify.yaml", doc, raw)
    try:
        load_notify_config(p)
    except NotifyConfigError as exc:
        assert str(p) in str(exc)


@FUZZ
@given(doc=st.fixed_dictionaries({}, optional={"scrape": values, "checks": values}) | values, raw=st.none() | raw_text)
def test_the_sidecar_config_loads_or_is_refused_with_a_value_error(doc: Any, raw: str | bytes | None) -> None:
    p = _write("sidecar.yaml", doc, raw)
    try:
        read_sidecar_config(str(p))
    except ValueError as exc:
        assert str(p) in str(exc)


def test_deep_nesting_and_invalid_utf8_are_config_errors_not_crashes() -> None:
    """Found by fuzzing (issue 14): RecursionError and UnicodeDecodeError escaped the loaders."""
    import pytest

    for suffix, deep in ((".yaml", "a: " + "[" * 1500 + "]" * 1500), (".toml", "a = " + "[" * 1500 + "]" * 1500)):
        p = DIR / f"deep{suffix}"
        p.write_text(deep)
        for load, err in ((load_config, ConfigError), (load_rules, ConfigError), (load_notify_config, NotifyConfigError)):
            with pytest.raises(err, match="nested too deeply"):
                load(p)
        with pytest.raises(ValueError, match="deep"):
            read_sidecar_config(str(p))
    bad = DIR / "latin1.yaml"
    bad.write_bytes(b"cluster: caf\xe9\n")
    for load, err in ((load_config, ConfigError), (load_rules, ConfigError), (load_notify_config, NotifyConfigError)):
        with pytest.raises(err, match="UTF-8"):
            load(bad)
