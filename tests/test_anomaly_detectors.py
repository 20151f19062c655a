"""Anomaly detectors as specifications: online, bounded, robust to real fleet metrics."""
from __future__ import annotations

import math

import msgspec
import numpy as np
import pytest

from processors.anomaly import (
    DETECTORS,
    ExtremesDetector,
    RarityDetector,
    RestPeriod,
    RobustZDetector,
    default_detector,
    make_detector,
)
from processors.anomaly.base import DEFAULT_THRESHOLD as T

T0 = 1_700_006_400.0  # a UTC midnight
STEP_S = 300.0  # 5-minute samples, 288 a day
DAY = 288


def daily(n: int, seed: int = 0, noise: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """A latency-like series with a daily bump, and its timestamps."""
    rng = np.random.default_rng(seed)
    i = np.arange(n)
    ts = T0 + i * STEP_S
    hour = (i % DAY) / DAY * 24
    v = 50 + 20 * ((hour > 9) & (hour < 17)) + rng.normal(0, noise, n)
    return v, ts


def stream(det: object, values: np.ndarray, ts: np.ndarray | None = None) -> np.ndarray:
    return np.array([det.process_one(float(x), None if ts is None else float(t)) for x, t in zip(values, ts if ts is not None else values)])  # type: ignore[attr-defined]


ALL = sorted(DETECTORS)


@pytest.mark.parametrize("name", ALL)
def test_score_of_a_row_depends_only_on_earlier_rows(name: str) -> None:
    v, ts = daily(1500, seed=1)
    v[1200] += 80
    full = make_detector(name).score_many(v, ts)
    prefix = make_detector(name).score_many(v[:1100], ts[:1100])
    np.testing.assert_allclose(full[:1100], prefix, atol=1e-9)
    assert ((full >= 0) & (full <= 1)).all()


@pytest.mark.parametrize("name", ALL)
def test_vectorised_scores_equal_row_by_row_scores_and_state(name: str) -> None:
    v, ts = daily(2 * DAY + 500, seed=2)
    v[700] = 200.0
    v[900:960] = 58.0
    v[::37] = np.nan  # gaps
    vec = make_detector(name)
    a = vec.score_many(v, ts)
    b = stream(make_detector(name), v, ts)
    np.testing.assert_allclose(a, b, atol=1e-9)
    # the vectorised run leaves the state where the row-by-row run would
    half = len(v) // 2
    d = make_detector(name)
    c = np.concatenate([d.score_many(v[:half], ts[:half]), stream(d, v[half:], ts[half:])])
    np.testing.assert_allclose(a, c, atol=1e-9)


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("level", [0.0, 45.0, -3.5, 1e9])
def test_constant_series_never_scores(name: str, level: float) -> None:
    v = np.full(2000, level)
    ts = T0 + np.arange(2000) * STEP_S
    assert make_detector(name).score_many(v, ts).max() == 0.0
    assert stream(make_detector(name), v[:600], ts[:600]).max() == 0.0


def test_default_detector_flags_a_latency_spike_once_per_episode() -> None:
    v, ts = daily(4 * DAY, seed=3)
    v[900:905] = 160.0  # a five-point latency spike
    s = default_detector().score_many(v, ts)
    flagged = np.nonzero(s >= T)[0]
    assert flagged.tolist() == [900]


def test_nothing_is_scored_during_warmup() -> None:
    v, ts = daily(600, seed=4)
    v[100] = 1e6
    assert default_detector().score_many(v, ts)[:150].max() == 0.0


def test_step_to_a_new_normal_alerts_once_then_is_learned() -> None:
    v, ts = daily(6 * DAY, seed=5)
    v[3 * DAY:] += 100.0  # the service moved to slower hardware and stays there
    det = default_detector()
    s = det.score_many(v, ts)
    assert s[3 * DAY] >= T
    assert (s[3 * DAY + 1:] >= T).sum() <= 1  # learned, not alerting forever
    assert not det.active


def test_gaps_and_nan_score_zero_and_teach_nothing() -> None:
    v, ts = daily(700, seed=6)
    det = default_detector()
    det.score_many(v, ts)
    before = msgspec.json.encode(det.snapshot())
    for bad in (math.nan, math.inf, -math.inf):
        assert det.score_one(bad, ts[-1] + STEP_S) == 0.0
        det.learn_one(bad, ts[-1] + STEP_S)
    assert msgspec.json.encode(det.snapshot()) == before


def test_state_is_bounded_whatever_the_length_of_the_series() -> None:
    sizes = []
    for n in (2 * DAY, 20 * DAY):
        v, ts = daily(n, seed=7)
        det = default_detector()
        det.score_many(v, ts)
        sizes.append(len(msgspec.json.encode(det.snapshot())))
    assert sizes[1] <= sizes[0] * 1.2


def test_flagged_point_does_not_poison_the_robust_baseline() -> None:
    rng = np.random.default_rng(8)
    det = RobustZDetector(direction="up", warmup=20)
    for x in 10 + rng.normal(0, 1, 200):
        det.process_one(float(x))
    before = det.baseline()
    assert det.process_one(500.0) >= det.threshold
    assert det.baseline() == before  # the spike was not learned
    assert det.process_one(10.5) < det.threshold
    assert det.process_one(480.0) >= det.threshold  # the next spike is still a spike


def test_robust_z_relearns_a_persistent_shift_instead_of_alerting_forever() -> None:
    rng = np.random.default_rng(9)
    det = RobustZDetector(direction="both", warmup=20, relearn_after=10)
    for x in 10 + rng.normal(0, 1, 200):
        det.process_one(float(x))
    scores = [det.process_one(float(x)) for x in 60 + rng.normal(0, 1, 100)]
    assert scores[0] >= det.threshold
    assert max(scores[20:]) < det.threshold
    assert det.baseline()["center"] == pytest.approx(60, abs=2)


def test_robust_z_on_an_all_zero_error_count_needs_a_real_spike() -> None:
    det = RobustZDetector(direction="up", min_scale=0.25)
    t0 = 1_767_225_600.0
    for k in range(3600):  # an hour of zero errors at 1 Hz
        assert det.process_one(0.0, t0 + k) == 0.0
    assert det.score_one(1.0, t0 + 3600) < det.threshold  # one stray error is not a spike
    assert det.score_one(5.0, t0 + 3600) >= det.threshold


def test_robust_z_score_is_a_calibrated_tail_at_the_shared_threshold() -> None:
    # per 5 minutes of series time, like the default detector: 0.9998 is the one threshold everywhere
    assert make_detector("robust_z").threshold == T
    rng = np.random.default_rng(12)
    t0 = 1_767_225_600.0
    slow, fast = RobustZDetector(direction="up"), RobustZDetector(direction="up")
    for k, x in enumerate(10 + rng.normal(0, 1, 2000)):
        slow.process_one(float(x), t0 + 300.0 * k)
        fast.process_one(float(x), t0 + 1.0 * k)
    # the same z is 300x less rare per 5 minutes on a 1 Hz series than on a 5-minute one
    z6 = 10 + 6 * slow.baseline()["scale"]
    assert fast.score_one(z6, t0 + 2000) < slow.score_one(z6, t0 + 300.0 * 2000)
    # a value inside what the series has done scores its rank: well below the threshold
    assert slow.score_one(11.0, t0 + 300.0 * 2000) < 0.9


def test_extremes_detect_a_level_shift_inside_the_old_spike_range() -> None:
    rng = np.random.default_rng(10)
    v = 10 + rng.normal(0, 0.3, 1500)
    v[::50] += 30  # routine spikes: the range is 10..40
    v[1000:] += 8  # a sustained shift to 18: no single value is new, the level is
    s = ExtremesDetector().score_many(v)
    assert s[1000:1020].max() >= T
    assert s[200:1000].max() < T


def test_seasonal_rarity_detects_a_missing_daily_peak() -> None:
    v, ts = daily(8 * DAY, seed=11)
    day6 = slice(6 * DAY, 7 * DAY)
    v[day6] = 50 + np.random.default_rng(12).normal(0, 1, DAY)  # the business-hours bump never comes
    s = RestPeriod(RarityDetector("hour")).score_many(v, ts)
    assert s[6 * DAY + 100 : 6 * DAY + 200].max() >= T  # noticed during the missing peak
    assert (s[DAY * 2 : 6 * DAY] >= T).sum() <= 1  # at most one stray detection in four normal days
    # the value never leaves its usual range, so extremes alone miss it
    assert ExtremesDetector().score_many(v, ts)[day6].max() < T


def test_seasonal_scores_only_after_coverage_and_a_day_of_calibration_the_same_live_and_in_backtest() -> None:
    v, ts = daily(7 * DAY, seed=5)
    v[6 * DAY + 100 : 6 * DAY + 200] = 50 + np.random.default_rng(6).normal(0, 1, 100)  # a missing peak
    vec = RarityDetector("hour").score_many(v, ts)
    live = stream(RarityDetector("hour"), v, ts)
    np.testing.assert_allclose(vec, live, atol=1e-9)
    assert vec[: 4 * DAY].max() == 0.0  # three days to cover the calendar, then a day of calibration
    assert vec[4 * DAY :].max() > 0.9


def test_sequence_rarity_detects_a_stuck_value_between_two_alternating_levels() -> None:
    i = np.arange(3000)
    v = np.where((i // 10) % 2 == 0, 20.0, 80.0) + np.random.default_rng(13).normal(0, 1, 3000)
    v[2000:2100] = 50.0  # a duty-cycling fan stuck half-way
    s = RestPeriod(RarityDetector("previous")).score_many(v)
    assert s[2000:2010].max() >= T
    assert s[500:2000].max() < T and s[2100:].max() < T


def test_rest_period_gives_one_detection_and_stays_active_through_the_episode() -> None:
    det = RestPeriod(ExtremesDetector(warmup=10), rest=5)
    for x in [1.0, 2.0] * 20:
        det.process_one(x)
    assert det.process_one(50.0) >= 0.5 and det.active
    assert det.process_one(100.0) == 0.0 and det.active  # muted, but the episode goes on
    for _ in range(5):
        det.process_one(1.5)
    assert not det.active


def test_snapshot_restore_continues_exactly() -> None:
    v, ts = daily(3 * DAY, seed=14)
    v[700] = 300
    a = default_detector()
    a.score_many(v[:500], ts[:500])
    state = msgspec.msgpack.decode(msgspec.msgpack.encode(a.snapshot()))
    b = default_detector()
    b.restore(state)
    np.testing.assert_allclose(stream(a, v[500:], ts[500:]), stream(b, v[500:], ts[500:]), atol=1e-12)


def test_unknown_detector_and_bad_parameters_are_refused_by_name() -> None:
    with pytest.raises(ValueError, match="'lstm' is unknown"):
        make_detector("lstm")
    with pytest.raises(ValueError, match="threshold 0 must be in"):
        make_detector("default", threshold=0)
    with pytest.raises(ValueError, match="bad parameters"):
        make_detector("robust_z", params={"window": 3})
    with pytest.raises(ValueError, match="direction 'sideways'"):
        make_detector("robust_z", params={"direction": "sideways"})


def test_docstring_examples_run() -> None:
    import doctest

    from processors.anomaly import extremes, robust_z

    for mod in (extremes, robust_z):
        result = doctest.testmod(mod)
        assert result.attempted > 0 and result.failed == 0
