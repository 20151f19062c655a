"""Tumbling event-time windows."""
from __future__ import annotations

import pytest

from schemas import MetricBatch, Sample, WindowAggregate
from processors import TumblingWindows, quantile

T0 = 1_700_000_040.0  # aligned to 10 s and 60 s


def batch(ts: float, value: float, node: str = "n1", **labels: str) -> MetricBatch:
    return MetricBatch("c1", node, ts, [Sample("cpu.percent", value, unit="%", labels=labels or None)])


def aggs(emits: object) -> list[WindowAggregate]:
    return [e.message for e in emits]  # type: ignore[attr-defined]


def test_window_closes_on_watermark_not_arrival() -> None:
    w = TumblingWindows([10], allowed_lateness_s=2)
    out = []
    for i in range(10):
        out += aggs(w.on_metrics(batch(T0 + i, float(i)), now=0.0))
    assert out == []  # all samples in [T0, T0+10): nothing closes yet
    assert aggs(w.on_metrics(batch(T0 + 11, 1.0), now=0.0)) == []  # watermark T0+9 < end
    (agg,) = aggs(w.on_metrics(batch(T0 + 12, 1.0), now=0.0))  # watermark reaches T0+10
    s = agg.series[0]
    assert (agg.start, agg.end, agg.closed_by) == (T0, T0 + 10, "watermark")
    assert (s.count, s.min, s.max, s.sum, s.mean, s.last) == (10, 0.0, 9.0, 45.0, 4.5, 9.0)
    assert s.p50 == 4.5 and abs(s.p95 - 8.55) < 1e-9 and abs(s.p99 - 8.91) < 1e-9


def test_out_of_order_sample_within_lateness_is_counted_in_its_window() -> None:
    w = TumblingWindows([10], allowed_lateness_s=5)
    w.on_metrics(batch(T0 + 1, 1.0), 0)
    w.on_metrics(batch(T0 + 12, 1.0), 0)
    w.on_metrics(batch(T0 + 3, 3.0), 0)  # late but within lateness
    (agg,) = aggs(w.on_metrics(batch(T0 + 15, 1.0), 0))
    assert agg.series[0].count == 2 and agg.late == 0


def test_late_samples_are_counted_never_silently_dropped() -> None:
    w = TumblingWindows([10], allowed_lateness_s=0)
    w.on_metrics(batch(T0 + 1, 1.0), 0)
    w.on_metrics(batch(T0 + 10, 1.0), 0)  # closes [T0, T0+10)
    assert aggs(w.on_metrics(batch(T0 + 5, 9.0), 0)) == []
    assert w.stats.late == 1
    (agg,) = aggs(w.on_metrics(batch(T0 + 20, 1.0), 0))
    assert agg.late == 1  # reported on the next aggregate of that node


def test_timer_closes_windows_of_a_silent_node() -> None:
    w = TumblingWindows([10], allowed_lateness_s=2)
    w.on_metrics(batch(T0 + 1, 5.0), now=100.0)
    assert aggs(w.on_tick(105.0)) == []
    (agg,) = aggs(w.on_tick(112.5))  # quiet for a window plus the lateness
    assert agg.closed_by == "timer" and agg.series[0].count == 1


def test_minute_window_merges_its_ten_second_windows() -> None:
    w = TumblingWindows([10, 60], allowed_lateness_s=0)
    out = []
    for i in range(61):
        out += aggs(w.on_metrics(batch(T0 + i, float(i)), 0))
    minute = [a for a in out if a.window_s == 60]
    assert len([a for a in out if a.window_s == 10]) == 6
    assert len(minute) == 1 and minute[0].series[0].count == 60 and minute[0].series[0].max == 59.0


def test_series_are_kept_apart_by_labels_and_nodes() -> None:
    w = TumblingWindows([10], allowed_lateness_s=0)
    for node in ("a", "b"):
        w.on_metrics(batch(T0, 1.0, node=node, core="0"), 0)
        w.on_metrics(batch(T0, 2.0, node=node, core="1"), 0)
    out = aggs(w.on_metrics(batch(T0 + 10, 0.0, node="a"), 0))
    assert [(a.node, sorted((s.labels or {}).get("core", "") for s in a.series)) for a in out] == [("a", ["0", "1"])]


def test_node_and_series_limits_refuse_and_count() -> None:
    w = TumblingWindows([10], max_nodes=1, max_series_per_node=1)
    w.on_metrics(batch(T0, 1.0, node="a"), 0)
    w.on_metrics(batch(T0, 1.0, node="b"), 0)
    w.on_metrics(MetricBatch("c1", "a", T0, [Sample("other", 1.0)]), 0)
    assert w.stats.extra == {"refused_nodes": 1, "refused_series": 1}


def test_snapshot_and_replay_rebuild_open_windows_without_re_emitting_closed_ones() -> None:
    w = TumblingWindows([10], allowed_lateness_s=0)
    inputs = [batch(T0 + i, float(i)) for i in range(15)]
    emitted = []
    for b in inputs:
        emitted += aggs(w.on_metrics(b, 0))
    assert len(emitted) == 1
    replay_from = w.replay_from()
    assert replay_from == T0 + 10
    w2 = TumblingWindows([10], allowed_lateness_s=0)
    w2.restore(w.snapshot())
    w2.replaying = True
    again = []
    for b in inputs:  # the runtime replays from before replay_from
        again += aggs(w2.on_metrics(b, 0))
    w2.replaying = False
    assert again == [] and w2.stats.late == 0
    (agg,) = aggs(w2.on_metrics(batch(T0 + 20, 0.0), 0))
    assert (agg.start, agg.series[0].count) == (T0 + 10, 5)


def test_quantile_matches_linear_interpolation() -> None:
    assert quantile([1.0], 0.99) == 1.0
    assert quantile([0.0, 10.0], 0.95) == 9.5


def test_deferred_closing_spreads_a_burst_of_closes_over_ticks() -> None:
    w = TumblingWindows([10], allowed_lateness_s=0, closes_per_tick=2)
    for n in range(5):
        w.on_metrics(batch(T0 + 1, 1.0, node=f"n{n}"), now=0.0)
    closed_inline = [a for n in range(5) for a in aggs(w.on_metrics(batch(T0 + 10, 1.0, node=f"n{n}"), now=0.0))]
    assert closed_inline == []  # every node's window is due at once: nothing closes inline
    per_tick = [len(aggs(w.on_tick(0.5 + i * 0.05))) for i in range(4)]
    assert per_tick == [2, 2, 1, 0]


@pytest.mark.parametrize("max_series", [6, 7])
def test_windows_of_one_layout_give_the_same_statistics_as_series_summarised_one_by_one(max_series: int) -> None:
    """Batches that keep one layout are summarised straight from their rows; the numbers are those of
    ``summarize_many`` over each series' values (last = the value at the newest time), refused series left out."""
    import random

    from processors.windows import summarize_many

    rng = random.Random(4)
    names = [("cpu.percent", {"core": str(c)}) for c in range(4)] + [("mem.percent", None), ("load1", None), ("extra", None)]
    w = TumblingWindows([10, 60], allowed_lateness_s=3, max_series_per_node=max_series)  # 6: "extra" is refused
    seen: dict[tuple[float, float], dict[str, list[tuple[float, float]]]] = {}
    out: list[WindowAggregate] = []
    for i in range(75):
        ts = T0 + i + rng.choice([0.0, 0.0, -2.0])  # some out of order, within the lateness
        vals = [rng.choice([rng.gauss(50, 30), 1e300, -0.0, 42.0]) for _ in names]
        out += aggs(w.on_metrics(MetricBatch("c1", "n1", ts, [Sample(n, v, unit="%", labels=lab) for (n, lab), v in zip(names, vals)]), 0))
        for size in (10.0, 60.0):
            per = seen.setdefault((size, ts - ts % size), {})
            for (n, lab), v in zip(names[:max_series], vals):
                per.setdefault(n + str(sorted((lab or {}).items())), []).append((ts, v))
    assert {a.window_s for a in out} == {10.0, 60.0} and all(len(a.series) == max_series for a in out)
    for a in out:
        per = seen[(a.window_s, a.start)]
        items = []
        for (n, lab), key in zip(names[:max_series], per):
            tv = per[key]
            newest = max(range(len(tv)), key=lambda j: tv[j][0])
            items.append(((n, lab, "%"), [v for _, v in tv], tv[newest][1]))
        assert a.series == summarize_many(items)
