"""Processor operators before, during and after a cardinality flood from one node, in one run.

    python bench/bench_cardinality.py --nodes 50 --ticks 60 --flood 300000

Runs the processor's operators (threshold rules, liveness, windows, anomaly)
in-process on simulated time, twice with the same data: a control fleet, and
the same fleet where one node sends ``--flood`` distinct metric names (10,000
per batch). Phases: ``--warm`` seconds of warm-up, ``--ticks`` seconds "before",
the flood (or the same seconds without it), ``--ticks`` "after", ``--settle``
seconds, ``--ticks`` "later". One ~40-sample snapshot per node per second,
each operator ticked at its own interval, a checkpoint snapshot every 2 s as
the runtime takes. Prints JSON: CPU ms per simulated second per phase, the
flooded/control ratio per phase, the series each operator holds, and what was
refused, evicted and alerted.
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


def _run(nodes: int, ticks: int, flood_names: int, warm: int, settle: int) -> dict:
    """One fleet through warm-up, before, flood (or the same seconds without it), after, settle, later."""
    rng = random.Random(1)
    _next_tick.clear()
    ops = _ops()
    out: list = []
    t = float(int(time.time()) - warm - 2 * ticks - settle - flood_names // 10_000 - ticks - 600)
    _phase(ops, nodes, t, warm, rng, out)
    t += warm
    cpu = {"before": _phase(ops, nodes, t, ticks, rng, out)}
    t += ticks
    per_batch = 10_000
    n = max(1, flood_names // per_batch)
    flood = [
        [MetricBatch("c1", "flooder", t + k, [Sample(f"junk.m{k * per_batch + i:07d}", 1.0) for i in range(per_batch)])]
        for k in range(n)
    ] if flood_names else None
    cpu["during"] = _phase(ops, nodes, t, n, rng, out, flood)
    t += n
    cpu["after"] = _phase(ops, nodes, t, ticks, rng, out)
    t += ticks
    _phase(ops, nodes, t, settle, rng, out)
    t += settle
    cpu["later"] = _phase(ops, nodes, t, ticks, rng, out)
    alerts = [e.subject for e in out if e.subject.startswith("sw.alerts.") and "cardinality_limit" in e.subject]
    return {
        "cpu_ms_per_s": {k: round(v, 1) for k, v in cpu.items()},
        "series_held": {
            "anomaly": len(ops[3]),
            "windows_flooder": len(ops[2]._nodes[("c1", "flooder")].meta) if ("c1", "flooder") in ops[2]._nodes else 0,
        },
        "stats": {op.name: dict(op.stats.extra) for op in ops},
        "cardinality_alerts": len(alerts),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--nodes", type=int, default=50)
    ap.add_argument("--ticks", type=int, default=60, help="simulated seconds measured before, after and later")
    ap.add_argument("--flood", type=int, default=300_000, help="distinct metric names from one node")
    ap.add_argument("--warm", type=int, default=300, help="simulated seconds of warm-up before measuring")
    ap.add_argument("--settle", type=int, default=360, help="simulated seconds between 'after' and 'later'")
    args = ap.parse_args()
    control = _run(args.nodes, args.ticks, 0, args.warm, args.settle)
    flooded = _run(args.nodes, args.ticks, args.flood, args.warm, args.settle)
    c, f = control["cpu_ms_per_s"], flooded["cpu_ms_per_s"]
    print(json.dumps({
        "machine": f"{platform.machine()} {platform.python_implementation()} {platform.python_version()}, 2-core shared dev VM (loaded by parallel work)",
        "nodes": args.nodes,
        "flood_names": args.flood,
        "flooded_over_control": {k: round(f[k] / c[k], 2) for k in c},
        "control": control,
        "flooded": flooded,
    }, indent=1))


if __name__ == "__main__":
    main()
