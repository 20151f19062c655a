"""The app SDK: gauges, counters and timed functions become samples in the producer's batch."""
from __future__ import annotations

import asyncio

import pytest

from producers.sdk import Registry


def _series(samples: list) -> dict[str, float]:
    return {s.series(): s.value for s in samples}


def test_gauge_and_counter_publish_their_current_values_with_labels() -> None:
    reg = Registry()
    peers = reg.gauge("p2p.peers", unit="peers")
    peers.set(42)
    peers.labels(region="eu").set(7)
    blocks = reg.counter("chain.blocks_total", unit="blocks")
    blocks.inc()
    blocks.inc(2)
    s = _series(reg.collect())
    assert s == {"p2p.peers": 42.0, "p2p.peers{region=eu}": 7.0, "chain.blocks_total": 3.0}


def test_registering_a_name_twice_returns_the_same_metric_but_another_kind_is_refused() -> None:
    reg = Registry()
    assert reg.gauge("a.b") is reg.gauge("a.b")
    with pytest.raises(ValueError, match="already registered as a gauge"):
        reg.counter("a.b")


def test_counter_refuses_negative_increments() -> None:
    with pytest.raises(ValueError, match="counter 'x.total'"):
        Registry().counter("x.total").inc(-1)


def test_bad_and_reserved_names_are_refused_with_the_name_in_the_message() -> None:
    reg = Registry()
    with pytest.raises(ValueError, match="'bad name'"):
        reg.gauge("bad name")
    with pytest.raises(ValueError, match="reserved"):
        reg.gauge("swarmwatch.producer.sent")


def test_nan_gauge_values_are_refused_and_counted() -> None:
    reg = Registry()
    g = reg.gauge("x.value")
    g.set(float("nan"))
    g.set(float("inf"))
    assert reg.collect() == []
    assert reg.invalid == 2


def test_label_sets_beyond_the_cap_are_refused_and_counted() -> None:
    reg = Registry(max_series=3)
    g = reg.gauge("peer.latency_ms")
    for i in range(5):
        g.set(i, labels={"peer": f"p{i}"})
    assert len(reg.collect()) == 3
    assert reg.refused == 2


def test_timed_function_records_latency_successes_and_failures() -> None:
    reg = Registry()

    @reg.timed("rpc.validate")
    def validate(ok: bool) -> str:
        if not ok:
            raise RuntimeError("bad block")
        return "fine"

    reg.collect(now_s=100.0)  # start of the interval
    for _ in range(3):
        assert validate(True) == "fine"
    with pytest.raises(RuntimeError, match="bad block"):
        validate(False)
    s = _series(reg.collect(now_s=102.0))
    assert s["rpc.validate.calls_total"] == 4
    assert s["rpc.validate.errors_total"] == 1
    assert s["rpc.validate.errors"] == 1
    assert s["rpc.validate.requests_per_s"] == pytest.approx(2.0)  # 4 calls in 2 s
    assert s["rpc.validate.success_rate"] == pytest.approx(0.75)
    assert 0 <= s["rpc.validate.latency_p50_ms"] <= s["rpc.validate.latency_p95_ms"] <= s["rpc.validate.latency_max_ms"]
    # The next interval saw no calls: totals stay, per-interval figures reset, no latency without calls.
    s2 = _series(reg.collect(now_s=103.0))
    assert s2["rpc.validate.calls_total"] == 4
    assert s2["rpc.validate.requests_per_s"] == 0.0
    assert "rpc.validate.success_rate" not in s2
    assert "rpc.validate.latency_p95_ms" not in s2


async def test_timed_async_function_is_awaited_and_timed() -> None:
    reg = Registry()

    @reg.timed("infer.generate", labels={"model": "small"})
    async def generate() -> int:
        await asyncio.sleep(0.02)
        return 7

    assert await generate() == 7
    s = _series(reg.collect())
    assert s["infer.generate.calls_total{model=small}"] == 1
    assert s["infer.generate.latency_max_ms{model=small}"] >= 15.0


def test_latency_quantiles_follow_the_observations() -> None:
    reg = Registry()
    t = reg.timer("db.query")
    for ms in range(1, 101):
        t.observe(float(ms))
    s = _series(reg.collect())
    assert s["db.query.latency_p50_ms"] == pytest.approx(50.5)
    assert s["db.query.latency_p99_ms"] == pytest.approx(99.01)
    assert s["db.query.latency_mean_ms"] == pytest.approx(50.5)
    assert s["db.query.latency_max_ms"] == 100.0


def test_timer_context_manager_counts_an_exception_as_failure() -> None:
    reg = Registry()
    t = reg.timer("job.run")
    with pytest.raises(KeyError):
        with t.time():
            raise KeyError("x")
    with t.time():
        pass
    s = _series(reg.collect())
    assert s["job.run.errors_total"] == 1
    assert s["job.run.calls_total"] == 2
