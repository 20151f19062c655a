"""Services stop on a signal at any moment and say what is wrong when NATS is not there.

Real subprocesses against a port where no server listens: each service retries
with a doubling backoff, stops cleanly on SIGINT or SIGTERM while it waits,
and ``--connect-timeout`` makes it give up with a one-line error.
"""
from __future__ import annotations

import asyncio
import logging
import os
import selectors
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from swarmwatch.connect import ConnectError, ConnectStopped, connect
from swarmwatch.server import free_port

WAITING = "not reachable"  # the first retry warning: the service is inside its connect loop


def _service(args: list[str], tmp_path: Path) -> subprocess.Popen[bytes]:
    env = dict(os.environ, SWARMWATCH_API_TOKEN="")
    return subprocess.Popen(
        [sys.executable, "-m", "swarmwatch", *args], cwd=tmp_path, env=env,
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )


def _read_until(proc: subprocess.Popen[bytes], text: str, timeout_s: float = 60.0) -> str:
    """Stderr of ``proc`` up to the first line containing ``text`` (fails if it exits or times out first)."""
    assert proc.stderr is not None
    out = b""
    sel = selectors.DefaultSelector()
    sel.register(proc.stderr, selectors.EVENT_READ)
    deadline = time.monotonic() + timeout_s
    while text.encode() not in out:
        assert time.monotonic() < deadline, f"{text!r} not seen within {timeout_s:g} s; stderr so far:\n{out.decode()}"
        if sel.select(timeout=0.5):
            chunk = os.read(proc.stderr.fileno(), 65536)
            assert chunk, f"exited ({proc.poll()}) before {text!r}; stderr:\n{out.decode()}"
            out += chunk
    return out.decode()


def _commands(tmp_path: Path, url: str) -> dict[str, list[str]]:
    notify = tmp_path / "notify.yaml"
    notify.write_text("notify:\n  channels: []\n")
    return {
        "process": ["process", "--nats", url],
        "sink json": ["sink", "json", "--nats", url, "--store", str(tmp_path / "store")],
        "sink api": ["sink", "api", "--nats", url, "--api-port", "0", "--backfill", "0"],
        "sink notify": ["sink", "notify", "--nats", url, "--config", str(notify)],
        "up --nats": ["up", "--nats", url, "--data-dir", str(tmp_path / "up"), "--no-api"],
        "ingest otlp": ["ingest", "otlp", "--nats", url, "--api-port", "0"],
        "produce": ["produce", "--nats", url, "--no-gpu", "--no-probes", "--spool-dir", str(tmp_path / "spool")],
    }


def _assert_clean_exits(procs: dict[str, subprocess.Popen[bytes]], timeout_s: float) -> None:
    """Every process exits 0 within ``timeout_s`` with no traceback on stderr."""
    for name, proc in procs.items():
        code = proc.wait(timeout=timeout_s)
        rest = proc.stderr.read().decode() if proc.stderr else ""
        assert code == 0, (name, rest)
        assert "Traceback" not in rest, (name, rest)


# what each command logs while it waits for the broker (the producer spools instead of waiting)
_WAITING = {"produce": "broker error"}


SIGNALS = {"process": signal.SIGINT}  # SIGTERM for the others: both take the same path


def test_every_service_waiting_for_an_unreachable_nats_stops_on_a_signal(tmp_path: Path) -> None:
    """All at once (they are independent processes): each waits for the broker, gets its signal, exits 0."""
    commands = _commands(tmp_path, f"nats://127.0.0.1:{free_port()}")
    procs = {name: _service(args, tmp_path) for name, args in commands.items()}
    try:
        for name, proc in procs.items():
            _read_until(proc, _WAITING.get(name, WAITING))
        for name, proc in procs.items():
            proc.send_signal(SIGNALS.get(name, signal.SIGTERM))
        _assert_clean_exits(procs, timeout_s=30)
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def test_connect_timeout_gives_up_with_a_clear_error(tmp_path: Path) -> None:
    url = f"nats://127.0.0.1:{free_port()}"
    commands = _commands(tmp_path, url)
    procs = {name: _service([*commands[name], "--connect-timeout", "1s"], tmp_path)
             for name in ("process", "sink notify", "up --nats")}  # start_service twice, Stack once
    try:
        for name, proc in procs.items():
            code = proc.wait(timeout=60)
            err = proc.stderr.read().decode() if proc.stderr else ""
            assert code != 0, name
            assert f"no NATS server answered at {url} within 1 s" in err, (name, err)
            assert "Traceback" not in err, (name, err)
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def test_a_bad_connect_timeout_is_refused_with_the_value(tmp_path: Path) -> None:
    proc = _service(["process", "--connect-timeout", "soon"], tmp_path)
    assert proc.wait(timeout=60) == 2
    assert "--connect-timeout: duration 'soon' is invalid" in (proc.stderr.read().decode() if proc.stderr else "")


async def test_retries_back_off_and_log_less_each_time(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="swarmwatch.connect")
    with pytest.raises(ConnectError) as e:
        await connect(f"nats://127.0.0.1:{free_port()}", timeout_s=4.0)
    tries = int(str(e.value).split(" tries")[0].rsplit("(", 1)[1])
    waits = [r.getMessage().split("next try in ")[1].split(" s")[0] for r in caplog.records]
    assert waits[:3] == ["0.5", "1.0", "4.0"]  # logged at tries 1, 2, 4: waits double, lines thin out
    assert len(caplog.records) < tries


async def test_a_stop_request_ends_the_connect_wait() -> None:
    stop = asyncio.Event()
    asyncio.get_running_loop().call_later(0.3, stop.set)
    with pytest.raises(ConnectStopped):
        await connect(f"nats://127.0.0.1:{free_port()}", stop=stop)


async def test_refused_credentials_fail_at_once_instead_of_retrying(tmp_path: Path) -> None:
    from swarmwatch.config import NatsConfig
    from swarmwatch.server import EmbeddedServer

    srv = EmbeddedServer(tmp_path / "nats", port=0, extra_args=["--auth", "right-token-0123456789"])
    srv.start()
    try:
        with pytest.raises(ConnectError, match="refused our credentials"):
            await asyncio.wait_for(connect(srv.url, NatsConfig(token="wrong-token-0123456789")), 20)
        nc = await connect(srv.url, NatsConfig(token="right-token-0123456789"), timeout_s=10)
        assert nc.is_connected and nc.options["allow_reconnect"] and nc.options["max_reconnect_attempts"] == -1
        await nc.close()
    finally:
        srv.stop()


async def test_a_lost_connection_logs_less_and_less_while_it_reconnects(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from swarmwatch.server import EmbeddedServer

    caplog.set_level(logging.INFO, logger="swarmwatch.connect")
    srv = EmbeddedServer(tmp_path / "nats", port=0).start()
    nc = await connect(srv.url, timeout_s=10)
    again = EmbeddedServer(tmp_path / "nats", port=int(srv.url.rsplit(":", 1)[1]))
    try:
        srv.stop()
        await asyncio.sleep(4.0)  # nats-py keeps retrying; each failure reaches the error callback
        errors = [r.getMessage() for r in caplog.records if r.getMessage().startswith("NATS error")]
        counts = [int(m.rsplit(" (", 1)[1].split(" since")[0]) if " since the last connection" in m else 1 for m in errors]
        assert len(counts) >= 2 and counts == [2**k for k in range(len(counts))]  # failures 1, 2, 4, 8, ... only
        again.start()
        deadline = time.monotonic() + 20
        while not nc.is_connected:
            assert time.monotonic() < deadline, "did not reconnect"
            await asyncio.sleep(0.1)
        assert any("reconnected to NATS after" in r.getMessage() for r in caplog.records)
    finally:
        await nc.close()
        srv.stop()
        again.stop()


def test_services_whose_broker_went_away_still_stop_on_a_signal_without_a_traceback(tmp_path: Path) -> None:
    """process, sink json and sink api run, the server dies, then SIGTERM: each exits 0 within its stop bounds."""
    from swarmwatch.server import EmbeddedServer

    srv = EmbeddedServer(tmp_path / "nats", port=0).start()
    cmds = {
        "process": ["process", "--nats", srv.url],
        "sink json": ["sink", "json", "--nats", srv.url, "--store", str(tmp_path / "store")],
        "sink api": ["sink", "api", "--nats", srv.url, "--api-port", "0", "--backfill", "0"],
    }
    procs: dict[str, subprocess.Popen[bytes]] = {}
    try:
        procs = {name: _service(args, tmp_path) for name, args in cmds.items()}
        for name, proc in procs.items():
            _read_until(proc, "Ctrl-C stops it")
        srv.stop()
        for proc in procs.values():
            proc.send_signal(signal.SIGTERM)
        _assert_clean_exits(procs, timeout_s=40)
    finally:
        srv.stop()
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
