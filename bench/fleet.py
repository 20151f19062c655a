"""Synthetic fleet snapshots for benchmarks: ~40 metrics per node, like the producer's (~1.5 KB)."""
from __future__ import annotations

import random

from schemas import MetricBatch, Sample

CORES = 4


def snapshot(cluster: str, node: str, ts: float, rng: random.Random, seq: int = 0, cpu: float | None = None) -> MetricBatch:
    """One node's snapshot at ``ts``; ``cpu`` forces the total CPU value (e.g. to cross a threshold)."""
    s = [Sample("cpu.percent", cpu if cpu is not None else rng.uniform(5, 60), unit="%")]
    s += [Sample("cpu.percent", rng.uniform(0, 100), unit="%", labels={"core": str(c)}) for c in range(CORES)]
    s += [
        Sample("load.1m", rng.uniform(0, 4)),
        Sample("load.5m", rng.uniform(0, 4)),
        Sample("load.15m", rng.uniform(0, 4)),
        Sample("cpu.freq_mhz", rng.uniform(2000, 3500)),
        Sample("mem.percent", rng.uniform(20, 70), unit="%"),
        Sample("mem.available_bytes", rng.uniform(1e9, 8e9), unit="B"),
        Sample("swap.percent", rng.uniform(0, 5), unit="%"),
        Sample("disk.percent", rng.uniform(10, 80), unit="%", labels={"mount": "/"}),
        Sample("disk.percent", rng.uniform(10, 80), unit="%", labels={"mount": "/data"}),
        Sample("disk.read_ops_per_s", rng.uniform(0, 500)),
        Sample("disk.write_ops_per_s", rng.uniform(0, 500)),
        Sample("disk.read_bytes_per_s", rng.uniform(0, 5e7)),
        Sample("disk.write_bytes_per_s", rng.uniform(0, 5e7)),
        Sample("disk.busy_percent", rng.uniform(0, 50)),
        Sample("net.bytes_sent_per_s", rng.uniform(0, 1e7)),
        Sample("net.bytes_recv_per_s", rng.uniform(0, 1e7)),
        Sample("net.packets_sent_per_s", rng.uniform(0, 1e4)),
        Sample("net.packets_recv_per_s", rng.uniform(0, 1e4)),
        Sample("net.errors_in_per_s", 0.0),
        Sample("net.errors_out_per_s", 0.0),
        Sample("net.drops_in_per_s", 0.0),
        Sample("net.drops_out_per_s", 0.0),
        Sample("net.connections", float(rng.randint(10, 300))),
        Sample("proc.count", float(rng.randint(100, 400))),
        Sample("gpu.utilization_percent", rng.uniform(0, 100), labels={"gpu": "0"}),
        Sample("gpu.memory_used_bytes", rng.uniform(1e9, 7e10), labels={"gpu": "0"}),
        Sample("gpu.memory_total_bytes", 8e10, labels={"gpu": "0"}),
        Sample("gpu.temperature_c", rng.uniform(30, 80), labels={"gpu": "0"}),
        Sample("gpu.power_w", rng.uniform(50, 700), labels={"gpu": "0"}),
        Sample("app.latency_ms", rng.uniform(5, 500)),
        Sample("app.errors", float(rng.randint(0, 3))),
        Sample("app.requests_per_s", rng.uniform(10, 1000)),
        Sample("uptime_s", 123456.0 + ts % 1000),
    ]
    return MetricBatch(cluster, node, ts, s, seq=seq)
