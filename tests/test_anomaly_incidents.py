"""Real incidents injected into recorded producer series are still caught, fast."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from schemas import AlertStatus, MetricBatch

from bench.bench_anomaly_alerts import bootstrap, sample
from processors.anomaly import ERROR_SPIKE_RULE, AnomalyOperator

RECORDED = Path(__file__).resolve().parents[1] / "bench" / "data" / "producer_series.json"
T0 = 1_767_228_600.0  # 00:50:00 UTC
N = 3900
AT = 3700  # the incident starts here (seconds), past the one-hour warm-up
SERIES = ("load.1m", "cpu.percent", "disk.write_latency_ms", "mem.used_bytes", "net.errors_in_per_s", "proc.count", "disk.read_ops_per_s", "net.bytes_recv_per_s")


@pytest.fixture(scope="module")
def recorded() -> dict[str, tuple[list[str], np.ndarray]]:
    """A node replayed from each recording: a genuinely idle VM, and a shared VM busy with other work."""
    rec = json.loads(RECORDED.read_text())
    return {kind: bootstrap({k: v for k, v in rec[kind].items() if k in SERIES}, N, seed=7) for kind in ("idle", "busy")}


def replay(names: list[str], vals: np.ndarray) -> list:
    """Feed a node's recorded series at 1 Hz; the firing alerts with the second they fired."""
    op = AnomalyOperator()
    out = []
    for k in range(len(vals)):
        ts = T0 + k
        b = MetricBatch("c1", "n1", ts, [sample(nm, float(x)) for nm, x in zip(names, vals[k]) if np.isfinite(x)])
        out += [(k, e.message) for e in op.on_metrics(b, ts + 0.2) if e.message.status is AlertStatus.FIRING]
    return out


@pytest.mark.parametrize("kind", ["idle", "busy"])
def test_recorded_node_is_quiet_before_the_incidents(recorded: dict, kind: str) -> None:
    names, vals = recorded[kind]
    assert replay(names, vals) == []


# idle: a CPU step (0.5 % -> +50 %) and a demand step (+8 runnable tasks); the busy VM sat at 100 % CPU, so
# there the step is one of demand, and it is the recording with a disk latency every second (idle disks are silent)
@pytest.mark.parametrize(
    ("kind", "series", "step"),
    [("idle", "cpu.percent", 50.0), ("idle", "load.1m", 8.0), ("busy", "load.1m", 8.0), ("busy", "disk.write_latency_ms", 25.0)],
)
def test_a_cpu_or_latency_step_is_alerted_within_three_samples(recorded: dict, kind: str, series: str, step: float) -> None:
    names, vals = recorded[kind]
    vals = vals.copy()
    vals[AT:, names.index(series)] += step
    fired = [(k, a.metric) for k, a in replay(names, vals) if a.metric == series]
    assert fired and AT <= fired[0][0] < AT + 3


@pytest.mark.parametrize("kind", ["idle", "busy"])
def test_a_memory_leak_is_alerted_before_it_doubles_the_baseline(recorded: dict, kind: str) -> None:
    names, vals = recorded[kind]
    vals = vals.copy()
    i = names.index("mem.used_bytes")
    base = float(np.median(vals[:AT, i]))
    ramp = np.arange(N - AT) / 300.0 * base  # +1x baseline in five minutes
    vals[AT:, i] += ramp
    fired = [k for k, a in replay(names, vals) if a.metric == "mem.used_bytes"]
    assert fired and vals[fired[0], i] < 2 * base


@pytest.mark.parametrize("kind", ["idle", "busy"])
def test_an_error_rate_spike_is_alerted_on_its_own_rule(recorded: dict, kind: str) -> None:
    names, vals = recorded[kind]
    vals = vals.copy()
    vals[AT : AT + 3, names.index("net.errors_in_per_s")] += 40.0
    fired = [(k, a.rule) for k, a in replay(names, vals) if a.metric == "net.errors_in_per_s"]
    assert fired and fired[0][0] == AT and fired[0][1] == ERROR_SPIKE_RULE
