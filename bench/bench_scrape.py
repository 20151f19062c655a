"""Sidecar CPU with node_exporter scraped every second, against the same sidecar without it (issue 15).

Starts a local nats-server with the streams and Debian's prometheus-node-exporter
on a free port, then runs a real ``swarmwatch produce`` at 1 s three ways, one
after the other for ``--duration`` seconds each: plain, with ``--scrape`` of
node_exporter at 1 s, with that plus an ``--http-check`` at 1 s, and with a
sidecar config scraping only an allow-list (CPU, memory, network, filesystem,
load, disk bytes). Reports the
sidecar's CPU % of one core and RSS (psutil), node_exporter's own CPU, samples
per batch and scrape time. Prints JSON.

    python bench/bench_scrape.py --duration 30
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.bench_producer import make_stream, producer_command  # noqa: E402
from swarmwatch.server import EmbeddedServer, free_port  # noqa: E402


ALLOW = ("node_cpu_*", "node_memory_Mem*", "node_network_*_bytes_total", "node_filesystem_avail_bytes", "node_load*",
         "node_disk_*_bytes_total")


def _wait_port(port: int) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"nothing listens on {port}")


async def _batch_stats(url: str, node: str) -> dict[str, float]:
    """Samples per batch and the scrape figures from the last batches of ``node``."""
    import nats

    from schemas.codec import decode_batch

    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        info = await js.stream_info("TELEMETRY")
        sizes, scrape_ms, http_ms = [], [], []
        for seq in range(max(info.state.first_seq, info.state.last_seq - 400), info.state.last_seq + 1):
            try:
                msg = await js.get_msg("TELEMETRY", seq)
            except Exception:  # noqa: BLE001 - a gap
                continue
            if not msg.subject.endswith("." + node):
                continue
            b = decode_batch(msg.data)
            sizes.append(len(b.samples))
            scrape_ms += [s.value for s in b.samples if s.name == "scrape.duration_ms"]
            http_ms += [s.value for s in b.samples if s.name == "http.latency_ms"]
        med = (lambda xs: round(sorted(xs)[len(xs) // 2], 2) if xs else None)
        return {"batches": len(sizes), "samples_per_batch_median": med(sizes), "scrape_ms_median": med(scrape_ms),
                "http_check_ms_median": med(http_ms)}
    finally:
        await nc.close()


def _run(url: str, node: str, extra: list[str], duration: float, warmup: float, exporter: psutil.Process) -> dict[str, object]:
    cmd = [c if c != "bench-node" else node for c in producer_command(url, "1s")] + ["--no-probes", *extra]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        p = psutil.Process(proc.pid)
        time.sleep(warmup)
        if proc.poll() is not None:
            raise SystemExit(f"producer exited early: {proc.stderr.read().decode() if proc.stderr else ''}")
        c0, e0, w0 = p.cpu_times(), exporter.cpu_times(), time.monotonic()
        rss_max = 0
        while time.monotonic() < w0 + duration:
            rss_max = max(rss_max, p.memory_info().rss)
            time.sleep(1.0)
        c1, e1, w1 = p.cpu_times(), exporter.cpu_times(), time.monotonic()
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
    wall = w1 - w0
    return {
        "extra_args": extra,
        "sidecar_cpu_percent_of_one_core": round(100.0 * ((c1.user + c1.system) - (c0.user + c0.system)) / wall, 3),
        "sidecar_rss_mb_max": round(rss_max / 2**20, 1),
        "node_exporter_cpu_percent": round(100.0 * ((e1.user + e1.system) - (e0.user + e0.system)) / wall, 3),
        **asyncio.run(_batch_stats(url, node)),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--duration", type=float, default=30.0, help="measured seconds per variant")
    ap.add_argument("--warmup", type=float, default=4.0)
    args = ap.parse_args()
    exe = shutil.which("prometheus-node-exporter") or shutil.which("node_exporter")
    if exe is None:
        raise SystemExit("prometheus-node-exporter is not installed (.ci/install-system-deps.sh)")
    port = free_port()
    ne = subprocess.Popen([exe, f"--web.listen-address=127.0.0.1:{port}"], stderr=subprocess.DEVNULL)
    try:
        _wait_port(port)
        exporter = psutil.Process(ne.pid)
        target = f"http://127.0.0.1:{port}/metrics"
        with tempfile.TemporaryDirectory() as d, EmbeddedServer(Path(d) / "nats", port=0) as srv:
            asyncio.run(make_stream(srv.url, watch=False))
            plain = _run(srv.url, "plain", [], args.duration, args.warmup, exporter)
            scraped = _run(srv.url, "scraped", ["--scrape", target, "--scrape-interval", "1s"], args.duration,
                           args.warmup, exporter)
            checked = _run(srv.url, "checked", ["--scrape", target, "--scrape-interval", "1s", "--http-check",
                                                f"http://127.0.0.1:{port}/", "--check-interval", "1s"],
                           args.duration, args.warmup, exporter)
            cfg = Path(d) / "sidecar.yaml"
            cfg.write_text(json.dumps({"scrape": [{"url": target, "interval": "1s", "allow": list(ALLOW)}]}))
            allowed = _run(srv.url, "allowed", ["--config", str(cfg)], args.duration, args.warmup, exporter)
    finally:
        ne.terminate()
        ne.wait(10)
    added = scraped["sidecar_cpu_percent_of_one_core"] - plain["sidecar_cpu_percent_of_one_core"]  # type: ignore[operator]
    print(json.dumps({
        "bench": "sidecar_scrape_overhead",
        "duration_s_each": args.duration,
        "plain": plain,
        "scrape_node_exporter_1s": scraped,
        "scrape_and_http_check_1s": checked,
        "scrape_allow_list_1s": allowed,
        "scrape_added_cpu_percent": round(added, 3),
        "machine": f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}",
    }, indent=2))


if __name__ == "__main__":
    main()
