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
