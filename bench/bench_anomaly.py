"""Anomaly detection speed: backtest points/s (read, score, write) and live per-point cost.

    python bench/bench_anomaly.py [--data DIR] [--repeat 3]

Prints one JSON object. ``backtest`` runs ``run_backtest`` (the CLI's code)
over every CSV under DATA (default: the NAB set in shared/evals) on one core;
``score_only`` is the detector alone on the already-parsed arrays; ``live``
feeds one series row by row through ``process_one`` as the operator does;
``operator`` pushes MetricBatches of 40 samples through AnomalyOperator;
``state`` is the size of one series' detector state after a long NAB file,
after a day of 1 Hz data, at its peak (299 points in, just before the rarity
bins are fixed) and, per file, after each visible NAB file
(``nab_files``: min / median / p90 / max and how many are <= 2 KB):
``payload_bytes`` counts what the detector holds (numbers and arrays, 8 bytes
a number, an array its ``nbytes``), its configuration included;
``state_bytes`` counts the same way only what is this series' own, what a
checkpoint must hold to resume it exactly (the ``_STATE`` fields, the
calibration histograms and counters, the rarity tables' visited-bin masks),
not the parameters every series of a family shares; ``snapshot_bytes`` is its
msgpack checkpoint, ``python_bytes`` the Python objects around them as well.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from msgspec import msgpack

from processors.anomaly import AnomalyOperator, default_detector, read_series, run_backtest
from schemas import MetricBatch, Sample

DEFAULT_DATA = next(
    (up / "shared" / "evals" / "nab" / "data" for up in Path(__file__).resolve().parents if (up / "shared" / "evals" / "nab" / "data").is_dir()),
    Path(__file__).resolve().parents[2] / "shared" / "evals" / "nab" / "data",
)


def best(fn: object, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()  # type: ignore[operator]
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=Path(os.environ.get("NAB_DATA", DEFAULT_DATA)))
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    if not args.data.is_dir():
        raise SystemExit(f"data directory {args.data} not found; pass --data")
    files = sorted(args.data.rglob("*.csv"))
    series = [read_series(p) for p in files]
    rows = sum(len(s[0]) for s in series)
    out: dict[str, object] = {"machine": f"{platform.machine()} {os.cpu_count()} cores, {platform.python_implementation()} {platform.python_version()}"}
    with tempfile.TemporaryDirectory() as tmp:
        t = best(lambda: run_backtest(args.data, Path(tmp) / "r"), args.repeat)
    out["backtest"] = {"files": len(files), "rows": rows, "seconds": round(t, 4), "points_per_s": round(rows / t)}
    t = best(lambda: [default_detector().score_many(v, ts) for _, ts, v in series], args.repeat)
    out["score_only"] = {"rows": rows, "seconds": round(t, 4), "points_per_s": round(rows / t)}
    _, ts, v = max(series, key=lambda s: len(s[0]))
    n = min(len(v), 5000)

    def live() -> None:
        det = default_detector()
        for x, tt in zip(v[:n].tolist(), ts[:n].tolist()):
            det.process_one(x, tt)

    t = best(live, args.repeat)
    out["live"] = {"rows": n, "us_per_point": round(t / n * 1e6, 2), "points_per_s": round(n / t)}
    rng = np.random.default_rng(0)
    names = [f"m{i}.value" for i in range(40)]
    # 2 nodes x 40 series x 1000 points: past every warm-up, so this is the steady-state cost
    batches = [
        MetricBatch("c1", f"n{k % 2}", 1_700_000_000.0 + k, [Sample(nm, float(x)) for nm, x in zip(names, rng.normal(50, 5, 40))])
        for k in range(2000)
    ]

    def operate() -> None:
        op = AnomalyOperator()
        for b in batches:
            op.on_metrics(b, b.ts)

    t = best(operate, args.repeat)
    samples = 40 * len(batches)
    out["operator"] = {"batches": len(batches), "samples": samples, "batches_per_s": round(len(batches) / t), "samples_per_s": round(samples / t)}
    _, ts, v = max(series, key=lambda s: len(s[0]))
    det = default_detector()
    det.score_many(v, ts)
    one_hz = default_detector()
    t1 = 1_767_225_600.0 + np.arange(86_400.0)
    one_hz.score_many(50 + rng.normal(0, 5, len(t1)), t1)
    warming = default_detector()  # the peak: the last point before the rarity bins are fixed (they hold the points so far)
    for x, tt in zip(v[:299].tolist(), ts[:299].tolist()):
        warming.process_one(x, tt)
    out["state"] = {
        "nab_longest_file": state_size(det),
        "one_day_at_1hz": state_size(one_hz),
        "during_bin_warmup_299_points": state_size(warming),
        "nab_files": nab_distribution(series),
    }
    print(json.dumps(out))


def _payload(x: object) -> int:
    if isinstance(x, np.ndarray):
        return int(x.nbytes)
    if isinstance(x, (int, float, bool)) or x is None:
        return 8
    if isinstance(x, dict):
        return sum(_payload(v) for v in x.values())
    if isinstance(x, (list, tuple)):
        return sum(_payload(v) for v in x)
    if hasattr(x, "__dict__") or hasattr(x, "__slots__"):
        names = list(getattr(x, "__dict__", {})) + list(getattr(type(x), "__slots__", ()))
        return sum(_payload(getattr(x, n)) for n in names if not n.startswith("_") and not callable(getattr(x, n)))
    if hasattr(x, "__iter__") and not isinstance(x, (str, bytes)):
        return sum(_payload(v) for v in x)  # deques
    return 0


_OWN = {"TailCalibrator": ("counts", "first", "n", "s_max", "exc_sum", "exc_n"), "RarityDetector": ("visited", "slot_of")}
"""Per-series fields held besides a detector's ``_STATE`` (the calibrator has no ``_STATE``; the rarity tables' visited-bin
mask, an int8 map before, is rebuilt from the table on restore but held)."""


def _own(x: object) -> int:
    """Bytes of what is this series' own (``payload`` counting, parameters left out)."""
    names = tuple(getattr(x, "_STATE", ())) + _OWN.get(type(x).__name__, ())
    if not names:
        if isinstance(x, (list, tuple)) or type(x).__name__ == "deque":
            return sum(_own(v) if hasattr(v, "_STATE") or type(v).__name__ in _OWN else _payload(v) for v in x)  # type: ignore[union-attr]
        return _payload(x)
    total = 0
    held = set(getattr(x, "__dict__", ())) | set(getattr(type(x), "__slots__", ()))
    for n in names:
        if n not in held:  # computed (a property), or an older detector without that field
            continue
        v = getattr(x, n)
        total += _own(v) if hasattr(v, "_STATE") or type(v).__name__ in _OWN or isinstance(v, list) else _payload(v)
    return total


def _python(x: object, seen: set[int] | None = None) -> int:
    seen = set() if seen is None else seen
    if id(x) in seen:
        return 0
    seen.add(id(x))
    size = sys.getsizeof(x)
    if isinstance(x, np.ndarray):
        return size  # getsizeof includes the data of an owning array
    if isinstance(x, dict):
        return size + sum(_python(k, seen) + _python(v, seen) for k, v in x.items())
    if isinstance(x, (list, tuple, set, frozenset)) or type(x).__name__ == "deque":
        return size + sum(_python(v, seen) for v in x)  # type: ignore[union-attr]
    if hasattr(x, "__dict__"):
        return size + _python(vars(x), seen)
    if hasattr(type(x), "__slots__"):
        return size + sum(_python(getattr(x, n), seen) for n in type(x).__slots__ if hasattr(x, n))
    return size


def state_size(det: object) -> dict[str, int]:
    """Bytes of one series' detector state, three ways (see the module docstring)."""
    snap = msgpack.encode(det.snapshot())  # type: ignore[attr-defined]
    return {"payload_bytes": _payload(det), "state_bytes": _own(det), "snapshot_bytes": len(snap), "python_bytes": _python(det)}


def nab_distribution(series: list[tuple[object, np.ndarray, np.ndarray]]) -> dict[str, dict[str, int]]:
    """Per-file state after scoring each series on a fresh detector: min / median / p90 / max, files <= 2 KB."""
    sizes: dict[str, list[int]] = {"payload_bytes": [], "state_bytes": []}
    for _, ts, v in series:
        d = default_detector()
        d.score_many(v, ts)
        sizes["payload_bytes"].append(_payload(d))
        sizes["state_bytes"].append(_own(d))
    return {
        k: {"files": len(a), "min": int(np.min(a)), "median": int(np.median(a)), "p90": int(np.percentile(a, 90)), "max": int(np.max(a)), "files_le_2048": int(np.sum(np.asarray(a) <= 2048))}
        for k, a in sizes.items()
    }


if __name__ == "__main__":
    main()
