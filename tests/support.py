"""Helpers shared by the integration tests."""
from __future__ import annotations

import asyncio
import contextlib
import ssl
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable


async def wait_for(cond: Callable[[], Any], timeout_s: float = 20.0, what: str = "condition") -> None:
    """Poll ``cond`` every 50 ms until it is true; fail the test after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if cond():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{what} not met within {timeout_s:g} s")


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
