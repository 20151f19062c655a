"""Anomaly detector state as specifications: small tables, halving that live and backtest agree on, old checkpoints."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import pytest

from processors.anomaly import AnomalyOperator, RarityDetector, default_detector
from processors.anomaly import calibration, rarity
from schemas import MetricBatch, Sample

T0 = 1_700_006_400.0  # a UTC midnight
STEP_S = 300.0
DAY = 288
OLD_CHECKPOINT = Path(__file__).parent / "data" / "anomaly_checkpoint_int32.msgpack"


def daily(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Latency-like series with a daily bump (the one the old-format fixture was written from, for seed 14)."""
    rng = np.random.default_rng(seed)
    i = np.arange(n)
    hour = (i % DAY) / DAY * 24
    return 50 + 20 * ((hour > 9) & (hour < 17)) + rng.normal(0, 1.0, n), T0 + i * STEP_S


def stream(det: Any, v: np.ndarray, ts: np.ndarray) -> np.ndarray:
    return np.array([det.process_one(float(x), float(t)) for x, t in zip(v, ts)])


def arrays(x: Any, seen: set[int] | None = None) -> list[np.ndarray]:
    """Every numpy array a detector holds."""
    seen = set() if seen is None else seen
    if id(x) in seen:
        return []
    seen.add(id(x))
    if isinstance(x, np.ndarray):
        return [x]
    if isinstance(x, (list, tuple)):
        return [a for v in x for a in arrays(v, seen)]
    names = list(getattr(x, "__dict__", {})) + list(getattr(type(x), "__slots__", ()))
    return [a for n in names if hasattr(x, n) for a in arrays(getattr(x, n), seen)]


def test_count_tables_are_uint16_over_visited_bins_only_and_all_arrays_of_a_series_fit_in_1_5_kb() -> None:
    v, ts = daily(20 * DAY, seed=3)
    det = default_detector()
    det.score_many(v, ts)
    seasonal, sequence = (m for m in det.inner.members if isinstance(m, RarityDetector))
    visited = int((seasonal.slot_of >= 0).sum())
    assert visited < seasonal.n_bins
    assert seasonal.counts.shape == (seasonal.buckets, visited) and sequence.counts.shape == (visited, visited)
    assert seasonal.counts.dtype == sequence.counts.dtype == np.uint16
    assert sum(a.nbytes for a in arrays(det)) <= 1536  # full int32 tables and int64 sums held 8.5 KB


def test_a_series_holds_only_uint16_counts_no_sums_and_the_rarities_its_next_smoothed_rarity_needs() -> None:
    v, ts = daily(20 * DAY, seed=3)
    det = default_detector()
    det.score_many(v, ts)
    held = arrays(det)
    assert {a.dtype for a in held if a.size} == {np.dtype(np.uint16)}  # the row / column sums are summed from the table, not held
    assert sum(a.nbytes for a in held) <= 512
    for m in det.inner.members:
        if isinstance(m, RarityDetector):
            assert len(m.rbuf) == m.smooth - 1
            assert m.ctx_counts.tolist() == m.table().sum(axis=1).tolist() and int(m.bin_counts.sum()) == m.n
            assert 0 < len(m.calib.counts) < calibration.BINS and m.calib.counts[0] > 0 and m.calib.counts[-1] > 0


class FullHistogram:
    """The calibration as it was specified: all BINS counts held (the reference the held span must match)."""

    def __init__(self, cap: int) -> None:
        self.cap, self.counts, self.n = cap, np.zeros(calibration.BINS, dtype=np.int64), 0

    def tail(self, s: float) -> float:
        b = calibration.bin_of(s)
        return (int(self.counts[b + 1:].sum()) + 0.5 * int(self.counts[b]) + 1.0) / (self.n + 1.0)

    def learn(self, s: float) -> None:
        self.counts[calibration.bin_of(s)] += 1
        self.n += 1
        if self.n >= self.cap:
            self.counts //= 2
            self.n = int(self.counts.sum())


def test_calibration_holds_only_the_span_of_bins_in_use_and_scores_as_the_full_histogram_does() -> None:
    rng = np.random.default_rng(4)
    s = np.concatenate((rng.exponential(0.3, 300), rng.exponential(3.0, 200), rng.exponential(0.05, 300)))  # the span grows both ways
    live, offline, full = calibration.TailCalibrator(cap=64), calibration.TailCalibrator(cap=64), FullHistogram(cap=64)  # halves every ~32 points
    scores = []
    for x in s:
        sc = live.score(float(x))
        if 0.0 < x <= live.s_max:  # inside the history: the rank against the histogram
            assert sc == pytest.approx(max(0.0, 1.0 - full.tail(float(x))), abs=1e-15)
        scores.append(sc)
        live.learn(float(x))
        full.learn(float(x))
        nz = np.flatnonzero(full.counts)
        assert live.first == nz[0] and live.counts.tolist() == full.counts[nz[0] : nz[-1] + 1].tolist()
    np.testing.assert_allclose(offline.score_many(s), scores, atol=1e-12)
    assert offline.first == live.first and offline.counts.tolist() == live.counts.tolist()
    again = calibration.TailCalibrator(cap=64)
    again.restore(msgspec.msgpack.decode(msgspec.msgpack.encode(live.snapshot())))
    assert again.snapshot() == live.snapshot() and again.first == live.first


def test_checkpoint_keeps_the_full_table_layout_and_a_series_moving_to_new_bins_continues_exactly() -> None:
    v, ts = daily(4 * DAY, seed=9)
    v[3 * DAY:] += 15  # a new level: bins the series never visited get slots mid-life
    offline, live = default_detector(), default_detector()
    offline.score_many(v[: 2 * DAY], ts[: 2 * DAY])
    stream(live, v[: 2 * DAY], ts[: 2 * DAY])
    state = msgspec.msgpack.decode(msgspec.msgpack.encode(offline.snapshot()))
    table = state["inner"]["det"]["members"]["dets"][1]["counts"]
    assert table["shape"] == [offline.inner.members[1].buckets, offline.inner.members[1].n_bins]
    restored = default_detector()
    restored.restore(state)
    a, b, c = (stream(d, v[2 * DAY:], ts[2 * DAY:]) for d in (offline, live, restored))
    np.testing.assert_allclose(a, b, atol=1e-12)
    np.testing.assert_allclose(a, c, atol=1e-12)
    assert msgspec.json.encode(offline.snapshot()) == msgspec.json.encode(restored.snapshot())


def test_a_full_cell_halves_the_table_rounding_up_the_same_way_live_and_in_backtest(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rarity, "COUNT_MAX", 1000)  # reach the limit within a test-sized series
    v, ts = daily(6 * DAY, seed=5)
    for context in ("hour", "previous"):
        offline, live = RarityDetector(context=context, min_cycles=1), RarityDetector(context=context, min_cycles=1)
        np.testing.assert_allclose(offline.score_many(v, ts), stream(live, v, ts), atol=1e-12)
        assert offline.counts is not None and live.counts is not None
        np.testing.assert_array_equal(offline.counts, live.counts)
        assert int(live.table().max()) < 1000  # halved at least once (a cell would have reached 1000)
        assert int(live.ctx_counts.sum()) == int(live.table().sum()) == live.n  # sums recounted


def test_halving_keeps_every_pair_ever_seen() -> None:
    table = np.array([[0, 1, 2, 3, 0xFFFF]], dtype=np.uint16)
    assert rarity.halve_counts(table).tolist() == [[0, 1, 1, 2, 0x8000]]


def test_checkpoint_written_with_int32_tables_restores_and_continues_exactly() -> None:
    # the fixture also holds hourly (24-slot) seasonal counts: they fold into 2-hour slots
    v, ts = daily(3 * DAY, seed=14)
    fresh = default_detector()
    fresh.score_many(v[:700], ts[:700])
    restored = default_detector()
    restored.restore(msgspec.msgpack.decode(OLD_CHECKPOINT.read_bytes()))
    tables = [m.counts for m in restored.inner.members if isinstance(m, RarityDetector)]
    assert [t.dtype for t in tables] == [np.uint16, np.uint16]
    np.testing.assert_allclose(stream(restored, v[700:], ts[700:]), stream(fresh, v[700:], ts[700:]), atol=1e-12)


def test_old_checkpoint_counts_beyond_uint16_are_halved_not_wrapped() -> None:
    state = msgspec.msgpack.decode(OLD_CHECKPOINT.read_bytes())
    seq = state["inner"]["det"]["members"]["dets"][2]
    seq["counts"]["v"] = [c * 1000 for c in seq["counts"]["v"]]  # a long-lived series
    det = default_detector()
    det.restore(state)
    table = det.inner.members[2].table()
    assert table.dtype == np.uint16 and 0 < int(table.max()) < rarity.COUNT_MAX
    assert np.count_nonzero(table) == len(seq["counts"]["v"])


def feed(op: AnomalyOperator, n: int, t0: float = T0) -> None:
    rng = np.random.default_rng(2)
    for k in range(n):
        op.on_metrics(MetricBatch("c1", "n1", t0 + 15 * k, [Sample("lat_ms", float(20 + rng.normal(0, 2)))]), t0 + 15 * k)


def test_unreadable_detector_state_in_a_checkpoint_starts_that_series_fresh_with_a_log_line(caplog: pytest.LogCaptureFixture) -> None:
    a = AnomalyOperator()
    feed(a, 600)
    state = msgspec.msgpack.decode(msgspec.msgpack.encode(a.snapshot()))
    (row,) = state["series"]
    row[6]["inner"]["det"]["members"]["dets"][1]["counts"]["shape"] = [3, 5]  # not this detector's table
    b = AnomalyOperator()
    with caplog.at_level(logging.WARNING, logger="processors.anomaly.operator"):
        b.restore(state)
    assert len(b) == 1 and "unreadable" in caplog.text and "starting it fresh" in caplog.text
    (series,) = b._series.values()
    assert series.detector.inner.n == 0  # learns the series afresh
    feed(b, 10, t0=T0 + 15 * 600)  # and keeps running


@pytest.mark.parametrize("context", ["hour", "previous"])
def test_a_checkpoint_taken_before_the_bins_are_fixed_restores_and_continues_exactly_in_either_layout(context: str) -> None:
    v, ts = daily(3 * DAY, seed=6)
    cut = 150  # within the bin warm-up: the detector holds its first points, not a table
    offline, live = RarityDetector(context=context, min_cycles=1), RarityDetector(context=context, min_cycles=1)
    expected = offline.score_many(v, ts)
    head = stream(live, v[:cut], ts[:cut])
    assert live.counts is None and live.warm.dtype == np.float64 and live.warm[:cut].tolist() == v[:cut].tolist()
    assert len(live.warm_ctx) == (len(live.warm) if context == "hour" else 0)  # a calendar context keeps each point's slot, one byte
    state = msgspec.msgpack.decode(msgspec.msgpack.encode(live.snapshot()))
    assert [p[0] for p in state["warm"]] == v[:cut].tolist()  # [x, ts] pairs, as checkpoints always held them
    written_before = dict(state, warm=[[float(x), float(t)] for x, t in zip(v[:cut], ts[:cut])])  # real timestamps
    for st in (state, written_before):
        restored = RarityDetector(context=context, min_cycles=1)
        restored.restore(st)
        np.testing.assert_allclose(np.concatenate((head, stream(restored, v[cut:], ts[cut:]))), expected, atol=1e-12)


def wander(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A random walk: it visits many bins but moves only between neighbours (a sparse transition table)."""
    rng = np.random.default_rng(seed)
    return 50 + np.cumsum(rng.normal(0, 0.3, n)), T0 + np.arange(n) * STEP_S


def dense_only(det: RarityDetector) -> RarityDetector:
    """The same detector, always holding its table dense (the reference the sparse form must match)."""
    det._settle = lambda: None  # type: ignore[method-assign]
    return det


def test_a_sparse_transition_table_is_held_sparse_smaller_than_dense_and_scores_exactly_as_dense() -> None:
    v, ts = wander(6 * DAY, seed=0)
    offline, live = RarityDetector(context="previous"), RarityDetector(context="previous")
    reference = dense_only(RarityDetector(context="previous"))
    a, b, ref = offline.score_many(v, ts), stream(live, v, ts), stream(reference, v, ts)
    k = live.visited.bit_count()
    assert k > 15 and reference.counts.shape == (k, k)
    for det in (offline, live):
        assert det.counts.ndim == 1 and det.counts.dtype == np.uint16 and det.counts.nbytes < reference.counts.nbytes
        np.testing.assert_array_equal(det.table(), reference.counts)
    np.testing.assert_array_equal(b, ref)  # exactly the dense detector's scores
    np.testing.assert_allclose(a, b, atol=1e-12)
    assert live.snapshot() == reference.snapshot()  # checkpoints keep the full-table layout
    assert offline.snapshot()["counts"] == live.snapshot()["counts"]


def test_a_table_turns_dense_once_dense_is_smaller_and_a_sparse_checkpoint_continues_exactly() -> None:
    v, ts = wander(8 * DAY, seed=1)
    rng = np.random.default_rng(2)
    v[4 * DAY:] = rng.uniform(v.min(), v.max(), 4 * DAY)  # noise across the range: every transition, cells fill
    live, reference = RarityDetector(context="previous"), dense_only(RarityDetector(context="previous"))
    head = stream(live, v[: 4 * DAY], ts[: 4 * DAY])
    np.testing.assert_array_equal(head, stream(reference, v[: 4 * DAY], ts[: 4 * DAY]))
    assert live.counts.ndim == 1
    restored = RarityDetector(context="previous")
    restored.restore(msgspec.msgpack.decode(msgspec.msgpack.encode(live.snapshot())))
    assert restored.counts.ndim == 1 and np.array_equal(restored.counts, live.counts)
    tails = [stream(d, v[4 * DAY:], ts[4 * DAY:]) for d in (live, restored, reference)]
    np.testing.assert_array_equal(tails[0], tails[2])
    np.testing.assert_array_equal(tails[1], tails[2])
    offline = RarityDetector(context="previous")
    np.testing.assert_allclose(offline.score_many(v, ts), np.concatenate((head, tails[0])), atol=1e-12)
    for det in (live, restored, offline):
        assert det.counts.ndim == 2 and np.array_equal(det.counts, reference.counts)


def test_a_sparse_table_halves_like_a_dense_one_live_and_in_backtest(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rarity, "COUNT_MAX", 300)
    v, ts = wander(6 * DAY, seed=3)
    offline, live = RarityDetector(context="previous"), RarityDetector(context="previous")
    reference = dense_only(RarityDetector(context="previous"))
    ref = stream(reference, v, ts)
    np.testing.assert_array_equal(stream(live, v, ts), ref)
    np.testing.assert_allclose(offline.score_many(v, ts), ref, atol=1e-12)
    assert int(reference.counts.max()) < 300 and live.n == reference.n == offline.n < len(v)  # halved
    for det in (offline, live):
        assert det.counts.ndim == 1
        np.testing.assert_array_equal(det.table(), reference.counts)
