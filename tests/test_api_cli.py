"""``swarmwatch sink api``: the service on its own, against any NATS URL."""
from __future__ import annotations

import signal
import subprocess
import sys
import time

import httpx
from typer.testing import CliRunner

from swarmwatch.cli import app
from swarmwatch.server import EmbeddedServer, free_port


def test_sink_api_serves_until_sigterm_then_exits_cleanly(nats_server: EmbeddedServer) -> None:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "swarmwatch", "sink", "api", "--nats", nats_server.url, "--api-port", str(port), "--backfill", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                r = httpx.get(f"http://127.0.0.1:{port}/health", timeout=2)
                break
            except httpx.TransportError:
                assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
                assert time.monotonic() < deadline, "the API never answered"
                time.sleep(0.1)
        assert r.json()["status"] == "ok" and r.json()["nats_connected"] is True
        assert httpx.get(f"http://127.0.0.1:{port}/api/nodes", timeout=5).json()["total"] == 0
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
        assert "dashboard on http://127.0.0.1:" in (proc.stderr.read().decode() if proc.stderr else "")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_sink_api_refuses_a_public_address_without_a_token() -> None:
    r = CliRunner().invoke(app, ["sink", "api", "--api-host", "0.0.0.0"], env={"SWARMWATCH_API_TOKEN": ""})
    assert r.exit_code == 2
    assert "0.0.0.0" in r.output and "token" in r.output


def test_sink_api_names_a_bad_backfill_duration() -> None:
    r = CliRunner().invoke(app, ["sink", "api", "--backfill", "forever"])
    assert r.exit_code == 2 and "forever" in r.output
