"""/metrics passes promtool; the Prometheus rules and the Grafana dashboard use names /metrics exports."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from schemas import Alert, AlertKind, AlertStatus, HealthScore, MetricBatch, Sample, SeriesStats, Severity, TrustScore, WindowAggregate
from sinks.api.exposition import render
from sinks.api.state import FleetState

ROOT = Path(__file__).resolve().parent.parent
PROMETHEUS = ROOT / "deploy" / "prometheus"
GRAFANA = ROOT / "deploy" / "grafana" / "swarmwatch.json"
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(PROMTOOL is None, reason="promtool not found: apt-get install -y prometheus (see .ci/install-system-deps.sh)")


def full_state() -> FleetState:
    """A state with every family populated, including awkward user metric and label names."""
    now = time.time()
    st = FleetState()
    for i in range(3):
        series = [
            SeriesStats("cpu.percent", 10, 1, 9, 5, 50, 5, 8, 9, 4, unit="%"),
            SeriesStats("disk.percent", 1, 70, 70, 70, 70, 70, 70, 70, 70, labels={"mount": "/"}),
            SeriesStats("validations/s", 5, 0.5, 2, 1.2, 6, 1.1, 1.9, 2, 1.3),
            SeriesStats("peer.latency_ms", 5, 3, 30, 9, 45, 8, 28, 30, 10, labels={"peer": "n-2", "0dd key": 'q"uote'}),
            SeriesStats("big.counter", 1, 1e18, 1e18, 1e18, 1e18, 1e18, 1e18, 1e18, 1e18),
        ]
        st.apply_agg(WindowAggregate("c-1", f"n{i}", 10.0, now - 10, now, series))
        st.apply_trust(TrustScore("c-1", f"n{i}", now, 1, 0.5 + i / 10, suspicion=0.1))
    st.apply_health(HealthScore("c-1", now, 81.5, peer_count=3, expected_peers=4, connection_success_rate=0.9, avg_latency=42.0,
                                components={"peers": 75.0, "latency": 90.0}, nodes={"n0": {"status": "connected", "quality": 97.0}}))
    st.apply_alert(Alert("a1", AlertStatus.FIRING, Severity.CRITICAL, AlertKind.LIVENESS, "node_unresponsive", "c-1", "n2", now, "silent"))
    st.apply_self("processor", MetricBatch("swarmwatch", "processor", now, [
        Sample("swarmwatch.processor.lag_s", 0.25),
        Sample("swarmwatch.processor.received", 1234),
        Sample("swarmwatch.operator.dropped", 2, labels={"operator": "windows"}),
    ]))
    st.apply_dlq("processor")
    return st


def families(text: str) -> set[str]:
    return {ln.split()[2] for ln in text.splitlines() if ln.startswith("# TYPE ")}


@needs_promtool
def test_metrics_exposition_passes_promtool_check_metrics() -> None:
    text = render(full_state())
    assert "swarmwatch_node_metric{" in text and "swarmwatch_alert_firing{" in text
    r = subprocess.run([PROMTOOL, "check", "metrics"], input=text.encode(), capture_output=True, timeout=60)
    assert r.returncode == 0, (r.stdout + r.stderr).decode()


@needs_promtool
def test_an_empty_state_also_passes_promtool() -> None:
    r = subprocess.run([PROMTOOL, "check", "metrics"], input=render(FleetState()).encode(), capture_output=True, timeout=60)
    assert r.returncode == 0, (r.stdout + r.stderr).decode()


@needs_promtool
def test_prometheus_config_rules_and_rule_unit_tests_pass_promtool() -> None:
    for args in (
        ["check", "config", str(PROMETHEUS / "prometheus.yml")],
        ["check", "rules", *map(str, sorted((PROMETHEUS / "rules").glob("*.yml")))],
        ["test", "rules", "swarmwatch-alerts.test.yml"],
    ):
        r = subprocess.run([PROMTOOL, *args], capture_output=True, timeout=60, cwd=PROMETHEUS / "tests")
        assert r.returncode == 0, f"promtool {' '.join(args)}: {(r.stdout + r.stderr).decode()}"


def _names_in(exprs: list[str]) -> set[str]:
    return {m for e in exprs for m in re.findall(r"\bswarmwatch_[a-z_]+\b", e)}


def test_grafana_dashboard_queries_only_names_that_metrics_exports() -> None:
    dash = json.loads(GRAFANA.read_text())
    exprs = [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]
    assert len(exprs) >= 15
    exported = families(render(full_state()))
    used = _names_in(exprs)
    assert used and used <= exported, f"not exported: {sorted(used - exported)}"
    assert {v["name"] for v in dash["templating"]["list"]} >= {"datasource", "cluster", "node"}


def test_prometheus_rules_use_only_exported_names() -> None:
    import yaml

    exprs: list[str] = []
    for f in (PROMETHEUS / "rules").glob("*.yml"):
        for g in yaml.safe_load(f.read_text())["groups"]:
            exprs += [r["expr"] for r in g["rules"]]
    used = _names_in(exprs)
    assert used <= families(render(full_state())), sorted(used - families(render(full_state())))


# ---- hostile names and values (issue 14) ------------------------------------------------

from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_openmetrics  # noqa: E402
from prometheus_client.parser import text_string_to_metric_families as parse_text  # noqa: E402

from sinks.api.exposition import SelectorError, label_names, parse_selector, render_bytes  # noqa: E402


def _state_with(labels_list: list[dict[str, str]], metric: str = "custom.m") -> FleetState:
    st = FleetState()
    series = [SeriesStats(metric, 1, 1, 1, float(i), 1, 1, 1, 1, 1, labels=lab) for i, lab in enumerate(labels_list)]
    st.apply_agg(WindowAggregate("c-1", "n0", 10.0, time.time() - 10, time.time(), series))
    return st


def _samples(text: str, name: str = "swarmwatch_node_metric") -> list[dict[str, str]]:
    return [dict(s.labels) for f in parse_text(text) for s in f.samples if s.name == name]


def _promtool_ok(text: str) -> None:
    """promtool accepts ``text`` (where promtool is installed; the other assertions run everywhere)."""
    if PROMTOOL is None:
        return
    r = subprocess.run([PROMTOOL, "check", "metrics"], input=text.encode(), capture_output=True, timeout=60)  # type: ignore[list-item]
    assert r.returncode == 0, (r.stdout + r.stderr).decode()


def test_labels_that_sanitise_to_one_name_get_distinct_names_and_promtool_passes() -> None:
    text = render(_state_with([{"a.b": "1", "a-b": "2", "a_b": "3"}]), ("mean",))
    _promtool_ok(text)
    (labels,) = _samples(text)
    assert (labels["a_b"], labels["exported_a_b"], labels["a_b_2"]) == ("3", "2", "1")
    assert label_names(["a-b", "a.b", "a_b"], ("node",)) == ["exported_a_b", "a_b_2", "a_b"]  # depends only on the keys


def test_a_label_value_with_commas_and_equals_signs_stays_one_value() -> None:
    text = render(_state_with([{"path": "/x,evil=1", "q": 'a"b\\c\nd}'}]), ("mean",))
    _promtool_ok(text)
    (labels,) = _samples(text)
    assert labels["path"] == "/x,evil=1" and labels["q"] == 'a"b\\c\nd}' and "evil" not in labels


def test_two_series_equal_after_sanitising_give_one_sample_and_are_counted() -> None:
    text = render(_state_with([{"a.b": "x"}, {"a_b": "x"}]), ("mean",))
    _promtool_ok(text)
    assert len(_samples(text)) == 1
    (collisions,) = [s.value for f in parse_text(text) for s in f.samples if s.name == "swarmwatch_api_exposition_label_collisions_total"]
    assert collisions == 1


def test_openmetrics_format_is_valid_openmetrics_with_the_same_samples() -> None:
    body, ctype = render_bytes(full_state(), fmt="openmetrics")
    assert ctype.startswith("application/openmetrics-text; version=1.0.0") and body.endswith(b"# EOF\n")
    fams = {f.name: f for f in parse_openmetrics(body.decode())}
    assert fams["swarmwatch_node_metric"].type == "gauge" and fams["swarmwatch_api_messages"].type == "counter"
    om = {(s.name, tuple(sorted(s.labels.items()))) for f in fams.values() for s in f.samples}
    txt = {(s.name, tuple(sorted(s.labels.items()))) for f in parse_text(render(full_state())) for s in f.samples}
    assert om == txt


def test_swarmwatch_own_counters_are_counters_and_levels_are_gauges() -> None:
    fams = {f.name: f for f in parse_text(render(full_state()))}
    counted = {s.labels["metric"] for s in fams["swarmwatch_self"].samples}
    levels = {s.labels["metric"] for s in fams["swarmwatch_self_metric"].samples}
    assert fams["swarmwatch_self"].type == "counter" and fams["swarmwatch_self_metric"].type == "gauge"
    assert "swarmwatch.processor.received" in counted and "swarmwatch.operator.dropped" in counted
    assert levels == {"swarmwatch.processor.lag_s"}
    for name in ("swarmwatch_api_messages", "swarmwatch_api_refused", "swarmwatch_api_dead_letters"):
        assert fams[name].type == "counter"


def test_match_selectors_keep_only_the_series_asked_for() -> None:
    st = full_state()
    text = render(st, match=['swarmwatch_node_metric{node="n1",metric=~"cpu.*",stat="mean"}'])
    samples = [s for f in parse_text(text) for s in f.samples]
    assert [(s.labels["node"], s.labels["metric"], s.labels["stat"]) for s in samples] == [("n1", "cpu.percent", "mean")]
    both = render(st, match=['{__name__="swarmwatch_cluster_health"}', 'swarmwatch_node_trust{node!~"n[01]"}'])
    names = sorted((s.name, s.labels.get("node")) for f in parse_text(both) for s in f.samples)
    assert names == [("swarmwatch_cluster_health", None), ("swarmwatch_node_trust", "n2")]
    assert "swarmwatch_api_messages_total" in render(st, match=["swarmwatch_api_messages_total"])


@pytest.mark.parametrize("bad", ['{node=~"("}', "{}", 'x{node="a"', 'x{node=a}', "a" * 2000])
def test_bad_selectors_are_refused_with_a_reason(bad: str) -> None:
    with pytest.raises(SelectorError):
        parse_selector(bad)


def test_the_fast_writer_is_byte_identical_to_prometheus_clients_encoders() -> None:
    from prometheus_client.exposition import generate_latest

    from sinks.api.exposition import FleetCollector

    st = full_state()
    hostile = [{"a.b": "1", "a-b": "2", "a_b": "3"}, {"path": "/x,evil=1", "q": 'a"b\\c\nd}'}, {"node": "x", "stat": "y"}, {"a.b": "x"}, {"a_b": "x"}]
    now = time.time()
    st.apply_agg(WindowAggregate("c-2", "h", 10.0, now - 10, now, [SeriesStats("m", 1, 1, 1, float(i), 1, 1, 1, 1, 1e-7, labels=lab) for i, lab in enumerate(hostile)]))
    from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics

    for stats in (("mean",), ("mean", "min", "max", "p95", "last", "count")):
        assert render_bytes(st, stats)[0] == generate_latest(FleetCollector(st, stats))  # type: ignore[arg-type]
        assert render_bytes(st, stats, fmt="openmetrics")[0] == generate_openmetrics(FleetCollector(st, stats))
