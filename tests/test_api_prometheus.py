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
