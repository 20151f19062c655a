"""Replay throughput: rules + windows over a fleet's past, from memory, the Parquet store and JetStream.

Prints JSON. Goals (issue 13): one hour of a 1,000-node fleet (3.6 M batches)
through rules and windows at >= 30x real time on one core; a what-if over
24 h of 100 nodes in < 2 minutes. The full sizes do not fit a shared 2-core
dev VM, so each part runs a scaled-down range and extrapolates linearly
(replay cost is per batch: state is per node and bounded, so the rate does
not fall with the length of the range)::

    python bench/bench_replay.py --nodes 1000 --seconds 60 --what-if-nodes 100 --what-if-seconds 600
"""
from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.fleet import snapshot  # noqa: E402
from schemas import encode, subjects  # noqa: E402

HOUR_BATCHES = 3_600_000  # one hour of 1,000 nodes at 1 Hz
DAY_100_BATCHES = 8_640_000  # 24 h of 100 nodes at 1 Hz


def fleet_messages(nodes: int, seconds: int, t0: float, seed: int = 7) -> list[tuple[str, bytes]]:
    """``seconds`` of ``nodes`` publishing a ~40-sample snapshot each second; a few nodes run hot."""
    rng = random.Random(seed)
    out: list[tuple[str, bytes]] = []
    subj = [subjects.metrics("bench", f"n{i:04d}") for i in range(nodes)]
    for s in range(seconds):
        for i in range(nodes):
            hot = i % 50 == 0 and (s // 30) % 2 == 1  # 2 % of nodes cross the CPU rules every other 30 s
            b = snapshot("bench", f"n{i:04d}", t0 + s, rng, seq=s, cpu=97.0 if hot else None)
            out.append((subj[i], encode(b)))
    return out


def operators(which: str) -> list[Any]:
    from swarmwatch.config import Config
    from swarmwatch.pipeline import build_operators

    return build_operators(Config.model_validate({"processor": {"operators": which}}))


def run_memory(msgs: list[tuple[str, bytes]], seconds: int, which: str) -> dict[str, Any]:
    from swarmwatch.replay import replay

    c0 = time.process_time()
    res = replay(msgs, operators(which))
    cpu = time.process_time() - c0
    rate = res.items / cpu
    return {
        "batches": res.items,
        "event_s": seconds,
        "wall_s": round(res.seconds, 2),
        "cpu_s": round(cpu, 2),
        "batches_per_cpu_s": round(rate),
        "x_real_time_per_core": round(seconds / cpu, 1),
        "alerts": len(res.alerts),
        "aggregates": res.outputs.get("agg", 0),
    }


def write_store(root: Path, msgs: list[tuple[str, bytes]]) -> None:
    from sinks.rows import message_rows, utc_date
    from sinks.segments import get_format, partition_dir, segment_name, write_atomic

    f = get_format("parquet")
    chunk = 20_000  # messages per segment, like a busy sink's flush
    for k in range(0, len(msgs), chunk):
        parts: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
        for seq, (subj, data) in enumerate(msgs[k : k + chunk], k + 1):
            kind, ts, cluster, rows = message_rows(subj, data, seq)
            parts.setdefault((kind, utc_date(ts), cluster), []).extend(rows)
        for (kind, date, cluster), rows in parts.items():
            path = partition_dir(root, "parquet", kind, date, cluster) / segment_name(kind, rows[0]["_seq"], rows[-1]["_seq"], f.ext)
            write_atomic(path, lambda fh, kind=kind, rows=rows: f.write(fh, kind, rows))


def run_store(msgs: list[tuple[str, bytes]], seconds: int, t0: float, which: str) -> dict[str, Any]:
    from swarmwatch.replay import metrics_wanted, replay, store_items

    with tempfile.TemporaryDirectory() as d:
        write_store(Path(d), msgs)
        c0, w0 = time.process_time(), time.perf_counter()
        ops = operators(which)
        res = replay(store_items(d, t0, t0 + seconds, metrics=metrics_wanted(ops)), ops, since=t0, until=t0 + seconds)
        cpu, wall = time.process_time() - c0, time.perf_counter() - w0
    return {
        "batches": res.items,
        "event_s": seconds,
        "wall_s": round(wall, 2),
        "cpu_s": round(cpu, 2),
        "batches_per_cpu_s": round(res.items / cpu),
        "x_real_time_per_core": round(seconds / cpu, 1),
        "alerts": len(res.alerts),
    }


async def run_jetstream(msgs: list[tuple[str, bytes]], seconds: int, t0: float, which: str) -> dict[str, Any]:
    import nats

    from swarmwatch.replay import replay_stream
    from swarmwatch.server import EmbeddedServer
    from swarmwatch.streams import ensure_streams

    with tempfile.TemporaryDirectory() as d:
        srv = EmbeddedServer(Path(d) / "nats", port=0)
        srv.start()
        try:
            nc = await nats.connect(srv.url)
            js = nc.jetstream()
            await ensure_streams(js)
            pend = []
            for subj, data in msgs:
                pend.append(await js.publish_async(subj, data))
                if len(pend) >= 4000:
                    await asyncio.gather(*pend)
                    pend = []
            await asyncio.gather(*pend)
            c0 = time.process_time()
            res = await replay_stream(nc, operators(which), t0, t0 + seconds)
            cpu = time.process_time() - c0
            await nc.close()
        finally:
            srv.stop()
    return {
        "batches": res.items,
        "event_s": seconds,
        "wall_s": round(res.seconds, 2),
        "cpu_s": round(cpu, 2),
        "batches_per_cpu_s": round(res.items / cpu),
        "x_real_time_per_core": round(seconds / cpu, 1),
        "x_real_time_wall": round(seconds / res.seconds, 1),
        "alerts": len(res.alerts),
        "note": "cpu_s is the replaying process only; the nats-server runs on the same two cores",
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nodes", type=int, default=1000)
    ap.add_argument("--seconds", type=int, default=60, help="event seconds of the 1,000-node fleet to replay")
    ap.add_argument("--what-if-nodes", type=int, default=100)
    ap.add_argument("--what-if-seconds", type=int, default=600)
    ap.add_argument("--jetstream", action="store_true", help="also replay the fleet range from a local nats-server")
    a = ap.parse_args(argv)
    t0 = float(int(time.time()) - 2 * 86400)
    out: dict[str, Any] = {"machine": "2-core shared dev VM, loaded by parallel work; one core used by the replay"}

    msgs = fleet_messages(a.nodes, a.seconds, t0)
    hour = run_memory(msgs, a.seconds, "rules,windows")
    hour["extrapolated_full_hour_cpu_s"] = round(HOUR_BATCHES / hour["batches_per_cpu_s"], 1)
    hour["extrapolated_x_real_time"] = round(3600 / hour["extrapolated_full_hour_cpu_s"], 1)
    hour["goal"] = ">= 30x real time"
    out["fleet_1000_rules_windows_memory"] = hour
    del msgs
    if a.jetstream:  # stamped just now: the stream is read by stored time, which must be near event time
        tj = time.time() - a.seconds - 5
        out["fleet_1000_rules_windows_jetstream"] = asyncio.run(run_jetstream(fleet_messages(a.nodes, a.seconds, tj), a.seconds, tj, "rules,windows"))

    wmsgs = fleet_messages(a.what_if_nodes, a.what_if_seconds, t0, seed=11)
    whatif = run_store(wmsgs, a.what_if_seconds, t0, "rules")
    whatif["extrapolated_24h_cpu_s"] = round(DAY_100_BATCHES / whatif["batches_per_cpu_s"], 1)
    whatif["goal"] = "< 120 s for 24 h of 100 nodes"
    out["what_if_100_nodes_rules_store"] = whatif
    wmem = run_memory(wmsgs, a.what_if_seconds, "rules")
    wmem["extrapolated_24h_cpu_s"] = round(DAY_100_BATCHES / wmem["batches_per_cpu_s"], 1)
    out["what_if_100_nodes_rules_memory"] = wmem
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
