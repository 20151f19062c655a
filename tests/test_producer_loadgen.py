"""The load generator publishes decodable snapshots for N simulated nodes and counts acks."""
from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import nats

from schemas.codec import decode_batch
from swarmwatch.server import EmbeddedServer

LOADGEN = Path(__file__).resolve().parent.parent / "bench" / "loadgen.py"


def _loadgen() -> ModuleType:
    spec = importlib.util.spec_from_file_location("swarmwatch_bench_loadgen", LOADGEN)
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


async def test_loadgen_publishes_every_node_every_tick_and_counts_acks(nats_server: EmbeddedServer) -> None:
    lg = _loadgen()
    result = await lg.run_loadgen(nats_server.url, nodes=5, interval_s=0.2, duration_s=1.0, hot_nodes=1,
                                  ensure_stream=True)
    assert result["ticks"] == 5
    assert result["attempted"] == 25
    assert result["sent"] == 25 and result["failed"] == 0
    assert result["metrics_per_node"] >= 35
    nc = await nats.connect(nats_server.url)
    try:
        js = nc.jetstream()
        info = await js.stream_info("TELEMETRY")
        assert info.state.messages == 25
        batches = [decode_batch((await js.get_msg("TELEMETRY", s)).data) for s in range(1, 26)]
    finally:
        await nc.close()
    assert {b.node for b in batches} == {f"sim-{i}" for i in range(5)}
    hot = [s.value for b in batches if b.node == "sim-0" for s in b.samples if s.series() == "cpu.percent"]
    assert hot and min(hot) > 95.0  # the hot node runs at ~97 % CPU


def test_loadgen_script_prints_json() -> None:
    r = subprocess.run(
        [sys.executable, str(LOADGEN), "--embedded", "--nodes", "3", "--interval", "100ms", "--duration", "0.5"],
        capture_output=True, text=True, timeout=60, check=True,
    )
    out = json.loads(r.stdout)
    assert out["sent"] == 15 and out["failed"] == 0 and out["achieved_rate_per_s"] > 0
