"""`swarmwatch produce`: clear errors for bad options; a real run publishes and stops cleanly."""
from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
from pathlib import Path

import nats
import psutil
import pytest
from typer.testing import CliRunner

from producers.options import default_node_name, parse_interval
from schemas.codec import decode_batch
from schemas.subjects import check_token
from swarmwatch.cli import app
from swarmwatch.server import EmbeddedServer


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--node", "bad.name"], "node 'bad.name' is not a valid name"),
        (["--cluster", "a b"], "cluster 'a b' is not a valid name"),
        (["--interval", "10x"], "interval '10x' is invalid"),
        (["--interval", "1ms"], "interval '1ms' is too short"),
        (["--watch-pid", "-3"], "--watch-pid -3 must be a positive process id"),
        (["--nats-creds", "/nonexistent/user.creds"], "credentials file '/nonexistent/user.creds' does not exist"),
        (["--nats-tls-cert", "/nonexistent/c.pem", "--nats-tls-key", "/nonexistent/k.pem"], "TLS certificate file"),
    ],
)
def test_bad_options_are_refused_with_a_message_naming_the_value(args: list[str], message: str) -> None:
    result = CliRunner().invoke(app, ["produce", "--nats", "nats://127.0.0.1:1", *args])
    assert result.exit_code == 2
    text = result.output + (result.stderr if result.stderr_bytes is not None else "")
    assert message in text
    assert "Traceback" not in text


@pytest.mark.parametrize(
    ("text", "seconds"), [("1s", 1.0), ("500ms", 0.5), ("2", 2.0), ("1m", 60.0), ("0.25s", 0.25), (3, 3.0)]
)
def test_interval_accepts_units(text: str | int, seconds: float) -> None:
    assert parse_interval(text) == seconds


def test_default_node_name_is_a_valid_subject_token() -> None:
    assert check_token(default_node_name(), "node")


async def _count_batches(url: str, node: str) -> int:
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        info = await js.stream_info("TELEMETRY")
        n = 0
        if info.state.messages == 0:
            return 0
        for seq in range(info.state.first_seq, info.state.last_seq + 1):
            msg = await js.get_msg("TELEMETRY", seq)
            if msg.subject.startswith("sw.metrics.") and decode_batch(msg.data).node == node:
                n += 1
        return n
    finally:
        await nc.close()


async def test_produce_command_publishes_until_sigterm_without_secrets_on_its_command_line(
    nats_server: EmbeddedServer, tmp_path: Path
) -> None:
    nc = await nats.connect(nats_server.url)
    await nc.jetstream().add_stream(name="TELEMETRY", subjects=["sw.metrics.>", "sw.events.>"])
    await nc.close()
    exe = Path(sys.executable).parent / "swarmwatch"
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-c", "from swarmwatch.cli import main; main()"]
    proc = subprocess.Popen(
        cmd + ["produce", "--nats", nats_server.url, "--cluster", "c1", "--node", "cli-node", "--interval", "200ms",
               "--no-gpu", "--nats-token", "s3cret-token", "--spool-dir", str(tmp_path / "spool")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 30
        while await _count_batches(nats_server.url, "cli-node") < 3:
            assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
            assert time.monotonic() < deadline, "no batches from `swarmwatch produce`"
            await asyncio.sleep(0.2)
        cmdline = " ".join(psutil.Process(proc.pid).cmdline())
        assert "-m producers" in cmdline  # the CLI replaced itself with the lean entry point
        assert "s3cret-token" not in cmdline
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err.decode()
    assert b"stopped: sent=" in err
