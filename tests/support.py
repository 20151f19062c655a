"""Helpers shared by the integration tests."""
from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import ssl
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:
    from schemas import Alert
    from swarmwatch.server import EmbeddedServer


async def wait_for(cond: Callable[[], Any], timeout_s: float = 20.0, what: str = "condition") -> None:
    """Poll ``cond`` every 50 ms until it is true; fail the test after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if cond():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{what} not met within {timeout_s:g} s")


async def ends_within(aw: Any, timeout_s: float, what: str) -> Any:
    """``aw``'s result; an AssertionError naming ``what`` if it has not ended after ``timeout_s``.

    Not ``asyncio.wait_for``: its cancel on timeout is one more cancel, which can end a task that
    swallowed the first one and so hide the hang; here the task is cancelled only after the failure.
    """
    task = asyncio.ensure_future(aw)
    done, _ = await asyncio.wait({task}, timeout=timeout_s)
    if task not in done:
        task.cancel()
        raise AssertionError(f"{what} did not end within {timeout_s:g} s")
    return task.result()


async def collect_alerts(nc: Any, subject: str = "sw.alerts.>") -> list[Alert]:
    """A list that fills with every alert published under ``subject`` from now on."""
    from schemas import Alert, decode

    seen: list[Alert] = []

    async def on_alert(m: Any) -> None:
        seen.append(decode(m.data, Alert))

    await nc.subscribe(subject, cb=on_alert)
    return seen


async def stored(js: Any, subject: str, stream: str = "DERIVED") -> list[bytes]:
    """Every message stored under ``subject`` (read by an ephemeral consumer)."""
    from nats.js.api import AckPolicy, ConsumerConfig

    sub = await js.pull_subscribe(subject, stream=stream, config=ConsumerConfig(ack_policy=AckPolicy.NONE))
    out: list[bytes] = []
    while True:
        try:
            msgs = await sub.fetch(500, timeout=0.5)
        except Exception:  # a fetch timeout: nothing more stored
            break
        out += [m.data for m in msgs]
    await sub.unsubscribe()
    return out


async def first_alerts(url: str, subject: str, deadline: float) -> list[Alert]:
    """The alerts stored under ``subject`` (stream DERIVED, read from the start) once there is one.

    Connects to ``url`` as soon as its server is up (a server started by a subprocess under test);
    both waits end at ``deadline`` (``time.monotonic()``): an AssertionError if the server never came
    up, ``[]`` if no alert was stored by then.
    """
    import nats
    from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

    from schemas import Alert, decode

    seen: list[Alert] = []
    nc = None
    while nc is None and time.monotonic() < deadline:
        try:
            nc = await nats.connect(url, connect_timeout=1, max_reconnect_attempts=0)
        except Exception:
            await asyncio.sleep(0.2)
    assert nc is not None, "the embedded server never came up"
    try:
        js = nc.jetstream()
        while not seen and time.monotonic() < deadline:  # the alert may fire before we could subscribe: read the stream
            try:
                sub = await js.pull_subscribe(
                    subject, stream="DERIVED", config=ConsumerConfig(ack_policy=AckPolicy.NONE, deliver_policy=DeliverPolicy.ALL))
                seen += [decode(m.data, Alert) for m in await sub.fetch(10, timeout=1)]
                await sub.unsubscribe()
            except Exception:
                await asyncio.sleep(0.3)
    finally:
        await nc.close()
    return seen


def start_http_server(handler: type[BaseHTTPRequestHandler], context: ssl.SSLContext | None = None) -> ThreadingHTTPServer:
    """``handler`` served on 127.0.0.1 (a free port; TLS with ``context``) by a daemon thread.

    The caller shuts it down (``shutdown()`` then ``server_close()``); ``http_server`` does that for a block.
    """
    srv = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    if context is not None:
        srv.socket = context.wrap_socket(srv.socket, server_side=True)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv


@contextlib.contextmanager
def http_server(handler: type[BaseHTTPRequestHandler], context: ssl.SSLContext | None = None) -> Iterator[ThreadingHTTPServer]:
    """``start_http_server`` for the length of a ``with`` block (or a fixture), then shut down and closed."""
    srv = start_http_server(handler, context)
    try:
        yield srv
    finally:
        srv.shutdown()
        srv.server_close()


@contextlib.contextmanager
def frozen(server: EmbeddedServer) -> Iterator[None]:
    """``server`` paused (SIGSTOP) for a ``with`` block, as a hung host or a cut network looks to its
    clients: their connections stay open, and nothing is read or answered."""
    assert server.running, "the server is not running"
    pid = server._proc.pid  # type: ignore[union-attr]
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(pid, signal.SIGCONT)
