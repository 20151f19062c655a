"""False alarms of the default detector on iid heavy-tailed noise: detections per series-hour against the calibrated rate.

    nice -n 10 python bench/bench_anomaly_heavy_tails.py [--series 40] [--hours 3] [--seed 7] [--kinds normal,t3,t2,lognormal]

Prints one JSON object.

Each series is iid noise at 1 Hz (no anomaly at all) scored through the
backtest path (``default_detector().score_many``, what ``swarmwatch backtest
anomaly`` runs), from 00:50 UTC. A detection is a score at or above the
threshold after the rest period (one per episode), i.e. what would page.

Calibration says: the ensemble reports tails per ``period_s`` (5 minutes) of
series time, so on stationary data at most ``(1 - threshold)`` detections
per 5 minutes scored are expected (an upper bound: records thin out as
history grows). The first hour is warm-up (the extremes member needs an hour
of history; the seasonal member needs days and never scores here), so
``scored_hours = hours - 1`` per series. ``ratio`` = detections / expected;
``ratio_upper95`` uses the one-sided 95 % Poisson upper bound of the count.
A calibrated detector gives ratio <= 1; ``by_member`` says which member
alone (same threshold, same rest, same guards) would have fired, to find the
miscalibrated tail.

Kinds: ``normal`` (light tail, control), ``t3`` / ``t2`` (Student-t with 3 / 2
degrees of freedom: polynomial tails), ``lognormal`` (sigma 1: skewed,
subexponential). Counts depend only on the seed, not on machine load.
"""
from __future__ import annotations

import argparse
import json
import math
import platform
import time
from typing import Any

import numpy as np

from processors.anomaly.base import DEFAULT_THRESHOLD
from processors.anomaly.ensemble import DEFAULT_PERIOD_S
from processors.anomaly.registry import MEMBERS, default_detector

T0 = 1_767_228_600.0  # 2026-01-01 00:50:00 UTC
WARMUP_S = 3600.0  # the first hour is not scored by the extremes member (DEFAULT_WARMUP_S)
KINDS = ("normal", "t3", "t2", "lognormal")


def noise(kind: str, rng: np.random.Generator, n: int) -> np.ndarray:
    """``n`` iid values of ``kind`` around a level of 50 (lognormal: positive, median 1)."""
    if kind == "normal":
        return 50.0 + rng.normal(0.0, 1.0, n)
    if kind == "t3":
        return 50.0 + rng.standard_t(3, n)
    if kind == "t2":
        return 50.0 + rng.standard_t(2, n)
    if kind == "lognormal":
        return rng.lognormal(0.0, 1.0, n)
    raise ValueError(f"kind {kind!r} is unknown; expected one of {KINDS}")


def poisson_upper95(k: int) -> float:
    """One-sided 95 % upper bound of a Poisson mean after observing ``k`` events (exact, by bisection)."""
    lo, hi = 0.0, 10.0 * k + 10.0
    for _ in range(100):
        mid = (lo + hi) / 2
        cdf = sum(math.exp(-mid) * mid**j / math.factorial(j) for j in range(k + 1))
        lo, hi = (mid, hi) if cdf > 0.05 else (lo, mid)
    return hi


def run_kind(kind: str, series: int, hours: float, seed: int, threshold: float) -> dict[str, Any]:
    n = int(hours * 3600)
    ts = T0 + np.arange(n, dtype=float)
    rng = np.random.default_rng(seed)
    detections = 0
    by_member = {m: 0 for m in MEMBERS}
    series_paged = 0
    t = time.perf_counter()
    for _ in range(series):
        v = noise(kind, rng, n)
        hits = int(np.count_nonzero(default_detector(threshold=threshold).score_many(v, ts) >= threshold))
        detections += hits
        series_paged += hits > 0
        for m in MEMBERS:
            by_member[m] += int(np.count_nonzero(default_detector(threshold=threshold, members=(m,)).score_many(v, ts) >= threshold))
    scored_h = series * max(0.0, hours - WARMUP_S / 3600)
    expected = (1.0 - threshold) * scored_h * 3600 / DEFAULT_PERIOD_S
    return {
        "series": series,
        "scored_series_hours": scored_h,
        "detections": detections,
        "series_paged": series_paged,
        "per_series": detections / series,
        "per_20_series_hours": 20 * detections / scored_h if scored_h else None,
        "expected": round(expected, 4),
        "ratio": round(detections / expected, 1) if expected else None,
        "ratio_upper95": round(poisson_upper95(detections) / expected, 1) if expected else None,
        "by_member": by_member,
        "seconds": round(time.perf_counter() - t, 2),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--series", type=int, default=40, help="series per kind")
    ap.add_argument("--hours", type=float, default=3.0, help="hours of 1 Hz data per series (the first is warm-up)")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--kinds", default=",".join(KINDS))
    ap.add_argument("--threshold", type=float, default=DEFAULT_THRESHOLD)
    a = ap.parse_args()
    out = {
        "bench": "anomaly_heavy_tails",
        "machine": f"{platform.node()} ({platform.machine()}), shared dev VM: counts do not depend on load",
        "threshold": a.threshold,
        "period_s": DEFAULT_PERIOD_S,
        "hours": a.hours,
        "seed": a.seed,
        "kinds": {k: run_kind(k, a.series, a.hours, a.seed, a.threshold) for k in a.kinds.split(",") if k},
    }
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
