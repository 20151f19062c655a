"""Overhead of a real ``swarmwatch produce`` process: CPU % of one core and RSS, printed as JSON.

Starts a local nats-server with the TELEMETRY stream, runs the producer as a
subprocess at a 1 s interval, skips a warm-up, then measures the child's CPU
time over wall time and its RSS with psutil. Also reports the import time of
the produce path (``python -X importtime``) and checks that batches were stored.

    python bench/bench_producer.py --duration 60
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

from swarmwatch.server import EmbeddedServer


def producer_command(url: str, interval: str, edge_hz: float = 10.0) -> list[str]:
    exe = Path(sys.executable).parent / "swarmwatch"
    base = [str(exe)] if exe.exists() else [sys.executable, "-c", "from swarmwatch.cli import main; main()"]
    return base + ["produce", "--nats", url, "--cluster", "bench", "--node", "bench-node", "--interval", interval,
                   "--log-level", "warning", "--edge-hz", str(edge_hz)]


HEAVY = ("pydantic", "numpy", "pyarrow", "fastapi", "rich", "uvicorn", "starlette", "typer", "yaml", "pynvml")


def _profile(code: str) -> dict[str, object]:
    """``python -X importtime -c code``: cumulative ms, the biggest top-level imports, heavy packages loaded."""
    r = subprocess.run([sys.executable, "-X", "importtime", "-c", code], capture_output=True, text=True, check=True)
    top: list[tuple[str, float]] = []
    heavy: set[str] = set()
    for line in r.stderr.splitlines():
        m = re.match(r"import time:\s+(\d+) \|\s+(\d+) \|( *)(\S+)", line)
        if not m:
            continue
        root = m.group(4).split(".")[0]
        if root in HEAVY:
            heavy.add(root)
        if len(m.group(3)) == 1:  # top-level import
            top.append((m.group(4), int(m.group(2)) / 1000.0))
    top.sort(key=lambda t: -t[1])
    walls = []
    for _ in range(3):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], check=True)
        walls.append((time.perf_counter() - t0) * 1000.0)
    return {
        "code": code,
        "importtime_cumulative_ms": round(sum(ms for _, ms in top), 1),
        "process_wall_ms_median": round(sorted(walls)[1], 1),
        "top": [{"module": n, "ms": round(ms, 1)} for n, ms in top[:5]],
        "heavy_imported": sorted(heavy),
    }


def import_profile() -> dict[str, object]:
    """The two phases of ``swarmwatch produce``: the CLI (checks options, then exec) and the sidecar it becomes."""
    return {
        "cli_phase": _profile("import swarmwatch.cli"),
        "sidecar_process": _profile("import producers, producers.sidecar"),
    }


async def stored_batches(url: str) -> int:
    import nats

    nc = await nats.connect(url)
    try:
        info = await nc.jetstream().stream_info("TELEMETRY")
        return int(info.state.messages)
    finally:
        await nc.close()


async def make_stream(url: str, watch: bool = True) -> int:
    """The streams, and (``watch``) the default rules' thresholds in sw_watch, as a processor publishes them."""
    import nats

    nc = await nats.connect(url)
    try:
        from swarmwatch.streams import ensure_streams

        await ensure_streams(nc.jetstream())
        if not watch:
            return 0
        from processors import ThresholdRules
        from swarmwatch.pipeline import export_watches

        return await export_watches(nc, [ThresholdRules()], "bench")
    finally:
        await nc.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--duration", type=float, default=60.0, help="measured seconds (after warm-up)")
    ap.add_argument("--warmup", type=float, default=5.0, help="seconds skipped after start")
    ap.add_argument("--interval", default="1s")
    ap.add_argument("--edge-hz", type=float, default=10.0, help="edge sampling rate of watched thresholds (0: off)")
    ap.add_argument("--no-watch", action="store_true", help="publish no watched thresholds (fast sampling idle)")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as d, EmbeddedServer(Path(d) / "nats", port=0) as srv:
        watches = asyncio.run(make_stream(srv.url, not args.no_watch))
        proc = subprocess.Popen(producer_command(srv.url, args.interval, args.edge_hz), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            p = psutil.Process(proc.pid)
            time.sleep(args.warmup)
            if proc.poll() is not None:
                raise SystemExit(f"producer exited early: {proc.stderr.read().decode() if proc.stderr else ''}")
            c0, w0 = p.cpu_times(), time.monotonic()
            rss_max = 0
            end = w0 + args.duration
            while time.monotonic() < end:
                rss_max = max(rss_max, p.memory_info().rss)
                time.sleep(1.0)
            c1, w1 = p.cpu_times(), time.monotonic()
            rss_end = p.memory_info().rss
            uss = p.memory_full_info().uss
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
        stored = asyncio.run(stored_batches(srv.url))
    cpu_s = (c1.user + c1.system) - (c0.user + c0.system)
    print(json.dumps({
        "bench": "producer_overhead",
        "command": " ".join(["swarmwatch", "produce", "--interval", args.interval]),
        "interval": args.interval,
        "edge_hz": args.edge_hz,
        "watched_thresholds": watches,  # the default rules: cpu.percent and mem.percent are sampled fast
        "measured_s": round(w1 - w0, 1),
        "cpu_percent_of_one_core": round(100.0 * cpu_s / (w1 - w0), 3),
        "rss_mb_end": round(rss_end / 2**20, 1),
        "rss_mb_max": round(rss_max / 2**20, 1),
        "uss_mb": round(uss / 2**20, 1),
        "batches_stored": stored,
        "producer_exit_code": proc.returncode,
        "imports": import_profile(),
        "machine": f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}",
    }, indent=2))


if __name__ == "__main__":
    main()
