"""One CLI vocabulary: --nats-* for the broker, --api-* for HTTP, --store for files, --output/-o for output files."""
from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import click
import pytest
import typer
from typer.testing import CliRunner

from swarmwatch.cli import app
from swarmwatch.server import EmbeddedServer

OLD_NAMES = {"--out", "--data", "--token", "--port", "--host", "--creds", "--user", "--password",
             "--tls-ca", "--tls-cert", "--tls-key"}


def _commands() -> Iterator[tuple[str, click.Command]]:
    root = typer.main.get_command(app)

    def walk(cmd: click.Command, path: str) -> Iterator[tuple[str, click.Command]]:
        if isinstance(cmd, click.Group):
            for name, sub in cmd.commands.items():
                yield from walk(sub, f"{path} {name}".strip())
        else:
            yield path, cmd

    yield from walk(root, "")


def test_no_command_shows_an_old_or_ambiguous_flag_name() -> None:
    shown = {(path, opt) for path, cmd in _commands() for p in cmd.params if not getattr(p, "hidden", False) for opt in p.opts}
    assert {(path, opt) for path, opt in shown if opt in OLD_NAMES} == set()


def test_broker_and_http_flags_carry_their_prefix() -> None:
    for path, cmd in _commands():
        for p in cmd.params:
            if getattr(p, "hidden", False):
                continue
            for opt in p.opts:
                if "token" in opt or "creds" in opt:
                    assert opt.startswith(("--nats-", "--api-")), (path, opt)


def test_an_old_flag_still_works_for_one_release_with_a_warning(tmp_path: Path) -> None:
    r = CliRunner().invoke(app, ["schema", "--out", str(tmp_path / "s.json")])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "s.json").read_text().startswith("{")
    assert "--out is deprecated and will be removed; use --output" in r.output
    r = CliRunner().invoke(app, ["sink", "compact", "--out", str(tmp_path / "missing")])
    assert r.exit_code == 2 and "--out is deprecated" in r.output and "--store" in r.output


def test_an_old_and_a_new_name_that_disagree_are_refused(tmp_path: Path) -> None:
    r = CliRunner().invoke(app, ["schema", "--out", str(tmp_path / "a"), "--output", str(tmp_path / "b")])
    assert r.exit_code == 2 and "--out is the old name of --output" in r.output


def _held_port() -> socket.socket:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(1)
    return s


def test_a_busy_api_port_names_the_api_port_flag(nats_server: EmbeddedServer) -> None:
    held = _held_port()
    try:
        port = held.getsockname()[1]
        r = subprocess.run(
            [sys.executable, "-m", "swarmwatch", "sink", "api", "--nats", nats_server.url, "--api-port", str(port), "--backfill", "0"],
            capture_output=True, text=True, timeout=60,
        )
    finally:
        held.close()
    assert r.returncode != 0
    assert "--api-port" in r.stderr and "Traceback" not in r.stderr


def test_a_busy_nats_port_names_the_nats_port_flag(tmp_path: Path) -> None:
    held = _held_port()
    try:
        port = held.getsockname()[1]
        r = subprocess.run(
            [sys.executable, "-m", "swarmwatch", "up", "--nats-port", str(port), "--data-dir", str(tmp_path), "--no-api"],
            capture_output=True, text=True, timeout=60,
        )
    finally:
        held.close()
    assert r.returncode != 0
    assert "--nats-port" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.parametrize("args", [["sink", "api", "--port", "70000"], ["sink", "api", "--api-port", "70000"]])
def test_an_api_port_out_of_range_names_the_new_flag(args: list[str]) -> None:
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 2 and "--api-port 70000 is out of range" in r.output


@pytest.mark.parametrize("key", ["store", "out"])
def test_the_config_names_the_file_store_store_and_still_reads_out(key: str, tmp_path: Path) -> None:
    from swarmwatch.config import load_config

    p = tmp_path / "sw.yaml"
    p.write_text(f"sinks:\n  {key}: /srv/store\n")
    assert load_config(p, {}).sinks.out == "/srv/store"
    assert load_config(None, {"sinks.out": "/x"}).sinks.out == "/x"
