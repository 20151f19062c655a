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
def idle() -> tuple[list[str], np.ndarray]:
    rec = json.loads(RECORDED.read_text())
    return bootstrap({k: v for k, v in rec["idle"].items() if k in SERIES}, N, seed=7)


def replay(names: list[str], vals: np.ndarray) -> list:
    """Feed a node's recorded series at 1 Hz; the firing alerts with the second they fired."""
    op = AnomalyOperator()
    out = []
    for k in range(len(vals)):
        ts = T0 + k
        b = MetricBatch("c1", "n1", ts, [sample(nm, float(x)) for nm, x in zip(names, vals[k]) if np.isfinite(x)])
        out += [(k, e.message) for e in op.on_metrics(b, ts + 0.2) if e.message.status is AlertStatus.FIRING]
    return out


def test_recorded_idle_node_is_quiet_before_the_incidents(idle: tuple[list[str], np.ndarray]) -> None:
    names, vals = idle
    assert replay(names, vals) == []


# the recorded VM ran at 100 % CPU most of the time, so the CPU step is one of demand: +8 runnable tasks
@pytest.mark.parametrize(("series", "step"), [("load.1m", 8.0), ("disk.write_latency_ms", 25.0)])
def test_a_cpu_or_latency_step_is_alerted_within_three_samples(idle: tuple[list[str], np.ndarray], series: str, step: float) -> None:
    names, vals = idle
    vals = vals.copy()
    vals[AT:, names.index(series)] += step
    fired = [(k, a.metric) for k, a in replay(names, vals) if a.metric == series]
    assert fired and AT <= fired[0][0] < AT + 3


def test_a_memory_leak_is_alerted_before_it_doubles_the_baseline(idle: tuple[list[str], np.ndarray]) -> None:
    names, vals = idle
    vals = vals.copy()
    i = names.index("mem.used_bytes")
    base = float(np.median(vals[:AT, i]))
    ramp = np.arange(N - AT) / 300.0 * base  # +1x baseline in five minutes
    vals[AT:, i] += ramp
    fired = [k for k, a in replay(names, vals) if a.metric == "mem.used_bytes"]
    assert fired and vals[fired[0], i] < 2 * base


def test_an_error_rate_spike_is_alerted_on_its_own_rule(idle: tuple[list[str], np.ndarray]) -> None:
    names, vals = idle
    vals = vals.copy()
    vals[AT : AT + 3, names.index("net.errors_in_per_s")] += 40.0
    fired = [(k, a.rule) for k, a in replay(names, vals) if a.metric == "net.errors_in_per_s"]
    assert fired and fired[0][0] == AT and fired[0][1] == ERROR_SPIKE_RULE
