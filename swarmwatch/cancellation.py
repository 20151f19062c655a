"""Stopping asyncio tasks for sure, within a bounded time.

One ``task.cancel()`` is not always enough on Python 3.11: ``asyncio.wait_for``
swallows a cancel that arrives in the loop turn its inner future completes
(CPython gh-86296), and libraries (nats-py's connect loop, Apprise) wrap their
I/O in it. The task then carries on as if nothing happened, and whoever awaits
it waits for its next natural end: a retry backoff, or forever.
"""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

log = logging.getLogger(__name__)

RECANCEL_S = 0.1  # how often a cancel a library may have swallowed is repeated


async def stop_task(task: asyncio.Task[Any], grace_s: float, what: str) -> bool:
    """Cancel ``task`` (again every RECANCEL_S) and wait at most ``grace_s`` seconds; True if it ended."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + grace_s
    while not task.done():
        left = deadline - loop.time()
        if left <= 0:
            log.warning("%s did not stop within %g s; leaving it behind", what, grace_s)
            return False
        task.cancel()
        await asyncio.wait({task}, timeout=min(left, RECANCEL_S))
    if not task.cancelled() and task.exception() is not None:
        log.warning("%s ended with %r while stopping", what, task.exception())
    return True


async def bounded(fn: Callable[[], Awaitable[Any]], timeout_s: float, what: str) -> bool:
    """Run ``fn()`` for at most ``timeout_s``; an overrun or a failure is logged in one line (False), never raised."""
    task = asyncio.ensure_future(fn())
    done, _ = await asyncio.wait({task}, timeout=timeout_s)
    if task not in done:
        log.warning("stopping %s took over %g s; left unfinished (what it had not acked is delivered again)", what, timeout_s)
        await stop_task(task, 2.0, what)
        return False
    if task.cancelled():
        return False
    exc = task.exception()
    if exc is not None:
        log.warning("stopping %s failed: %s", what, str(exc) or type(exc).__name__)
        return False
    return True


async def close_connection(nc: Any, timeout_s: float = 10.0) -> None:
    """Drain ``nc`` when connected (pending publishes and acks go out), else just close it; never raises.

    Both steps are bounded by ``timeout_s``: nats-py's ``close()`` writes out what
    is pending and waits for the socket to close, which lasts for ever when the
    server stopped reading (frozen, or a half-open connection across a network
    cut). A close that overruns drops the socket and what it still held.
    """
    if nc.is_closed:
        return
    if nc.is_connected and await bounded(nc.drain, timeout_s, "the NATS connection (drain)"):
        return
    await close_now(nc, timeout_s)


async def close_now(nc: Any, timeout_s: float = 5.0) -> None:
    """Close ``nc`` within ``timeout_s`` (no drain), dropping the socket if the server does not take what is pending."""
    task = asyncio.ensure_future(nc.close())
    done, _ = await asyncio.wait({task}, timeout=timeout_s)
    if task not in done:
        log.warning("closing the NATS connection took over %g s (the server reads nothing); dropping it", timeout_s)
        await stop_task(task, 2.0, "closing the NATS connection")
        _abort_socket(nc)
    elif not task.cancelled() and task.exception() is not None:
        log.debug("closing the NATS connection: %s", task.exception())


def _abort_socket(nc: Any) -> None:
    """Close ``nc``'s TCP socket at once, discarding unsent data (nats-py has no public way)."""
    writer = getattr(getattr(nc, "_transport", None), "_io_writer", None)
    transport = getattr(writer, "transport", None)
    if transport is not None:
        transport.abort()
