"""``swarmwatch sink notify`` as a process against a real nats-server and a local webhook."""
from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from processors.alerting import AlertTracker
from schemas import AlertKind, Severity, codec
from swarmwatch.cli import app
from swarmwatch.server import EmbeddedServer
from tests.support import start_http_server

HOOK_SECRET = "cli-hook-secret-42"


def test_sink_notify_refuses_a_bad_config_naming_the_key_not_the_secret(tmp_path: Path) -> None:
    cfg = tmp_path / "n.yaml"
    cfg.write_text("notify:\n  channels:\n    - name: x\n      url: nosuch://secret-token-1234/\n")
    res = CliRunner().invoke(app, ["sink", "notify", "--config", str(cfg), "--nats", "nats://127.0.0.1:1"])
    assert res.exit_code == 2
    assert "notify.channels[0].url" in res.output and "secret-token-1234" not in res.output


@pytest.mark.timeout(60)
async def test_sink_notify_command_pages_a_webhook_and_stops_cleanly(nats_server: EmbeddedServer, nc: Any, tmp_path: Path) -> None:
    got: list[bytes] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802
            got.append(self.rfile.read(int(self.headers["content-length"])))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    srv = start_http_server(Handler)
    cfg = tmp_path / "notify.yaml"
    cfg.write_text(f"notify:\n  channels:\n    - name: hook\n      url: json://127.0.0.1:{srv.server_port}/hook/${{SW_HOOK}}\n")
    proc = subprocess.Popen(
        [sys.executable, "-m", "swarmwatch", "sink", "notify", "--nats", nats_server.url, "--config", str(cfg), "--log-level", "DEBUG"],
        env={**os.environ, "SW_HOOK": HOOK_SECRET}, stderr=subprocess.PIPE, text=True,
    )
    try:
        js = nc.jetstream()
        deadline = time.monotonic() + 30
        await asyncio.sleep(1.0)  # a standalone sink waits for the streams rather than creating them
        assert proc.poll() is None
        from swarmwatch.streams import ensure_streams

        await ensure_streams(js)
        while True:  # then it creates its consumer
            try:
                await js.consumer_info("DERIVED", "sink-notify")
                break
            except Exception:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise AssertionError("the sink did not start") from None
                await asyncio.sleep(0.1)
        tr = AlertTracker("cpu_high", kind=AlertKind.THRESHOLD, severity=Severity.CRITICAL)
        for e in tr.update("c1", "n1", True, time.time(), 99.0):
            await js.publish(e.subject, codec.encode(e.message), headers={"Nats-Msg-Id": e.msg_id})
        while not got and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert got and b"c1/n1 cpu_high" in got[0]
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=20)
        srv.shutdown()
    assert proc.returncode == 0, err
    assert "hook (json://127.0.0.1" in err
    assert HOOK_SECRET not in err  # not even in Apprise's and urllib3's DEBUG lines
