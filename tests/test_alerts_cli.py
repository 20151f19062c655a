"""``swarmwatch alerts`` tails alert subjects readably, and can show stored ones first."""
from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import nats
from typer.testing import CliRunner

from processors import AlertTracker
from schemas import AlertKind, Severity, encode
from swarmwatch.cli import app
from swarmwatch.server import EmbeddedServer
from swarmwatch.streams import ensure_streams


class _Lines:
    """Collects a process's stdout lines in a thread, so a test can wait for one without blocking the loop."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.lines: list[str] = []
        assert proc.stdout is not None
        self._t = threading.Thread(target=self._read, args=(proc.stdout,), daemon=True)
        self._t.start()

    def _read(self, f: object) -> None:
        for line in f:  # type: ignore[attr-defined]
            self.lines.append(line.rstrip("\n"))

    async def wait_for(self, text: str, timeout_s: float = 30.0) -> None:
        deadline = time.monotonic() + timeout_s
        while not any(text in ln for ln in self.lines):
            if time.monotonic() > deadline:
                raise AssertionError(f"{text!r} not printed within {timeout_s} s: {self.lines}")
            await asyncio.sleep(0.05)


async def test_alerts_shows_stored_and_live_alerts_readably(nats_server: EmbeddedServer) -> None:
    nc = await nats.connect(nats_server.url)
    js = nc.jetstream()
    await ensure_streams(js)
    tracker = AlertTracker("disk_full", AlertKind.THRESHOLD, Severity.CRITICAL)
    (old,) = tracker.update("lab", "box-1", True, time.time() - 60, 97.0, metric="disk.percent", threshold=95.0, summary="disk 97 %")
    await js.publish(old.subject, encode(old.message), headers={"Nats-Msg-Id": old.msg_id})
    proc = subprocess.Popen(
        [sys.executable, "-m", "swarmwatch", "alerts", "--nats", nats_server.url, "--since", "1h"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, "COLUMNS": "200"},
    )
    out = _Lines(proc)
    try:
        await out.wait_for("listening on")
        (live,) = tracker.update("lab", "box-1", False, time.time(), 40.0, metric="disk.percent", summary="disk back to 40 %")
        await nc.publish(live.subject, encode(live.message))
        await out.wait_for("RESOLVED")
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=20)
        err = proc.stderr.read() if proc.stderr else ""
        await nc.close()
    lines = [ln for ln in out.lines if "box-1" in ln]
    assert len(lines) == 2, "\n".join(out.lines) + err
    assert "FIRING" in lines[0] and "critical" in lines[0] and "lab/box-1 disk_full" in lines[0] and "value=97" in lines[0]
    assert "RESOLVED" in lines[1] and "disk back to 40 %" in lines[1]


async def test_alerts_shows_what_is_firing_now_first_without_since(nats_server: EmbeddedServer) -> None:
    nc = await nats.connect(nats_server.url)
    js = nc.jetstream()
    await ensure_streams(js)
    tracker = AlertTracker("mem_high", AlertKind.THRESHOLD, Severity.WARNING)
    t0 = time.time() - 3600
    emits = []
    for node in ("a", "b", "c"):
        emits += tracker.update("lab", node, True, t0, 95.0, metric="mem.percent", summary=f"{node} hot")
    emits += tracker.update("lab", "b", False, t0 + 60, 40.0, metric="mem.percent", summary="b cool")  # b resolved
    for e in emits:
        await js.publish(e.subject, encode(e.message), headers={"Nats-Msg-Id": e.msg_id})
    proc = subprocess.Popen(
        [sys.executable, "-m", "swarmwatch", "alerts", "--nats", nats_server.url],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, "COLUMNS": "200"},
    )
    out = _Lines(proc)
    try:
        await out.wait_for("listening on")
        (new,) = tracker.update("lab", "d", True, time.time(), 99.0, metric="mem.percent", summary="d hot")
        await js.publish(new.subject, encode(new.message), headers={"Nats-Msg-Id": new.msg_id})
        await out.wait_for("lab/d")
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=20)
        err = proc.stderr.read() if proc.stderr else ""
        await nc.close()
    text = "\n".join(out.lines) + err
    lines = [ln for ln in out.lines if "mem_high" in ln]
    assert any("firing now: 2" in ln for ln in out.lines), text
    nodes = [ln.split("lab/")[1].split()[0] for ln in lines]
    assert sorted(nodes[:2]) == ["a", "c"] and nodes[2:] == ["d"], text  # b resolved: not firing now
    assert all("FIRING" in ln for ln in lines)


def test_alerts_says_at_once_when_no_server_is_reachable() -> None:
    from swarmwatch.server import free_port

    res = subprocess.run(
        [sys.executable, "-m", "swarmwatch", "alerts", "--nats", f"nats://127.0.0.1:{free_port()}"],
        capture_output=True, text=True, timeout=30,
    )
    assert res.returncode == 2 and "no NATS server reachable" in res.stderr and "Traceback" not in res.stderr


TOKEN = "operator-token-0123456789"


async def test_alerts_and_silence_log_in_to_a_server_that_requires_a_token(tmp_path: Path) -> None:
    srv = EmbeddedServer(tmp_path / "nats", port=0, extra_args=["--auth", TOKEN]).start()
    try:
        nc = await nats.connect(srv.url, token=TOKEN)
        js = nc.jetstream()
        await ensure_streams(js)
        tracker = AlertTracker("disk_full", AlertKind.THRESHOLD, Severity.CRITICAL)
        (fired,) = tracker.update("lab", "box-9", True, time.time() - 60, 97.0, metric="disk.percent", summary="disk 97 %")
        await js.publish(fired.subject, encode(fired.message), headers={"Nats-Msg-Id": fired.msg_id})
        await nc.close()
        proc = subprocess.Popen(
            [sys.executable, "-m", "swarmwatch", "alerts", "--nats", srv.url, "--nats-token", TOKEN],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, "COLUMNS": "200"},
        )
        out = _Lines(proc)
        try:
            await out.wait_for("listening on")
        finally:
            proc.send_signal(signal.SIGINT)
            proc.wait(timeout=20)
            err = proc.stderr.read() if proc.stderr else ""
        text = "\n".join(out.lines) + err
        assert any("firing now: 1" in ln for ln in out.lines), text
        assert any("FIRING" in ln and "lab/box-9 disk_full" in ln for ln in out.lines), text

        # the token from the environment, as every other command reads it
        res = await asyncio.to_thread(CliRunner().invoke, app, ["silence", "list", "--nats", srv.url], env={"SWARMWATCH_NATS_TOKEN": TOKEN})
        assert res.exit_code == 0 and "no silences" in res.output, res.output
    finally:
        srv.stop()


def test_alerts_without_the_token_fails_with_one_clear_line(tmp_path: Path) -> None:
    srv = EmbeddedServer(tmp_path / "nats", port=0, extra_args=["--auth", TOKEN]).start()
    try:
        env = {k: v for k, v in os.environ.items() if not k.startswith("SWARMWATCH_NATS")}
        res = subprocess.run(
            [sys.executable, "-m", "swarmwatch", "alerts", "--nats", srv.url], capture_output=True, text=True, timeout=30, env=env,
        )
        silence = CliRunner().invoke(app, ["silence", "list", "--nats", srv.url], env={"SWARMWATCH_NATS_TOKEN": None})
    finally:
        srv.stop()
    assert res.returncode == 2, res.stderr
    assert res.stderr.strip().count("\n") == 0 and "Traceback" not in res.stderr
    assert res.stderr.startswith("error: NATS at") and "refused our credentials" in res.stderr and "--nats-token" in res.stderr
    assert silence.exit_code == 2 and "refused our credentials" in silence.output
