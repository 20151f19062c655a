"""A notify channel stops within a bounded grace period, whatever its delivery is doing.

The hang this guards against: on Python 3.11, ``asyncio.wait_for`` swallows a
cancellation that arrives in the same loop turn as the awaited send completes
(CPython gh-86296). Apprise and the sender both wrap sends in ``wait_for``; a
stop that landed just as Apprise reported an SMTP error was lost, the worker
went on retrying, and ``stop()`` waited on it forever.
"""
from __future__ import annotations

import asyncio
import sys
from http.server import BaseHTTPRequestHandler
from typing import Any

import pytest

from sinks.notify.config import ChannelConfig, DeliveryConfig
from sinks.notify.delivery import ChannelQueue, ChannelSender, DeliveryError, Outbound
from sinks.notify.redaction import Redactor
from tests.support import http_server

FAST_RETRY = DeliveryConfig(backoff_initial_s=0.05, backoff_max_s=0.1, max_retry_s=3600, timeout_s=5)


class SwallowingSender:
    """A channel whose send ignores a cancel once (as a library's ``wait_for`` can), then fails."""

    name = "swallow"
    redacted = "test://swallow"

    def __init__(self) -> None:
        self.calls = 0
        self.in_send = asyncio.Event()

    async def send(self, title: str, body: str, notify_type: str) -> None:
        self.calls += 1
        self.in_send.set()
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            pass  # swallowed
        raise DeliveryError("connection refused")


def _item() -> Outbound:
    return Outbound("c", "title", "body", "failure", [("a1", "firing")])


async def test_a_swallowed_cancel_cannot_make_stop_wait_forever() -> None:
    outcomes: list[tuple[Outbound, bool]] = []

    async def outcome(item: Outbound, delivered: bool) -> None:
        outcomes.append((item, delivered))

    sender = SwallowingSender()
    q = ChannelQueue(sender, FAST_RETRY, outcome)  # type: ignore[arg-type]
    q.start()
    q.put(_item())
    await asyncio.wait_for(sender.in_send.wait(), 10)
    await asyncio.wait_for(q.stop(grace_s=2.0), 30)  # bounded: the grace period, not the retry budget
    assert outcomes == []  # handed back: unconfirmed, so a restart sends it again


async def test_the_senders_own_timeout_does_not_swallow_a_stop() -> None:
    """The exact race: the send completes in the loop turn the cancel arrives."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[bool] = loop.create_future()

    class Instant:
        async def async_notify(self, **_: Any) -> bool:
            return await done

    cfg = ChannelConfig(name="hook", url="json://127.0.0.1:9/hook")
    sender = ChannelSender(cfg, Redactor(), timeout_s=30.0)
    sender._apprise = Instant()  # type: ignore[assignment]
    task = asyncio.create_task(sender.send("t", "b", "info"))
    await asyncio.sleep(0.01)
    done.set_result(True)
    task.cancel()  # same loop turn as the completion
    with pytest.raises(asyncio.CancelledError):
        await task


@pytest.fixture
def down_receiver() -> Any:
    """An HTTP endpoint that answers 503 to every POST (a channel in backoff)."""

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802
            self.rfile.read(int(self.headers.get("content-length", 0)))
            self.send_response(503)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    with http_server(Handler) as srv:
        yield srv.server_port


async def test_stop_during_backoff_on_a_real_channel_returns_and_records_nothing(down_receiver: int) -> None:
    outcomes: list[bool] = []

    async def outcome(item: Outbound, delivered: bool) -> None:
        outcomes.append(delivered)

    cfg = ChannelConfig(name="hook", url=f"json://127.0.0.1:{down_receiver}/hook")
    q = ChannelQueue(ChannelSender(cfg, Redactor(), timeout_s=5.0), FAST_RETRY, outcome)
    q.start()
    q.put(_item())
    while q.failed_attempts < 2:  # in its retry loop
        await asyncio.sleep(0.02)
    await asyncio.wait_for(q.stop(grace_s=2.0), 30)
    assert outcomes == [] and q.sent == 0
