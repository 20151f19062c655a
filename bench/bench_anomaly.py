"""Anomaly detection speed: backtest points/s (read, score, write) and live per-point cost.

    python bench/bench_anomaly.py [--data DIR] [--repeat 3]

Prints one JSON object. ``backtest`` runs ``run_backtest`` (the CLI's code)
over every CSV under DATA (default: the NAB set in shared/evals) on one core;
``score_only`` is the detector alone on the already-parsed arrays; ``live``
feeds one series row by row through ``process_one`` as the operator does;
``operator`` pushes MetricBatches of 40 samples through AnomalyOperator
(steady state: every series past its warm-up).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

from processors.anomaly import AnomalyOperator, default_detector, read_series, run_backtest
from schemas import MetricBatch, Sample

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "evals" / "nab" / "data"


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
    print(json.dumps(out))


if __name__ == "__main__":
    main()
