"""``swarmwatch up``: one command brings up the whole pipeline; Ctrl-C stops it with nothing lost."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from schemas import Alert, AlertStatus
from sinks import read_records
from swarmwatch.server import free_port
from tests.support import first_alerts, wait_for


def _stored(store: Path) -> bool:
    """Whether the file sinks have written box-1's metrics and the always_busy alert yet."""
    try:
        metrics = {r["metric"] for r in read_records(store, "metrics", node="box-1")}
        alerts = [a["rule"] for a in read_records(store, "alerts") if a["status"] == "firing"]
    except OSError:  # nothing written yet
        return False
    return {"cpu.percent", "mem.percent", "disk.percent", "proc.count"} <= metrics and "always_busy" in alerts


async def test_up_runs_producer_processor_and_sinks_and_stops_cleanly(tmp_path: Path) -> None:
    port = free_port()
    rules = tmp_path / "rules.yaml"
    rules.write_text("rules:\n  - {name: always_busy, metric: proc.count, op: '>', threshold: 0, severity: info}\n")
    data = tmp_path / "data"
    proc = subprocess.Popen(
        [sys.executable, "-m", "swarmwatch", "up", "--data-dir", str(data), "--port", str(port), "--cluster", "lab",
         "--node", "box-1", "--interval", "0.5s", "--rules", str(rules), "--no-api"],
        env=dict(os.environ), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )
    seen: list[Alert] = []
    try:
        seen = await first_alerts(f"nats://127.0.0.1:{port}", "sw.alerts.info.lab.box-1.always_busy", time.monotonic() + 30)
        # the sinks flush on their own clock: wait until the store holds what is checked below, then stop
        await wait_for(lambda: _stored(data / "store"), 30, "the node's metrics and its alert in the store")
    finally:
        proc.send_signal(signal.SIGINT)
        out = proc.communicate(timeout=60)[0].decode()
    assert proc.returncode == 0, out
    assert seen and seen[0].status is AlertStatus.FIRING and seen[0].node == "box-1"
    assert "swarmwatch is up" in out and f"nats://127.0.0.1:{port}" in out and "stopped cleanly" in out
    assert "swarmwatch alerts --nats" in out
    store = data / "store"
    metrics = read_records(store, "metrics", node="box-1")
    assert {"cpu.percent", "mem.percent", "disk.percent", "proc.count"} <= {r["metric"] for r in metrics}
    stored_alerts = read_records(store, "alerts")
    assert [a["rule"] for a in stored_alerts if a["status"] == "firing"].count("always_busy") == 1
    assert (data / "nats" / "jetstream").is_dir()


def test_bad_config_is_named_without_a_traceback(tmp_path: Path) -> None:
    cfg = tmp_path / "swarmwatch.yaml"
    cfg.write_text("producer:\n  interval: fast\nprocessor:\n  operators: [rules, magic]\n")
    res = subprocess.run([sys.executable, "-m", "swarmwatch", "up", "-c", str(cfg)], capture_output=True, text=True, timeout=60)
    assert res.returncode == 2
    assert f"{cfg}: producer.interval: duration 'fast' is invalid" in res.stderr
    assert "processor.operators: unknown operator(s) ['magic']" in res.stderr
    assert "Traceback" not in res.stderr


def test_bad_node_name_is_refused_before_anything_starts(tmp_path: Path) -> None:
    res = subprocess.run(
        [sys.executable, "-m", "swarmwatch", "up", "--data-dir", str(tmp_path), "--node", "bad.name"],
        capture_output=True, text=True, timeout=60,
    )
    assert res.returncode == 2 and "node: name 'bad.name' is not a valid name" in res.stderr
    assert not (tmp_path / "nats").exists()
