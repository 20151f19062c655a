"""Helpers shared by the integration tests."""
from __future__ import annotations

import asyncio
import time
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
