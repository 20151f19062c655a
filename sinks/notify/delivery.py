"""Delivery through Apprise: one queue and one worker per channel, retries with backoff.

A channel that is down only delays its own queue; the others keep sending.
Each message is retried with exponential backoff until ``max_retry_s`` after
it was queued, then reported as undeliverable (the sink dead-letters it to
``sw.dlq.notify``). Messages to one channel go out in order, so a resolve never
overtakes its firing.

``stop`` returns within a grace period whatever a delivery is doing: the
message in flight (or in backoff) is handed back unconfirmed, so a restart
sends it again. Python 3.11's ``asyncio.wait_for`` swallows a cancel that
arrives as its future completes (CPython gh-86296), and Apprise wraps sends in
it, so one cancel is not enough: the worker also checks a closing flag and
``stop`` repeats the cancel until the grace period ends.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field

import apprise

from sinks.notify.config import ChannelConfig, DeliveryConfig, redact_url
from sinks.notify.redaction import Redactor
from swarmwatch.cancellation import stop_task

log = logging.getLogger(__name__)

STOP_GRACE_S = 5.0  # the longest a channel's stop waits for its worker


class DeliveryError(RuntimeError):
    """One attempt to send failed; the message is already scrubbed of secrets."""


@dataclass(slots=True)
class Outbound:
    """One message for one channel and the alert (id, status) pairs it carries."""

    channel: str
    title: str
    body: str
    notify_type: str
    refs: list[tuple[str, str]]
    queued_at: float = field(default_factory=time.time)
    attempts: int = 0
    error: str = ""


Outcome = Callable[[Outbound, bool], Awaitable[None]]
"""Called once per message: ``(message, delivered)``; not delivered means undeliverable."""


class ChannelSender:
    """One Apprise destination; ``send`` raises DeliveryError on failure."""

    def __init__(self, config: ChannelConfig, redactor: Redactor, timeout_s: float) -> None:
        self.name = config.name
        self.redacted = redact_url(config.url.get_secret_value())
        self.redactor = redactor
        self.timeout_s = timeout_s
        self._apprise = apprise.Apprise()
        if not self._apprise.add(config.url.get_secret_value()):
            raise ValueError(f"channel {config.name!r}: Apprise cannot use its URL ({self.redacted})")

    async def send(self, title: str, body: str, notify_type: str) -> None:
        try:
            async with asyncio.timeout(self.timeout_s):  # not wait_for: it can swallow a stop's cancel on 3.11
                # text: Apprise escapes it for HTML and Markdown targets, so label values never render as markup
                result = await self._apprise.async_notify(
                    title=title, body=body, notify_type=notify_type, body_format=apprise.NotifyFormat.TEXT
                )
        except TimeoutError:
            raise DeliveryError(f"no answer within {self.timeout_s:g} s") from None
        except Exception as exc:  # a plugin crash: report, do not leak the URL
            raise DeliveryError(self.redactor(f"{type(exc).__name__}: {exc}")) from None
        if not result:
            detail = "; ".join(
                e.message for e in result.logs() if getattr(e, "level", "") in ("WARNING", "ERROR", "CRITICAL")
            )
            raise DeliveryError(self.redactor(detail or f"Apprise reported {getattr(result, 'status', 'failure')}"))


class ChannelQueue:
    """A channel's FIFO and the task that drains it with retries."""

    def __init__(self, sender: ChannelSender, config: DeliveryConfig, outcome: Outcome) -> None:
        self.sender = sender
        self.config = config
        self.outcome = outcome
        self.queue: asyncio.Queue[Outbound] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self.sent = 0
        self.failed_attempts = 0
        self.undeliverable = 0
        self.up = True

    @property
    def name(self) -> str:
        return self.sender.name

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"notify-channel-{self.name}")

    async def stop(self, grace_s: float = STOP_GRACE_S) -> None:
        """Stop within ``grace_s``: the delivery in flight is cancelled; it and the queued
        messages are not confirmed, so a restart sends them again."""
        task, self._task = self._task, None
        if task is None:
            return
        self._closing = True
        await stop_task(task, grace_s, f"channel {self.name!r}")

    def put(self, item: Outbound) -> None:
        self.queue.put_nowait(item)

    async def _run(self) -> None:
        while not self._closing:
            item = await self.queue.get()
            delivered = await self._deliver(item)
            if delivered is None or self._closing:
                return  # stopping: the message is handed back unconfirmed
            try:
                await self.outcome(item, delivered)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("recording the outcome of a message to channel %r failed", self.name)

    async def _deliver(self, item: Outbound) -> bool | None:
        """True: sent; False: undeliverable within ``max_retry_s``; None: stopped first."""
        delay = self.config.backoff_initial_s
        deadline = item.queued_at + self.config.max_retry_s
        while True:
            item.attempts += 1
            try:
                await self.sender.send(item.title, item.body, item.notify_type)
            except DeliveryError as exc:
                item.error = str(exc)
                self.failed_attempts += 1
                if self.up:
                    log.warning("channel %r (%s) failed: %s; retrying", self.name, self.sender.redacted, item.error)
                self.up = False
                if self._closing:
                    return None
                if time.time() + delay > deadline:
                    self.undeliverable += 1
                    return False
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.config.backoff_max_s)
                continue
            if not self.up:
                log.warning("channel %r (%s) recovered after %d attempts", self.name, self.sender.redacted, item.attempts)
            self.up = True
            self.sent += 1
            return True
