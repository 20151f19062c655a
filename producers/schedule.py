"""Running a step on a fixed period until a stop event: the sidecar's scrapes and HTTP checks."""
from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable


async def run_every(interval_s: float, stop: asyncio.Event, step: Callable[[], Awaitable[object]],
                    on_error: Callable[[], None]) -> None:
    """Await ``step()`` every ``interval_s`` seconds until ``stop`` is set.

    Steps stay on the grid started at the first one; after falling behind (a slow step, a
    suspended host) the next step waits for the next slot on that grid: no burst to catch up.
    A step that raises calls ``on_error()`` inside the ``except`` (so ``log.exception`` shows
    the traceback) and the loop carries on.
    """
    next_s = time.monotonic()
    while not stop.is_set():
        try:
            await step()
        except Exception:  # noqa: BLE001 - one failed step must not end the loop
            on_error()
        next_s += interval_s
        now = time.monotonic()
        if next_s < now:
            next_s = now + interval_s - ((now - next_s) % interval_s)
        try:
            await asyncio.wait_for(stop.wait(), next_s - now)
        except asyncio.TimeoutError:
            pass
