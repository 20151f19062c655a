"""Helpers for the deploy tests: render deploy/nats/*.conf for 127.0.0.1 and temporary paths.

The rendered files are the shipped files with only addresses, ports, the
JetStream directory and the certificate directory replaced, so the tests run
exactly the configuration that docs/deploy.md tells people to run. Each
replacement must match, so a config that drifts from what the tests expect
fails here instead of being tested half-rendered.
"""
from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from swarmwatch.server import find_binary

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
NATS_DIR = DEPLOY / "nats"
CLUSTER_NODES = ("n1", "n2", "n3")
PASSWORDS = {
    "SW_PROCESSOR_PASSWORD": "processor-secret",
    "SW_SINKS_PASSWORD": "sinks-secret",
    "SW_ADMIN_PASSWORD": "admin-secret",
    "SW_SYS_PASSWORD": "sys-secret",
}
FLEET_CLUSTER = "default"
FLEET = ("node-1", "node-2", "node-9", "victim")  # node identities issued into every rendered auth.conf
USERS = {
    "processor": ("processor", PASSWORDS["SW_PROCESSOR_PASSWORD"]),
    "sinks": ("sinks", PASSWORDS["SW_SINKS_PASSWORD"]),
    "admin": ("admin", PASSWORDS["SW_ADMIN_PASSWORD"]),
}


def free_ports(n: int) -> list[int]:
    """``n`` distinct free TCP ports on 127.0.0.1 (bound together, then released)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _sub(text: str, pattern: str, repl: str, what: str) -> str:
    new, n = re.subn(pattern, repl, text)
    if n == 0:
        raise AssertionError(f"deploy config no longer contains {what} (pattern {pattern!r}); update the deploy tests")
    return new


def make_dev_certs(out: Path) -> Path:
    """Run deploy/nats/make-dev-certs.sh into ``out``; skip the test when openssl is missing."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed; the TLS configs need certificates")
    subprocess.run(["bash", str(NATS_DIR / "make-dev-certs.sh"), str(out)], check=True, capture_output=True, timeout=60)
    return out


def _render_common(text: str, certs: Path) -> str:
    return text.replace("/etc/nats/certs/", f"{certs}/")


@dataclass(frozen=True)
class ClusterNode:
    name: str
    conf: Path
    client_port: int
    route_port: int
    http_port: int
    store_dir: Path

    @property
    def url(self) -> str:
        return f"tls://127.0.0.1:{self.client_port}"


def render_cluster(tmp: Path, certs: Path) -> list[ClusterNode]:
    """deploy/nats/cluster/n{1,2,3}.conf (with tls.conf and auth.conf) on 127.0.0.1 random ports."""
    out = tmp / "nats"
    (out / "cluster").mkdir(parents=True, exist_ok=True)
    for name in ("tls.conf", "auth.conf"):
        text = _render_common((NATS_DIR / name).read_text(), certs)
        (out / name).write_text(_with_fleet(text, out) if name == "auth.conf" else text)
    ports = free_ports(3 * len(CLUSTER_NODES))
    plan = {n: (ports[3 * i], ports[3 * i + 1], ports[3 * i + 2]) for i, n in enumerate(CLUSTER_NODES)}
    nodes = []
    for name, (client, route, http) in plan.items():
        text = _render_common((NATS_DIR / "cluster" / f"{name}.conf").read_text(), certs)
        store = tmp / f"js-{name}"
        text = _sub(text, r"listen: 0\.0\.0\.0:4222", f"listen: 127.0.0.1:{client}", "the client listen address 0.0.0.0:4222")
        text = _sub(text, r"listen: 0\.0\.0\.0:6222", f"listen: 127.0.0.1:{route}", "the route listen address 0.0.0.0:6222")
        text = _sub(text, r"http: 127\.0\.0\.1:8222", f"http: 127.0.0.1:{http}", "the monitoring address 127.0.0.1:8222")
        text = _sub(text, r'"/var/lib/nats/jetstream"', f'"{store}"', "the JetStream store_dir")
        for other, (_c, other_route, _h) in plan.items():
            text = _sub(text, rf"nats-route://{other}:6222", f"nats-route://127.0.0.1:{other_route}", f"the route to {other}")
        conf = out / "cluster" / f"{name}.conf"
        conf.write_text(text)
        nodes.append(ClusterNode(name, conf, client, route, http, store))
    return nodes


def creds_dir(rendered: Path) -> Path:
    """Where the node keys of the fleet live for a config rendered into directory ``rendered``."""
    return rendered / "creds"


def node_seed(rendered: Path, node: str) -> Path:
    """The seed file of fleet node ``node`` for a config rendered into ``rendered``."""
    return creds_dir(rendered) / FLEET_CLUSTER / f"{node}.nk"


def _with_fleet(text: str, rendered: Path) -> str:
    """auth.conf with the test FLEET's node identities spliced in, as `swarmwatch creds server-config` does."""
    from swarmwatch.creds import issue, render_auth

    ids = [issue(creds_dir(rendered), FLEET_CLUSTER, n) for n in FLEET]
    return render_auth(text, ids)


def render_file(src: Path, dst_dir: Path, certs: Path | None = None, client_port: int | None = None) -> Path:
    """One shipped config (and the files it includes) with cert paths, store dir and port replaced.

    auth.conf gets the test FLEET's node identities (keys under ``creds_dir(dst_dir)``).
    """
    dst_dir.mkdir(parents=True, exist_ok=True)
    text = src.read_text()
    if src.name == "auth.conf":
        text = _with_fleet(text, dst_dir)
    if certs is not None:
        text = _render_common(text, certs)
    text = text.replace('"/var/lib/nats/jetstream"', f'"{dst_dir / "js"}"')
    if client_port is not None:
        text = re.sub(r"listen: (0\.0\.0\.0|127\.0\.0\.1):4222", f"listen: 127.0.0.1:{client_port}", text)
        text = re.sub(r"http: 127\.0\.0\.1:8222", f"http: 127.0.0.1:{free_ports(1)[0]}", text)
    dst = dst_dir / src.name
    dst.write_text(text)
    return dst


def server_env() -> dict[str, str]:
    """The environment nats-server needs for auth.conf: the role passwords."""
    return {**os.environ, **PASSWORDS}


def nats_server_binary() -> str:
    return str(find_binary())


class ServerProcess:
    """A nats-server started from a config file; ``log`` holds its output."""

    def __init__(self, conf: Path, client_port: int, http_port: int | None = None) -> None:
        self.conf = conf
        self.client_port = client_port
        self.http_port = http_port
        self.log = conf.with_suffix(".log")
        self.proc: subprocess.Popen[bytes] | None = None
        self._ready_before = 0

    def start(self) -> ServerProcess:
        self._ready_before = self._ready_lines()
        with self.log.open("ab") as fh:
            self.proc = subprocess.Popen(
                [nats_server_binary(), "-c", str(self.conf)], stdout=fh, stderr=subprocess.STDOUT, env=server_env()
            )
        return self

    def wait_listening(self, timeout_s: float = 20.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"nats-server {self.conf.name} exited {self.proc.returncode}:\n{self.log.read_text()[-3000:]}")
            if self._ready_lines() > self._ready_before:  # this process is ready, not another one on a reused port
                try:
                    socket.create_connection(("127.0.0.1", self.client_port), timeout=0.5).close()
                    return
                except OSError:
                    pass
            time.sleep(0.05)
        raise AssertionError(f"nats-server {self.conf.name} not listening after {timeout_s} s:\n{self.log.read_text()[-3000:]}")

    def _ready_lines(self) -> int:
        return self.log.read_bytes().count(b"Server is ready") if self.log.exists() else 0

    def kill(self) -> None:
        """SIGKILL: a crash, not a clean shutdown."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


@contextlib.contextmanager
def single_server_with_auth(dst_dir: Path) -> Iterator[tuple[str, ServerProcess]]:
    """deploy/nats/single.conf on a random port with ``include ./auth.conf`` added, as docs/deploy.md says.

    Rendered into ``dst_dir`` (auth.conf with the test fleet's node keys); yields (url, process), stopped on exit.
    """
    port = free_ports(1)[0]
    conf = render_file(NATS_DIR / "single.conf", dst_dir, client_port=port)
    render_file(NATS_DIR / "auth.conf", dst_dir)
    conf.write_text(conf.read_text() + "\ninclude ./auth.conf\n")
    srv = ServerProcess(conf, port).start()
    try:
        srv.wait_listening()
        yield f"nats://127.0.0.1:{port}", srv
    finally:
        srv.stop()


def test_cluster_rendering_replaces_every_production_address_and_path(tmp_path: Path) -> None:
    nodes = render_cluster(tmp_path, tmp_path / "certs")
    assert [n.name for n in nodes] == list(CLUSTER_NODES)
    all_ports = [p for n in nodes for p in (n.client_port, n.route_port, n.http_port)]
    assert len(set(all_ports)) == len(all_ports)
    for node in nodes:
        text = "\n".join(line.split("#")[0] for line in node.conf.read_text().splitlines())
        assert "0.0.0.0" not in text and ":6222" not in text and ":4222" not in text
        assert "/var/lib/nats" not in text
        for other in nodes:
            assert f"nats-route://127.0.0.1:{other.route_port}" in text
    tls = "\n".join(line.split("#")[0] for line in (tmp_path / "nats" / "tls.conf").read_text().splitlines())
    assert "/etc/nats/certs" not in tls
