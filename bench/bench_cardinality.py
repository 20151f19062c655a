"""Processor operators before, during and after a cardinality flood from one node, in one run.

    python bench/bench_cardinality.py --nodes 50 --ticks 60 --flood 300000

Runs the processor's operators (threshold rules, liveness, windows, anomaly)
in-process on simulated time: ``--ticks`` seconds of a normal fleet (one ~40-sample
snapshot per node per second, operator ticks every 50 ms, a checkpoint snapshot
every 2 s as the runtime takes), then one node sends ``--flood`` distinct metric
names (10,000 per batch) while the fleet goes on, then ``--ticks`` seconds of the
normal fleet again. Prints JSON: CPU ms per simulated second in each phase, the
series each operator holds, and what was refused, evicted and alerted.
"""
from __future__ import annotations

import argparse
import json
import platform
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import msgspec  # noqa: E402

from bench.fleet import snapshot  # noqa: E402
from processors import AnomalyOperator, LivenessOperator, ThresholdRules, TumblingWindows  # noqa: E402
from processors.rules import default_rules  # noqa: E402
from schemas import MetricBatch, Sample  # noqa: E402


def _ops() -> list:
    return [ThresholdRules(default_rules()), LivenessOperator(), TumblingWindows(closes_per_tick=24), AnomalyOperator()]


_next_tick: dict[str, float] = {}


def _second(ops: list, batches: list[MetricBatch], now: float, out: list) -> None:
    for b in batches:
        for op in ops:
            out.extend(op.on_metrics(b, now))
    for k in range(20):  # the runtime's 50 ms loop; each operator ticks at its own tick_interval_s
        t = now + k * 0.05
        for op in ops:
            if t >= _next_tick.get(op.name, 0.0):
                _next_tick[op.name] = t + op.tick_interval_s
                out.extend(op.on_tick(t))


def _phase(ops: list, nodes: int, t0: float, ticks: int, rng: random.Random, out: list, extra: list[list[MetricBatch]] | None = None) -> float:
    """CPU ms per simulated second."""
    cpu = time.process_time()
    for i in range(ticks):
        now = t0 + i
        batches = [snapshot("c1", f"n{j:03d}", now, rng) for j in range(nodes)]
        if extra is not None and i < len(extra):
            batches += extra[i]
        _second(ops, batches, now, out)
        if i % 2 == 0:  # checkpoint: every operator's state is encoded
            msgspec.msgpack.encode({op.name: op.snapshot() for op in ops})
    return (time.process_time() - cpu) * 1000.0 / ticks


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--nodes", type=int, default=50)
    ap.add_argument("--ticks", type=int, default=60, help="simulated seconds before and after the flood")
    ap.add_argument("--flood", type=int, default=300_000, help="distinct metric names from one node")
    args = ap.parse_args()
    rng = random.Random(1)
    ops = _ops()
    out: list = []
    t0 = float(int(time.time()) - 3 * args.ticks - 600)
    before = _phase(ops, args.nodes, t0, args.ticks, rng, out)
    per_batch = 10_000
    flood = [
        [MetricBatch("c1", "flooder", t0 + args.ticks + k, [Sample(f"junk.m{k * per_batch + i:07d}", 1.0) for i in range(per_batch)])]
        for k in range(args.flood // per_batch)
    ]
    during = _phase(ops, args.nodes, t0 + args.ticks, len(flood), rng, out, flood)
    after = _phase(ops, args.nodes, t0 + args.ticks + len(flood), args.ticks, rng, out)
    alerts = [e.subject for e in out if e.subject.startswith("sw.alerts.") and "cardinality_limit" in e.subject]
    result = {
        "machine": f"{platform.machine()} {platform.python_implementation()} {platform.python_version()}, 2-core shared dev VM (loaded by parallel work)",
        "nodes": args.nodes,
        "flood_names": args.flood,
        "cpu_ms_per_s": {"before": round(before, 1), "during": round(during, 1), "after": round(after, 1)},
        "after_over_before": round(after / before, 2),
        "series_held": {
            "anomaly": len(ops[3]),
            "windows_flooder": len(ops[2]._nodes[("c1", "flooder")].meta) if ("c1", "flooder") in ops[2]._nodes else 0,
        },
        "stats": {op.name: dict(op.stats.extra) for op in ops},
        "cardinality_alerts": len(alerts),
    }
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
