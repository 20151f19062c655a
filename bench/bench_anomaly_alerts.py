"""Anomaly alert volume on real producer series: alerts per node-hour, idle, loaded and busy, and a broker outage.

    nice -n 10 python bench/bench_anomaly_alerts.py [--hours 6.5] [--nodes 2] [--kinds idle,loaded,busy] [--record]

Prints one JSON object.

Series. ``bench/data/producer_series.json`` holds what the real producer
collector (``producers.collectors.SystemCollector``, every series it
publishes, at 1 s) recorded, one recording per scenario, and under
``recordings`` where, when and how each was made:

* ``idle``: a genuinely idle node (a quiet VM, nothing else running);
* ``loaded``: a busy loop per core (our own CPU load);
* ``busy``: a shared dev VM running other people's work at ~100 % CPU with
  disk bursts (no load of our own): a stress case, not an idle node.

``--record`` records ``idle`` and ``loaded`` again on this machine (about
2 x ``--record-s`` seconds) and keeps ``busy``.

Simulation. Each simulated node replays its recording as a block bootstrap:
30 s blocks, each next one the closest continuation among a few random ones,
with a per-node seed, so the values, their quantisation, spikes and
cross-series correlation are the recorded ones while the sequence is new.
A series the producer did not publish in a second (``disk.read_latency_ms``
without reads) is absent then, as live. Block joins remain a little rougher
than real data, so the figures are, if anything, pessimistic. The clock
starts at 00:50:00 UTC, so the run crosses every top of the hour of its
``--hours``. Batches go through the production ``AnomalyOperator`` with its
default families, one per second. ``alerts`` counts firing anomaly alerts,
what a person receives; ``by_series`` says which series they were about.

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
KINDS = ("idle", "loaded", "busy")
SEED_BASE = {"idle": 0, "loaded": 1000, "busy": 2000}


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
    arr = np.array([rec[n] for n in names], dtype=float).T  # NaN: the producer did not publish it that second
    with np.errstate(invalid="ignore"):
        spread = np.nan_to_num(np.nanstd(np.diff(arr, axis=0), axis=0)) + 1e-9
    rng = np.random.default_rng(seed)
    blocks = [arr[int(rng.integers(0, len(arr) - BLOCK_S)) :][:BLOCK_S]]
    total = BLOCK_S
    while total < seconds:
        starts = rng.integers(0, len(arr) - BLOCK_S, size=candidates)
        last = blocks[-1][-1]
        dist = np.nansum(np.abs(arr[starts] - last) / spread, axis=1)
        s0 = int(starts[int(np.argmin(dist))])
        blocks.append(arr[s0 : s0 + BLOCK_S])
        total += BLOCK_S
    return names, np.concatenate(blocks)[:seconds]


def run(nodes: list[tuple[str, list[str], np.ndarray]], outage: bool, node_budget: bool = True) -> dict[str, Any]:
    """Feed every node's batches through one AnomalyOperator; count firing anomaly alerts."""
    op = AnomalyOperator(node_budget=node_budget)
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


def record_all(seconds: int, previous: dict[str, Any] | None) -> dict[str, Any]:
    """Record ``idle`` and ``loaded`` on this machine; keep the other recordings and their provenance."""
    rec: dict[str, Any] = dict(previous or {})
    prov: dict[str, Any] = dict(rec.get("recordings", {}))
    for kind, load in (("idle", False), ("loaded", True)):
        at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        rec[kind] = record(seconds, load=load)
        prov[kind] = {
            "machine": platform.platform(),
            "recorded_at": at,
            "seconds": seconds,
            "note": "bench_anomaly_alerts.py --record" + (", a busy loop per core" if load else ", no load of our own (is the machine otherwise quiet?)"),
        }
    rec["recordings"] = prov
    return rec


def summary(fired: list[dict[str, Any]], node_hours: float) -> dict[str, Any]:
    """Alerts, their rate, and which series they were about."""
    by_series: dict[str, int] = {}
    for a in fired:
        by_series[a["series"]] = by_series.get(a["series"], 0) + 1
    return {
        "alerts": len(fired),
        "alerts_per_node_hour": round(len(fired) / node_hours, 4),
        "alerts_per_24_node_hours": round(24 * len(fired) / node_hours, 3),
        "by_series": dict(sorted(by_series.items(), key=lambda kv: -kv[1])),
        "examples": fired[:8],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hours", type=float, default=6.5)
    ap.add_argument("--nodes", type=int, default=2, help="nodes per kind")
    ap.add_argument("--kinds", default=",".join(KINDS), help=f"recordings to simulate, comma-separated (of {', '.join(KINDS)})")
    ap.add_argument("--no-outage", action="store_true", help="skip the broker-outage run (halves the time)")
    ap.add_argument("--per-series", action="store_true", help="every series pages on its own tail (AnomalyOperator(node_budget=False))")
    ap.add_argument("--record", action="store_true", help="record the idle and loaded producer series again on this machine")
    ap.add_argument("--record-s", type=int, default=900)
    args = ap.parse_args()
    if args.record or not DATA.exists():
        rec = record_all(args.record_s, json.loads(DATA.read_text()) if DATA.exists() else None)
        DATA.parent.mkdir(parents=True, exist_ok=True)
        DATA.write_text(json.dumps(rec))
    rec = json.loads(DATA.read_text())
    kinds = [k for k in args.kinds.split(",") if k]
    missing = [k for k in kinds if k not in rec]
    if missing:
        raise SystemExit(f"no recording for {missing}; {DATA} has {[k for k in KINDS if k in rec]}")
    seconds = int(args.hours * 3600)
    nodes = []
    for kind in kinds:
        for i in range(args.nodes):
            names, vals = bootstrap(rec[kind], seconds, seed=17 * i + SEED_BASE.get(kind, 3000))
            nodes.append((f"{kind}-{i}", names, vals))
    t0 = time.perf_counter()
    clean = run(nodes, outage=False, node_budget=not args.per_series)
    node_hours = args.hours * args.nodes
    out: dict[str, Any] = {
        "hours": args.hours,
        "nodes_per_kind": args.nodes,
        "node_budget": not args.per_series,
        "recordings": {k: {**rec.get("recordings", {}).get(k, {}), "series": len(rec[k]), "seconds_recorded": max(len(v) for v in rec[k].values())} for k in kinds},
    }
    for kind in kinds:
        out[kind] = summary([a for a in clean["fired"] if a["node"].rsplit("-", 1)[0] == kind], node_hours)
    # constant in its own recording (net.* is all zeros idle, not on the busy VM)
    constant = {(k, n) for k in kinds for n, v in rec[k].items() if len({x for x in v if x == x}) == 1}
    out["constant_series"] = {k: sorted(n for kk, n in constant if kk == k) for k in kinds}
    out["constant_series_alerts"] = sum(1 for a in clean["fired"] if (a["node"].rsplit("-", 1)[0], a["series"]) in constant)
    if not args.no_outage:
        with_outage = run(nodes, outage=True, node_budget=not args.per_series)
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
