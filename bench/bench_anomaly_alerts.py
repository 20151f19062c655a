"""Anomaly alert volume on real producer series: alerts per node-hour, idle and loaded, and a broker outage.

    nice -n 10 python bench/bench_anomaly_alerts.py [--hours 6.5] [--nodes 2] [--record]

Prints one JSON object.

Series. ``bench/data/producer_series.json`` holds what the real producer
collector (``producers.collectors.SystemCollector``, every series it
publishes, at 1 s) recorded on a dev VM: one recording idle, one while
CPU load ran (a busy loop per core). ``--record`` records them again on this machine
(about 2 x ``--record-s`` seconds).

Simulation. Each simulated node replays its recording as a block bootstrap:
30 s blocks, each next one the closest continuation among a few random ones,
with a per-node seed, so the values, their quantisation, spikes and
cross-series correlation are the recorded ones while the sequence is new.
Block joins remain a little rougher than real data, so the figures are, if
anything, pessimistic. The clock starts at 00:50:00 UTC, so the run
crosses every top of the hour of its ``--hours``. Batches go through the
production ``AnomalyOperator`` with its default families, one per second.

Outage. The same nodes again, with a 60 s broker outage two hours in: the
producer spools those 60 batches and replays them, oldest first, when the
broker is back, followed by live data (what ``producers.spool`` does). The
alerts caused by the outage are those of the outage run minus those of the
clean run (same seeds, same data).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from processors.anomaly import AnomalyOperator
from schemas import AlertKind, AlertStatus, MetricBatch, Sample

DATA = Path(__file__).resolve().parent / "data" / "producer_series.json"
T0 = 1_767_228_600.0  # 2026-01-01 00:50:00 UTC
BLOCK_S = 30
OUTAGE_AT_S = 2 * 3600
OUTAGE_S = 60


def record(seconds: int, load: bool) -> dict[str, list[float]]:
    """Run the producer's SystemCollector at 1 Hz for ``seconds``; optionally under CPU load."""
    from producers.collectors import SystemCollector
    from producers.samples import SampleBuffer

    stop = threading.Event()
    hogs: list[threading.Thread] = []
    if load:
        def burn() -> None:
            x = 0
            while not stop.is_set():
                x = (x * 7 + 1) % 1_000_003

        hogs = [threading.Thread(target=burn, daemon=True) for _ in range(os.cpu_count() or 1)]
        for h in hogs:
            h.start()
    col = SystemCollector()
    series: dict[str, list[float]] = {}
    nxt = time.monotonic()
    for i in range(seconds + 1):
        buf = SampleBuffer()
        col.collect(buf)
        if i:  # the first snapshot has no rates yet
            for s in buf.items:
                series.setdefault(s.series(), [float("nan")] * (i - 1)).append(s.value)
            for k, v in series.items():
                if len(v) < i:
                    v.append(float("nan"))
        nxt += 1.0
        time.sleep(max(0.0, nxt - time.monotonic()))
    stop.set()
    return series


def sample(key: str, value: float) -> Sample:
    """A Sample from a recorded series key (``name`` or ``name{k=v,...}``)."""
    if "{" not in key:
        return Sample(key, value)
    name, rest = key.split("{", 1)
    labels = dict(kv.split("=", 1) for kv in rest.rstrip("}").split(","))
    return Sample(name, value, None, labels)


def bootstrap(rec: dict[str, list[float]], seconds: int, seed: int, candidates: int = 24) -> tuple[list[str], np.ndarray]:
    """(series names, values[seconds, series]) from 30 s blocks of the recording.

    Each next block is the one, among ``candidates`` random ones, whose first
    row is closest to the current last row (in units of each series' spread),
    so block joins look like the recording's own steps rather than jumps no
    real node makes.
    """
    names = sorted(rec)
    arr = np.array([rec[n] for n in names], dtype=float).T
    arr = arr[np.isfinite(arr).all(axis=1)] if np.isfinite(arr).all(axis=1).any() else np.nan_to_num(arr)
    spread = np.nanstd(np.diff(arr, axis=0), axis=0) + 1e-9
    rng = np.random.default_rng(seed)
    blocks = [arr[int(rng.integers(0, len(arr) - BLOCK_S)) :][:BLOCK_S]]
    total = BLOCK_S
    while total < seconds:
        starts = rng.integers(0, len(arr) - BLOCK_S, size=candidates)
        last = blocks[-1][-1]
        dist = (np.abs(arr[starts] - last) / spread).sum(axis=1)
        s0 = int(starts[int(np.argmin(dist))])
        blocks.append(arr[s0 : s0 + BLOCK_S])
        total += BLOCK_S
    return names, np.concatenate(blocks)[:seconds]


def run(nodes: list[tuple[str, list[str], np.ndarray]], outage: bool) -> dict[str, Any]:
    """Feed every node's batches through one AnomalyOperator; count firing anomaly alerts."""
    op = AnomalyOperator()
    fired: list[dict[str, Any]] = []
    n = len(nodes[0][2])
    schedule: list[tuple[float, int]] = []  # (arrival time, second index)
    for k in range(n):
        if outage and OUTAGE_AT_S <= k < OUTAGE_AT_S + OUTAGE_S:
            continue
        if outage and k == OUTAGE_AT_S + OUTAGE_S:  # broker back: the spool replays first, 20 batches/s
            for j in range(OUTAGE_S):
                schedule.append((T0 + k + j * 0.05, OUTAGE_AT_S + j))
        schedule.append((T0 + k + (OUTAGE_S * 0.05 if outage and OUTAGE_AT_S + OUTAGE_S <= k < OUTAGE_AT_S + 2 * OUTAGE_S else 0.0) + 0.2, k))
    next_tick = T0 + 60
    for arrival, k in schedule:
        ts = T0 + k
        for node, names, vals in nodes:
            row = vals[k]
            batch = MetricBatch("bench", node, ts, [sample(nm, float(x)) for nm, x in zip(names, row) if np.isfinite(x)])
            for e in op.on_metrics(batch, arrival):
                a = e.message
                if getattr(a, "kind", None) == AlertKind.ANOMALY and a.status == AlertStatus.FIRING:
                    fired.append({"node": node, "series": a.metric, "rule": a.rule, "t_s": round(ts - T0), "score": a.details.get("score")})
        if arrival >= next_tick:
            op.on_tick(arrival)
            next_tick += 60
    return {"fired": fired, "late_skipped": op.stats.extra.get("late_skipped", 0), "series": len(op)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hours", type=float, default=6.5)
    ap.add_argument("--nodes", type=int, default=2, help="nodes per kind (idle, loaded)")
    ap.add_argument("--record", action="store_true", help="record the producer series again on this machine")
    ap.add_argument("--record-s", type=int, default=240)
    args = ap.parse_args()
    if args.record or not DATA.exists():
        rec = {"idle": record(args.record_s, load=False), "loaded": record(args.record_s, load=True), "machine": platform.platform()}
        DATA.parent.mkdir(parents=True, exist_ok=True)
        DATA.write_text(json.dumps(rec))
    rec = json.loads(DATA.read_text())
    seconds = int(args.hours * 3600)
    nodes = []
    for kind in ("idle", "loaded"):
        for i in range(args.nodes):
            names, vals = bootstrap(rec[kind], seconds, seed=17 * i + (0 if kind == "idle" else 1000))
            nodes.append((f"{kind}-{i}", names, vals))
    t0 = time.perf_counter()
    clean = run(nodes, outage=False)
    with_outage = run(nodes, outage=True)
    node_hours = args.hours * args.nodes
    out: dict[str, Any] = {"hours": args.hours, "nodes_per_kind": args.nodes, "series_per_node": {k: len(rec[k]) for k in ("idle", "loaded")}}
    for kind in ("idle", "loaded"):
        f = [a for a in clean["fired"] if a["node"].startswith(kind)]
        out[kind] = {
            "alerts": len(f),
            "alerts_per_node_hour": round(len(f) / node_hours, 4),
            "alerts_per_24_node_hours": round(24 * len(f) / node_hours, 3),
            "examples": f[:8],
        }
    constant = {n for k in ("idle", "loaded") for n, v in rec[k].items() if len({x for x in v if x == x}) == 1}
    out["constant_series"] = len(constant)
    out["constant_series_alerts"] = sum(1 for a in clean["fired"] if a["series"] in constant)
    # caused by the outage: alerts from its start to 10 minutes after it, beyond those the clean run had then
    near = lambda fired: [a for a in fired if OUTAGE_AT_S <= a["t_s"] < OUTAGE_AT_S + OUTAGE_S + 600]  # noqa: E731
    key = lambda a: (a["node"], a["series"], a["t_s"])  # noqa: E731
    base = {key(a) for a in near(clean["fired"])}
    caused = [a for a in near(with_outage["fired"]) if key(a) not in base]
    out["outage"] = {
        "seconds": OUTAGE_S,
        "at_s": OUTAGE_AT_S,
        "alerts_caused": max(0, len(near(with_outage["fired"])) - len(near(clean["fired"]))),
        "alerts_near_outage": len(near(with_outage["fired"])),
        "alerts_near_same_time_clean_run": len(near(clean["fired"])),
        "alerts_whole_run": len(with_outage["fired"]),
        "alerts_whole_clean_run": len(clean["fired"]),
        "late_samples_skipped": with_outage["late_skipped"],
        "examples": caused[:8],
    }
    out["seconds"] = round(time.perf_counter() - t0, 1)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
