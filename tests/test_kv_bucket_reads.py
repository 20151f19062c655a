"""Reading a KV bucket whole ends: all of it, or an error, never a wait for ever and never a part.

nats-py's ``watchall()`` marks the end of a bucket's current values with a
``None`` entry, and its iterator has no timeout. The first spec reproduces a
real way the marker is lost (an empty bucket whose watch gets a heartbeat
before nats-py has its ``consumer_info`` reply: the heartbeat counts as a
delivery, so no marker is queued); the others drop the marker of chosen
watches to stand for any lost one. Everything else is a real nats-server.
"""
from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from typing import Any

import pytest
from nats.js.client import JetStreamContext
from nats.js.kv import KeyValue

import sinks.buckets
from processors.alerting import AlertTracker
from schemas import Severity, codec
from sinks.buckets import BucketReadError
from sinks.notify import NotifySink, SilenceError, SilenceStore, parse_config
from swarmwatch.streams import ensure_streams
from tests.support import http_server, wait_for

FAST_IDLE_S = 0.3  # the stalled watches here deliver nothing at all; a short bound keeps the specs short


class _LosesEndMarker(asyncio.Queue):  # type: ignore[type-arg]
    """A watcher's update queue that never receives the end-of-values marker."""

    async def put(self, item: Any) -> None:
        if item is not None:
            await super().put(item)


@pytest.fixture
def lose_end_marker(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, int]]:
    """``lose[bucket] = n``: the next n watches of that bucket never deliver their end marker."""
    lose: dict[str, int] = {}
    original = KeyValue.watch

    async def watch(self: KeyValue, *args: Any, **kwargs: Any) -> KeyValue.KeyWatcher:
        w = await original(self, *args, **kwargs)
        if lose.get(self._name, 0) > 0:
            lose[self._name] -= 1
            q = _LosesEndMarker(maxsize=256)
            while not w._updates.empty():
                await q.put(w._updates.get_nowait())
            w._updates = q
        return w

    monkeypatch.setattr(KeyValue, "watch", watch)
    monkeypatch.setattr(sinks.buckets, "KV_IDLE_S", FAST_IDLE_S)
    yield lose


@pytest.mark.timeout(60)
async def test_listing_an_empty_silence_bucket_whose_watch_got_a_heartbeat_first_ends(nc: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    original = JetStreamContext.PushSubscription.consumer_info
    calls = []

    async def answered_after_a_heartbeat(self: Any) -> Any:
        calls.append(self)
        if len(calls) == 1:  # a slow reply: the consumer's 5 s idle heartbeat comes first
            deadline = time.monotonic() + 20
            while self.delivered == 0:
                assert time.monotonic() < deadline, "the watch's consumer sent no heartbeat within 20 s"
                await asyncio.sleep(0.05)
        return await original(self)

    monkeypatch.setattr(JetStreamContext.PushSubscription, "consumer_info", answered_after_a_heartbeat)
    monkeypatch.setattr(sinks.buckets, "KV_IDLE_S", FAST_IDLE_S)
    store = await SilenceStore.open(nc.jetstream())
    assert await asyncio.wait_for(store.list(), 45) == []
    assert len(calls) == 2  # the stalled watch was given up and a fresh one read the bucket


@pytest.mark.timeout(30)
async def test_a_silence_listing_whose_watches_all_stall_fails_with_an_error_naming_the_bucket(
    nc: Any, lose_end_marker: dict[str, int]
) -> None:
    store = await SilenceStore.open(nc.jetstream())
    await store.add({"rule": "cpu_high"}, 3600)
    lose_end_marker["sw_silences"] = 99
    with pytest.raises(SilenceError, match="'sw_silences' could not be read whole: 3 attempts"):
        await asyncio.wait_for(store.list(), 20)


# --- the notify sink: its state is restored whole, or it does not start ---------------
class _Webhook:
    def __init__(self) -> None:
        self.got: list[dict[str, Any]] = []


@pytest.fixture
def webhook() -> Iterator[tuple[_Webhook, int]]:
    hook = _Webhook()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802
            hook.got.append(json.loads(self.rfile.read(int(self.headers.get("content-length", 0)))))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    with http_server(Handler) as srv:
        yield hook, srv.server_port


def _config(port: int) -> Any:
    return parse_config({
        "channels": [{"name": "webhook", "url": f"json://127.0.0.1:{port}/hook"}],
        "grouping": {"critical": {"group_wait_s": 0, "group_interval_s": 0.2, "repeat_interval_s": 3600}},
        "delivery": {"backoff_initial_s": 0.1, "backoff_max_s": 0.5, "max_retry_s": 30},
        "tick_s": 0.05,
    }, "test-notify.yaml")


async def _three_paged_alerts(nc: Any, cfg: Any, hook: _Webhook) -> int:
    """Fire three critical alerts through a sink until their pages are recorded, then stop it; how many pages."""
    js = nc.jetstream()
    await ensure_streams(js)
    sink = NotifySink(nc, cfg)
    await asyncio.wait_for(sink.start(), 30)
    try:
        t = AlertTracker("cpu_high", severity=Severity.CRITICAL)
        for n in ("n1", "n2", "n3"):
            for e in t.update("c1", n, True, time.time(), 99.0):
                await js.publish(e.subject, codec.encode(e.message), headers={"Nats-Msg-Id": e.msg_id})
        await wait_for(lambda: len(sink.grouper.alerts) == 3 and all(
            tr.recorded == {"webhook": "firing"} for tr in sink.grouper.alerts.values()), 30, "the page of 3 alerts recorded")
    finally:
        await asyncio.wait_for(sink.stop(), 30)
    assert hook.got
    return len(hook.got)


@pytest.mark.timeout(60)
async def test_a_notify_sink_whose_state_watch_stalls_once_restores_every_paged_alert(
    nc: Any, webhook: tuple[_Webhook, int], lose_end_marker: dict[str, int]
) -> None:
    hook, port = webhook
    cfg = _config(port)
    await _three_paged_alerts(nc, cfg, hook)
    lose_end_marker.update({"sw_notify": 1, "sw_silences": 1})
    sink = NotifySink(nc, cfg)
    await asyncio.wait_for(sink.start(), 30)
    try:
        assert lose_end_marker == {"sw_notify": 0, "sw_silences": 0}  # both loads did stall once
        assert sorted(tr.alert.node for tr in sink.grouper.alerts.values()) == ["n1", "n2", "n3"]
        assert all(tr.recorded == {"webhook": "firing"} for tr in sink.grouper.alerts.values())  # paged: not again
    finally:
        await asyncio.wait_for(sink.stop(), 30)


@pytest.mark.timeout(60)
async def test_a_notify_sink_whose_state_cannot_be_read_whole_does_not_start(
    nc: Any, webhook: tuple[_Webhook, int], lose_end_marker: dict[str, int]
) -> None:
    hook, port = webhook
    cfg = _config(port)
    pages = await _three_paged_alerts(nc, cfg, hook)
    lose_end_marker["sw_notify"] = 99
    sink = NotifySink(nc, cfg)
    try:
        with pytest.raises(BucketReadError, match="'sw_notify' could not be read whole"):
            await asyncio.wait_for(sink.start(), 30)
        assert sink.puller is None and not sink.grouper.alerts  # it consumes nothing and pages nobody
    finally:
        await asyncio.wait_for(sink.stop(), 30)
    assert len(hook.got) == pages
