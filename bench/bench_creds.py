"""Per-node identities at fleet size: issuing keys, the server config they make, start, reload, connect.

    python bench/bench_creds.py [--nodes 100 1000 10000]

For each fleet size: seconds to issue the keys (``swarmwatch.creds.issue``),
the rendered auth.conf's size, ``nats-server -t`` parse time, seconds from
starting nats-server to listening, seconds for a config reload to take effect
(one more node added, then that node connects), and the connect time of one
node. Prints one JSON object per size.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from swarmwatch.config import NatsConfig  # noqa: E402
from swarmwatch.connect import ConnectError, connect  # noqa: E402
from swarmwatch.creds import identities, issue, render_auth  # noqa: E402
from swarmwatch.server import find_binary, free_port  # noqa: E402

PASSWORDS = {k: "bench-secret" for k in ("SW_PROCESSOR_PASSWORD", "SW_SINKS_PASSWORD", "SW_ADMIN_PASSWORD", "SW_SYS_PASSWORD")}


def _listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
        return True
    except OSError:
        return False


async def _connect_s(url: str, seed: Path, deadline_s: float) -> float:
    """Seconds until a node with ``seed`` is let in (retried until ``deadline_s``)."""
    t0 = time.perf_counter()
    while True:
        try:
            nc = await connect(url, NatsConfig(creds=str(seed)), wait=False)
            await nc.close()
            return time.perf_counter() - t0
        except ConnectError:
            if time.perf_counter() - t0 > deadline_s:
                raise
            await asyncio.sleep(0.02)


def run(n: int, work: Path) -> dict[str, float | int]:
    keys = work / "keys"
    t0 = time.perf_counter()
    for i in range(n):
        issue(keys, "bench", f"node-{i:05d}")
    issue_s = time.perf_counter() - t0
    template = (ROOT / "deploy" / "nats" / "auth.conf").read_text()
    t0 = time.perf_counter()
    auth = render_auth(template, identities(keys))
    render_s = time.perf_counter() - t0
    port = free_port()
    (work / "auth.conf").write_text(auth)
    conf = work / "server.conf"
    conf.write_text(f"listen: 127.0.0.1:{port}\njetstream {{ store_dir: {json.dumps(str(work / 'js'))} }}\ninclude ./auth.conf\n")
    env = {**os.environ, **PASSWORDS}
    t0 = time.perf_counter()
    subprocess.run([str(find_binary()), "-t", "-c", str(conf)], check=True, capture_output=True, env=env, timeout=300)
    check_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    proc = subprocess.Popen([str(find_binary()), "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    try:
        while not _listening(port):
            if proc.poll() is not None:
                raise RuntimeError(f"nats-server exited {proc.returncode}")
            time.sleep(0.01)
        start_s = time.perf_counter() - t0
        url = f"nats://127.0.0.1:{port}"
        connect_s = asyncio.run(_connect_s(url, keys / "bench" / "node-00000.nk", 10))
        newcomer = issue(keys, "bench", "newcomer")
        (work / "auth.conf").write_text(render_auth(template, identities(keys)))
        t0 = time.perf_counter()
        proc.send_signal(1)  # SIGHUP: reload
        reload_s = asyncio.run(_connect_s(url, newcomer.seed_path, 120))
        reload_s = time.perf_counter() - t0
    finally:
        proc.terminate()
        proc.wait(30)
    return {
        "nodes": n,
        "issue_s": round(issue_s, 3),
        "render_s": round(render_s, 3),
        "auth_conf_bytes": len(auth.encode()),
        "bytes_per_node": round(len(auth.encode()) / n),
        "server_check_s": round(check_s, 3),
        "server_start_s": round(start_s, 3),
        "reload_until_new_node_connects_s": round(reload_s, 3),
        "node_connect_s": round(connect_s, 4),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nodes", type=int, nargs="+", default=[100, 1000, 10000])
    args = ap.parse_args()
    for n in args.nodes:
        with tempfile.TemporaryDirectory() as d:
            print(json.dumps(run(n, Path(d))), flush=True)


if __name__ == "__main__":
    main()
