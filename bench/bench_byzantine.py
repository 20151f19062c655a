"""Byzantine detector throughput: time to judge one round of N nodes (default 1,000). Prints JSON.

    python bench/bench_byzantine.py [--nodes 1000] [--rounds 40] [--warmup 40]

``judge_ms``: ClusterDetector.close for a round whose reports are buffered
(the statistics, window tests, drift/collusion tests and verdicts).
``checkpoint_bytes``: the detector's snapshot after the run, msgpack-encoded as the runtime
stores it.
``operator_ms``: the whole operator path for a round: N Event payloads parsed
and buffered, the round judged, N TrustScores and any alerts built.
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import msgspec
import numpy as np

from schemas import Event

from processors.byzantine import ByzantineOperator, ClusterDetector
from processors.byzantine.fleet import SyntheticFleet

T0 = 1_763_800_000.0


def _pct(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(q * len(s)))]


def bench_detector(nodes: int, rounds: int, warmup: int, state: dict | None = None) -> list[float]:
    fleet = SyntheticFleet(nodes=nodes, attackers=nodes // 10, attack="alie", start=warmup // 2, seed=1)
    det = ClusterDetector()
    times = []
    for r in range(warmup + rounds):
        for rep in fleet.round(r):
            det.add(rep.node, r, rep.update_norm, rep.loss, rep.sketch, T0 + 30 * r)
        t = time.perf_counter()
        det.close(r)
        if r >= warmup:
            times.append((time.perf_counter() - t) * 1e3)
    if state is not None:  # the checkpoint as the runtime stores it (msgpack of the snapshot)
        state["checkpoint_bytes"] = len(msgspec.msgpack.encode(det.snapshot()))
    return times


def bench_operator(nodes: int, rounds: int, warmup: int) -> tuple[list[float], int]:
    fleet = SyntheticFleet(nodes=nodes, attackers=nodes // 10, attack="sign_flip", start=warmup // 2, seed=2)
    op = ByzantineOperator()
    batches = []
    for r in range(warmup + rounds + 1):
        batches.append(
            [
                Event(
                    cluster="bench",
                    node=rep.node,
                    ts=T0 + 30 * r,
                    kind="training.update",
                    payload={"round": r, "update_norm": rep.update_norm, "loss": rep.loss, "sketch": rep.sketch.tolist()},
                )
                for rep in fleet.round(r)
            ]
        )
    times, emitted = [], 0
    for r, events in enumerate(batches):
        t = time.perf_counter()
        n_out = 0
        for ev in events:  # the first report of round r closes round r-1
            n_out += len(list(op.on_event(ev, ev.ts)))
        if r > warmup:
            times.append((time.perf_counter() - t) * 1e3)
            emitted += n_out
    return times, emitted


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nodes", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=40)
    ap.add_argument("--warmup", type=int, default=40)
    a = ap.parse_args()
    state: dict = {}
    judge = bench_detector(a.nodes, a.rounds, a.warmup, state)
    full, emitted = bench_operator(a.nodes, a.rounds, a.warmup)
    print(
        json.dumps(
            {
                "bench": "byzantine",
                "nodes_per_round": a.nodes,
                "sketch_dim": 64,
                "rounds_timed": a.rounds,
                "judge_ms_median": round(statistics.median(judge), 2),
                "judge_ms_p95": round(_pct(judge, 0.95), 2),
                "operator_ms_per_round_median": round(statistics.median(full), 2),
                "operator_ms_per_round_p95": round(_pct(full, 0.95), 2),
                "emits_per_round": round(emitted / max(1, len(full)), 1),
                "checkpoint_bytes": state["checkpoint_bytes"],
                "checkpoint_mb_per_1000_nodes": round(state["checkpoint_bytes"] / 1e6 * 1000 / a.nodes, 3),
                "python": platform.python_version(),
                "numpy": np.__version__,
            }
        )
    )


if __name__ == "__main__":
    main()
