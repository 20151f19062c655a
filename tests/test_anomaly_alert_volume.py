"""What keeps idle nodes quiet, as specifications: one false-alarm budget per node, bursts that do not hold,
error-rate families calibrated like every detector at the one threshold."""
from __future__ import annotations

import numpy as np

from schemas import AlertStatus, MetricBatch, Sample

from processors.anomaly import ERROR_SPIKE_RULE, AnomalyOperator
from processors.anomaly.base import DEFAULT_THRESHOLD
from processors.anomaly.operator import ANOMALY_RULE, DEFAULT_FAMILIES, MetricFamily, node_score

T0 = 1_767_228_600.0  # 2026-01-01 00:50:00 UTC
STEP = 15.0  # seconds between samples: 300 points pass the one-hour warm-up
N = 400
AT = 350
METRIC = "app.queue_depth"  # the catch-all family: no change floors


def firing(op: AnomalyOperator, node: str, series: dict[str, list[float]], t0: float = T0, step: float = STEP) -> list:
    n = len(next(iter(series.values())))
    out = []
    for i in range(n):
        ts = t0 + i * step
        b = MetricBatch("c1", node, ts, [Sample(k, float(v[i])) for k, v in series.items()])
        out += [e.message for e in op.on_metrics(b, ts + 0.2) if e.message.status is AlertStatus.FIRING]
    return out


def jitter(seed: int) -> list[float]:
    """A healthy series that sets no new records after its first minutes: 40 +- 3, a cycle of ``seed % 5 + 5`` points."""
    k = seed % 5 + 5
    return [40.0 + 6.0 * ((i * 3) % k) / (k - 1) - 3.0 for i in range(N)]


def in_between_spike(values: list[float], m: int) -> float:
    """A value at AT whose series score crosses the threshold but whose tail over m series does not."""
    det = AnomalyOperator().family_for(METRIC).build()  # type: ignore[union-attr]
    for i in range(AT):
        det.process_one(values[i], T0 + i * STEP)
    ts = T0 + AT * STEP
    lo, hi = max(values[:AT]), max(values[:AT]) * 10
    for _ in range(60):  # the score rises with the value beyond the range
        mid = (lo + hi) / 2
        s = det.score_one(mid, ts)
        if s < DEFAULT_THRESHOLD:
            lo = mid
        elif node_score(s, m) >= DEFAULT_THRESHOLD:
            hi = mid
        else:
            return mid
    raise AssertionError("no value between the series and the node threshold")


def test_a_record_rare_for_one_series_but_not_for_a_node_of_twenty_does_not_page() -> None:
    values = jitter(1)
    values[AT] = in_between_spike(values, 20)
    quiet = {f"svc.const_{i}": [7.0] * N for i in range(19)}  # followed, never anomalous
    one = [MetricFamily("*")]  # a family that pages on one anomalous sample (the defaults want 2 in a row)
    (alone,) = firing(AnomalyOperator(families=one), "n1", {METRIC: values})
    assert alone.details["series_on_node"] == 1 and alone.started_at == T0 + AT * STEP
    op = AnomalyOperator(families=one)
    assert firing(op, "n2", {METRIC: values, **quiet}) == []
    assert op.series_on_node("c1", "n2") == 20
    # the same node, every series on its own tail (as offline): the record pages
    assert [a.metric for a in firing(AnomalyOperator(families=one, node_budget=False), "n3", {METRIC: values, **quiet})] == [METRIC]


def test_a_real_step_still_pages_on_its_second_sample_on_a_node_of_many_series() -> None:
    values = jitter(2)
    values[AT:] = [70.0] * (N - AT)  # 40 +- 3 -> 70
    noise = {f"svc.m{i}": jitter(10 + i) for i in range(29)}
    (a,) = firing(AnomalyOperator(), "n1", {METRIC: values, **noise})
    assert (a.metric, a.started_at) == (METRIC, T0 + (AT + 1) * STEP)  # 2 anomalous samples in a row
    assert a.threshold == DEFAULT_THRESHOLD and a.details["series_on_node"] == 30
    assert a.details["node_score"] >= DEFAULT_THRESHOLD
    assert a.details["node_score"] == round(node_score(a.details["score"], 30), 6)


def test_series_on_node_counts_each_rule_and_forgets_silent_series() -> None:
    op = AnomalyOperator(series_ttl_s=60.0)
    b = MetricBatch("c1", "n1", T0, [Sample("cpu.percent", 1.0), Sample("mem.percent", 2.0), Sample("net.errors_in_per_s", 0.0)])
    op.on_metrics(b, T0)
    op.on_metrics(MetricBatch("c1", "n2", T0, [Sample("cpu.percent", 1.0)]), T0)
    assert (op.series_on_node("c1", "n1"), op.series_on_node("c1", "n1", ERROR_SPIKE_RULE), op.series_on_node("c1", "n2")) == (2, 1, 1)
    for node in ("n1", "n2"):
        op.on_metrics(MetricBatch("c1", node, T0 + 50, [Sample("cpu.percent", 1.0)]), T0 + 50)
    list(op.on_tick(T0 + 100))  # mem.percent and the error series went silent
    assert (op.series_on_node("c1", "n1"), op.series_on_node("c1", "n1", ERROR_SPIKE_RULE)) == (1, 0)
    restored = AnomalyOperator()
    restored.restore(op.snapshot())
    assert restored.series_on_node("c1", "n1") == 1 and restored.series_on_node("c1", "n2") == 1


def test_every_default_family_pages_at_the_one_shared_threshold() -> None:
    for fam in DEFAULT_FAMILIES:
        if fam.enabled:
            assert fam.build().threshold == DEFAULT_THRESHOLD, fam.pattern
    assert {fam.rule for fam in DEFAULT_FAMILIES} == {ANOMALY_RULE, ERROR_SPIKE_RULE}


def test_zero_and_sporadic_error_counts_never_page_but_a_spike_does_at_its_first_sample() -> None:
    n = 3 * 3600  # three hours at 1 Hz from 00:50
    zeros = np.zeros(n)
    sporadic = np.zeros(n)
    sporadic[np.random.default_rng(3).choice(n, 18, replace=False)] = 1.0  # a stray error every ~10 minutes
    spike = sporadic.copy()
    spike[n - 100 : n - 97] = 40.0
    op = AnomalyOperator()
    series = {"net.errors_in_per_s": zeros, "api.error_rate": zeros, "disk.errors": sporadic, "rpc.errors": spike}
    fired = firing(op, "n1", {k: v.tolist() for k, v in series.items()}, step=1.0)
    assert [(a.metric, a.rule, a.started_at) for a in fired] == [("rpc.errors", ERROR_SPIKE_RULE, T0 + n - 100)]
    assert fired[0].details["score"] >= DEFAULT_THRESHOLD


def test_a_one_second_network_burst_never_pages_but_a_transfer_that_holds_does_one_sample_later() -> None:
    n = 3800
    rng = np.random.default_rng(5)
    recv = np.where(rng.random(n) < 0.1, rng.uniform(500, 5000, n), 0.0)  # an idle NIC: now and then a few packets
    burst, transfer = recv.copy(), recv.copy()
    burst[3700] = 10e6  # one second of a 10 MB/s burst
    transfer[3700:3760] = 10e6  # a transfer that holds for a minute
    op = AnomalyOperator()
    assert firing(op, "n1", {"net.bytes_recv_per_s": burst.tolist()}, step=1.0) == []
    fired = firing(op, "n2", {"net.bytes_recv_per_s": transfer.tolist()}, step=1.0)
    assert [(a.metric, a.started_at) for a in fired] == [("net.bytes_recv_per_s", T0 + 3701)]
    assert fired[0].details["baseline"]["high"] < 10e6  # the normal from before the transfer's first second


def test_series_of_one_node_that_go_anomalous_together_are_one_incident_alert() -> None:
    up = jitter(3)
    up[AT:] = [70.0] * (N - AT)
    later = jitter(4)
    later[AT + 2 :] = [70.0] * (N - AT - 2)  # the same incident, two samples later
    series = {METRIC: up, "app.backlog": later, "app.idle": jitter(5)}
    op = AnomalyOperator()
    out = []
    for node in ("n1", "n2"):
        for i in range(N):
            ts = T0 + i * STEP
            b = MetricBatch("c1", node, ts, [Sample(k, float(v[i])) for k, v in series.items()])
            out += [e.message for e in op.on_metrics(b, ts + 0.2)]
    fired = [(a.node, a.metric) for a in out if a.status is AlertStatus.FIRING]
    assert fired == [("n1", METRIC), ("n2", METRIC)]  # one per node, named by the series that opened it
    resolved = [a for a in out if a.status is AlertStatus.RESOLVED]
    assert [(a.node, a.details["joined"]) for a in resolved] == [("n1", ["app.backlog"]), ("n2", ["app.backlog"])]
    assert op.stats.extra["incident_joined"] == 2


def test_available_memory_moving_10_mb_inside_its_range_on_the_recorded_idle_node_does_not_page() -> None:
    import json
    from pathlib import Path

    from bench.bench_anomaly_alerts import bootstrap

    rec = json.loads((Path(__file__).resolve().parents[1] / "bench" / "data" / "producer_series.json").read_text())
    names, vals = bootstrap(rec["idle"], 10_500, seed=102)  # bench node idle-6: at 10,441 s a 10 MB step down, inside its range
    avail = vals[:, names.index("mem.available_bytes")]
    assert avail[:10_441].min() < avail[10_441] < avail[:10_441].max()
    assert firing(AnomalyOperator(), "n1", {"mem.available_bytes": avail.tolist()}, step=1.0) == []
