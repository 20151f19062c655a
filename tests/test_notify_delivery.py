"""End to end: alerts on JetStream -> NotifySink -> real local receivers.

Receivers: an aiosmtpd SMTP server (e-mail through Apprise's mailto plugin),
and local HTTP servers for a generic JSON webhook (Apprise ``json://``), for
Slack and for Telegram. The Slack and Telegram channels use Apprise's real
``slack://`` and ``tgram://`` plugins; only their API base URL (a class
constant, https://hooks.slack.com / https://api.telegram.org) is pointed at
the local server, so the real payloads are what arrive.
"""
from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Iterator
from http.server import BaseHTTPRequestHandler
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from apprise.plugins.slack import NotifySlack
from apprise.plugins.telegram import NotifyTelegram

from processors.alerting import AlertTracker
from schemas import AlertKind, DeadLetter, Severity, codec
from sinks.notify import NotifySink, SilenceStore, parse_config
from swarmwatch.server import free_port
from swarmwatch.streams import ensure_streams
from tests.support import start_http_server

SLACK_TOKEN = "B0SECRET99/XyzzySlackTokenValue"
BOT_TOKEN = "123456789:SecretBotTokenValue"
HOOK_SECRET = "hooksecret-7f3a9c"


# --- receivers ----------------------------------------------------------------
class HttpReceiver:
    """A local HTTP endpoint recording every POST; ``down`` makes it answer 503."""

    def __init__(self, reply: bytes = b"ok", content_type: str = "text/plain") -> None:
        self.got: list[dict[str, Any]] = []
        self.down = False
        self.refused = 0
        rec = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                n = int(self.headers.get("content-length", 0))
                body = self.rfile.read(n)
                if rec.down:
                    rec.refused += 1
                    self.send_response(503)
                    self.end_headers()
                    return
                rec.got.append({"path": self.path, "body": body, "at": time.time()})
                self.send_response(200)
                self.send_header("content-type", content_type)
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = start_http_server(Handler)
        self.port = self.server.server_port

    def texts(self) -> list[str]:
        return [r["body"].decode(errors="replace") for r in self.got]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class SmtpReceiver:
    """aiosmtpd on 127.0.0.1 keeping every message."""

    def __init__(self) -> None:
        self.got: list[str] = []
        rec = self

        class Handler:
            async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
                rec.got.append(envelope.content.decode(errors="replace"))
                return "250 OK"

        self.port = free_port()
        self.controller = Controller(Handler(), hostname="127.0.0.1", port=self.port)
        self.controller.start()

    def texts(self) -> list[str]:
        return self.got

    def close(self) -> None:
        self.controller.stop()


class Receivers:
    def __init__(self) -> None:
        self.webhook = HttpReceiver(b'{"ok": true}', "application/json")
        self.slack = HttpReceiver(b"ok")
        self.telegram = HttpReceiver(b'{"ok": true, "result": {}}', "application/json")
        self.email = SmtpReceiver()

    def all(self) -> dict[str, Any]:
        return {"webhook": self.webhook, "slack": self.slack, "telegram": self.telegram, "email": self.email}

    def close(self) -> None:
        for r in self.all().values():
            r.close()


@pytest.fixture
def receivers(monkeypatch: pytest.MonkeyPatch) -> Iterator[Receivers]:
    r = Receivers()
    monkeypatch.setattr(NotifySlack, "webhook_url", f"http://127.0.0.1:{r.slack.port}/services")
    monkeypatch.setattr(NotifyTelegram, "notify_url", f"http://127.0.0.1:{r.telegram.port}/bot")
    monkeypatch.setenv("SW_TEST_SLACK_TOKEN", SLACK_TOKEN)
    monkeypatch.setenv("SW_TEST_BOT_TOKEN", BOT_TOKEN)
    monkeypatch.setenv("SW_TEST_HOOK_SECRET", HOOK_SECRET)
    try:
        yield r
    finally:
        r.close()


def make_config(r: Receivers, **overrides: Any) -> Any:
    """Four channels; Telegram is not primary (criticals only). Timers short for tests."""
    doc: dict[str, Any] = {
        "channels": [
            {"name": "webhook", "url": f"json://127.0.0.1:{r.webhook.port}/hook/${{SW_TEST_HOOK_SECRET}}"},
            {"name": "slack", "url": "slack://T0TEAM/${SW_TEST_SLACK_TOKEN}/#ops"},
            {"name": "telegram", "url": "tgram://${SW_TEST_BOT_TOKEN}/-1001234/", "primary": False},
            {"name": "email", "url": f"mailto://127.0.0.1:{r.email.port}?from=sw@example.com&to=ops@example.com"},
        ],
        "grouping": {
            "critical": {"group_wait_s": 0, "group_interval_s": 0.5, "repeat_interval_s": 3600},
            "warning": {"group_wait_s": 0.5, "group_interval_s": 0.5, "repeat_interval_s": 3600},
        },
        "delivery": {"backoff_initial_s": 0.1, "backoff_max_s": 0.5, "max_retry_s": 30, "max_alerts_per_message": 50},
        "tick_s": 0.05,
    }
    for k, v in overrides.items():
        doc[k] = v
    return parse_config(doc, "test-notify.yaml")


@pytest.fixture
async def js(nc: Any) -> Any:
    j = nc.jetstream()
    await ensure_streams(j)
    return j


@pytest.fixture
async def sinks(nc: Any) -> AsyncIterator[list[NotifySink]]:
    """Sinks started by a test are stopped at its end."""
    started: list[NotifySink] = []
    yield started
    for s in started:
        await s.stop()


async def start_sink(nc: Any, cfg: Any, started: list[NotifySink]) -> NotifySink:
    s = NotifySink(nc, cfg)
    await s.start()
    started.append(s)
    return s


async def publish(js: Any, emits: list[Any]) -> None:
    for e in emits:
        await js.publish(e.subject, codec.encode(e.message), headers={"Nats-Msg-Id": e.msg_id})


async def wait_for(cond: Any, timeout_s: float = 30.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


def tracker(rule: str = "cpu_high", severity: Severity = Severity.CRITICAL, kind: AlertKind = AlertKind.THRESHOLD) -> AlertTracker:
    return AlertTracker(rule, kind=kind, severity=severity)


# --- tests ----------------------------------------------------------------------
@pytest.mark.timeout(60)
async def test_firing_alert_arrives_once_per_channel_then_its_resolve(nc: Any, js: Any, receivers: Receivers, sinks: list[NotifySink]) -> None:
    sink = await start_sink(nc, make_config(receivers), sinks)
    t = tracker()
    now = time.time()
    await publish(js, t.update("c1", "n1", True, now, 97.0, metric="cpu.percent", threshold=95.0, summary="CPU 97 %"))
    recs = receivers.all()
    await wait_for(lambda: all(len(r.texts()) >= 1 for r in recs.values()), what="one message on every channel")
    await asyncio.sleep(1.0)  # several group intervals: nothing more may come
    for name, r in recs.items():
        assert len(r.texts()) == 1, name
        assert "n1" in r.texts()[0] and "cpu_high" in r.texts()[0], name
    hook = json.loads(receivers.webhook.got[0]["body"])
    assert hook["title"].startswith("[FIRING:1]") and hook["type"] == "failure"
    assert receivers.webhook.got[0]["path"] == f"/hook/{HOOK_SECRET}"
    assert json.loads(receivers.slack.got[0]["body"])["channel"] == "#ops"
    assert json.loads(receivers.telegram.got[0]["body"])["chat_id"] == -1001234

    await publish(js, t.update("c1", "n1", False, now + 5, 50.0, summary="CPU back to 50 %"))
    await wait_for(lambda: all(len(r.texts()) >= 2 for r in recs.values()), what="the resolve on every channel")
    await asyncio.sleep(0.8)
    for name, r in recs.items():
        assert len(r.texts()) == 2, name
        assert "RESOLVED:1" in r.texts()[1], name
    assert json.loads(receivers.webhook.got[1]["body"])["type"] == "success"
    assert sink.stats()["undeliverable"] == 0
    await wait_for(lambda: not sink.grouper.alerts, what="the finished episode to be retired")


@pytest.mark.timeout(60)
async def test_thirty_nodes_on_one_rule_make_one_warning_message_on_primary_channels_only(
    nc: Any, js: Any, receivers: Receivers, sinks: list[NotifySink]
) -> None:
    await start_sink(nc, make_config(receivers), sinks)
    t = tracker("disk_high", Severity.WARNING)
    now = time.time()
    emits = [e for i in range(30) for e in t.update("c1", f"n{i:02d}", True, now, 88.0, summary="disk 88 %")]
    await publish(js, emits)
    await wait_for(lambda: len(receivers.webhook.got) >= 1 and len(receivers.email.got) >= 1 and len(receivers.slack.got) >= 1)
    await asyncio.sleep(1.5)
    assert len(receivers.webhook.got) == 1
    assert len(receivers.slack.got) == 1
    assert len(receivers.email.got) == 1
    assert receivers.telegram.got == []  # not primary: criticals only
    body = json.loads(receivers.webhook.got[0]["body"])
    assert body["title"].startswith("[FIRING:30]") and body["type"] == "warning"
    assert all(f"c1/n{i:02d} disk_high" in body["message"] for i in range(30))


@pytest.mark.timeout(60)
async def test_info_alerts_go_to_the_log_only(nc: Any, js: Any, receivers: Receivers, sinks: list[NotifySink], caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="sinks.notify.worker")
    sink = await start_sink(nc, make_config(receivers), sinks)
    t = tracker("peer_churn", Severity.INFO)
    await publish(js, t.update("c1", "n1", True, time.time(), 3.0, summary="3 peers left"))
    await wait_for(lambda: sink.stats()["log_only"] == 1)
    await asyncio.sleep(0.5)
    assert all(r.texts() == [] for r in receivers.all().values())
    assert any("peer_churn" in rec.getMessage() and "info firing" in rec.getMessage() for rec in caplog.records)


@pytest.mark.timeout(60)
async def test_flapping_value_produces_no_storm_and_its_final_state_is_sent(
    nc: Any, js: Any, receivers: Receivers, sinks: list[NotifySink]
) -> None:
    cfg = make_config(receivers, flap={"firings": 3, "window_s": 60, "quiet_s": 2.0})
    sink = await start_sink(nc, cfg, sinks)
    t = tracker()
    now = time.time()
    for i in range(40):  # value crosses the threshold up and down 20 times within ~4 s
        await publish(js, t.update("c1", "n7", i % 2 == 0, now + i * 0.1, 97.0 if i % 2 == 0 else 60.0))
        await asyncio.sleep(0.1)
    assert not t.is_firing("c1", "n7")
    await wait_for(lambda: not sink.grouper.alerts, timeout_s=20, what="flapping to settle and the final resolve to go out")
    texts = [json.loads(r["body"])["title"] for r in receivers.webhook.got]
    assert len(texts) <= 4, texts  # first page, the flapping notice, the final resolve (+ at most one resolve before detection)
    assert texts[0].startswith("[FIRING:1]")
    assert any("FLAPPING:1" in x for x in texts)
    assert "RESOLVED:1" in texts[-1]
    assert sum("FIRING" in x for x in texts) == sum("RESOLVED" in x for x in texts)  # every page is resolved
    assert sink.stats()["undeliverable"] == 0


@pytest.mark.timeout(90)
async def test_channel_that_is_down_recovers_with_nothing_lost_and_others_are_not_blocked(
    nc: Any, js: Any, receivers: Receivers, sinks: list[NotifySink]
) -> None:
    sink = await start_sink(nc, make_config(receivers), sinks)
    receivers.webhook.down = True
    t1, t2 = tracker("cpu_high"), tracker("mem_high")
    now = time.time()
    await publish(js, t1.update("c1", "n1", True, now, 99.0))
    await wait_for(lambda: len(receivers.slack.got) == 1 and len(receivers.email.got) == 1, what="the healthy channels")
    await wait_for(lambda: receivers.webhook.refused >= 2, what="retries against the down webhook")
    await publish(js, t2.update("c1", "n2", True, now + 1, 98.0))
    await wait_for(lambda: len(receivers.slack.got) == 2, what="the second alert on a healthy channel while the webhook is down")
    assert receivers.webhook.got == []
    receivers.webhook.down = False
    await wait_for(lambda: len(receivers.webhook.got) == 2, what="both alerts on the recovered webhook")
    bodies = " ".join(receivers.webhook.texts())
    assert "cpu_high" in bodies and "mem_high" in bodies
    assert sink.stats()["undeliverable"] == 0
    assert sink.stats()["channels"]["webhook"]["up"] is True


@pytest.mark.timeout(60)
async def test_undeliverable_message_goes_to_the_dlq_without_secrets(
    nc: Any, js: Any, receivers: Receivers, sinks: list[NotifySink], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    dead: list[DeadLetter] = []

    async def on_dlq(msg: Any) -> None:
        dead.append(codec.decode(msg.data, DeadLetter))

    sub = await nc.subscribe("sw.dlq.notify", cb=on_dlq)
    cfg = make_config(receivers, delivery={"backoff_initial_s": 0.1, "backoff_max_s": 0.2, "max_retry_s": 0.6})
    sink = await start_sink(nc, cfg, sinks)
    receivers.webhook.down = True
    receivers.slack.down = True
    await publish(js, tracker().update("c1", "n1", True, time.time(), 99.0))
    await wait_for(lambda: len(dead) == 2, what="two dead letters")
    await sub.unsubscribe()
    assert len(receivers.email.got) == 1  # the healthy channel was served
    assert {d.subject for d in dead} == {"notify.webhook", "notify.slack"}
    assert sink.stats()["undeliverable"] == 2
    for d in dead:
        payload = json.loads(d.data)
        assert payload["alerts"][0]["status"] == "firing"
        for secret in (SLACK_TOKEN, "XyzzySlackTokenValue", HOOK_SECRET, BOT_TOKEN):
            assert secret not in d.reason
    logged = "\n".join(rec.getMessage() for rec in caplog.records)
    assert "undeliverable" in logged
    for secret in ("XyzzySlackTokenValue", HOOK_SECRET, "SecretBotTokenValue"):
        assert secret not in logged
    # the outcome is recorded: the dead-lettered page is not retried forever, the episode stays open until resolved
    await asyncio.sleep(0.5)
    assert len(dead) == 2


@pytest.mark.timeout(60)
async def test_silence_suppresses_matching_alerts_only(nc: Any, js: Any, receivers: Receivers, sinks: list[NotifySink]) -> None:
    store = await SilenceStore.open(js)
    await store.add({"rule": "cpu_*", "cluster": "c1"}, 3600, comment="maintenance", created_by="test")
    sink = await start_sink(nc, make_config(receivers), sinks)
    now = time.time()
    await publish(js, tracker("cpu_high").update("c1", "n1", True, now, 99.0))
    await publish(js, tracker("cpu_high").update("c2", "n1", True, now, 99.0))  # other cluster: not silenced
    await publish(js, tracker("mem_high").update("c1", "n2", True, now, 99.0))  # other rule: not silenced
    await wait_for(lambda: len(receivers.webhook.got) == 2, what="the two unsilenced alerts")
    await asyncio.sleep(1.0)
    assert len(receivers.webhook.got) == 2
    bodies = " ".join(receivers.webhook.texts())
    assert "c2/n1 cpu_high" in bodies and "c1/n2 mem_high" in bodies and "c1/n1 cpu_high" not in bodies
    assert sink.stats()["muted_silence"] == 1


@pytest.mark.timeout(60)
async def test_silence_added_while_running_applies_and_expiring_it_pages_what_still_fires(
    nc: Any, js: Any, receivers: Receivers, sinks: list[NotifySink]
) -> None:
    sink = await start_sink(nc, make_config(receivers), sinks)
    store = await SilenceStore.open(js)
    sil = await store.add({"node": "n9"}, 3600)
    await wait_for(lambda: sil.id in sink.silences.silences, what="the sink to see the new silence")  # type: ignore[union-attr]
    await publish(js, tracker().update("c1", "n9", True, time.time(), 99.0))
    await wait_for(lambda: sink.stats()["muted_silence"] == 1, what="the sink to mute the silenced alert")
    await asyncio.sleep(0.5)  # and it pages nothing
    assert receivers.webhook.got == []
    await store.expire(sil.id)
    await wait_for(lambda: len(receivers.webhook.got) == 1, what="the page once the silence expired")
    assert "c1/n9" in receivers.webhook.texts()[0]


@pytest.mark.timeout(60)
async def test_cluster_wide_outage_inhibits_the_per_node_alerts_it_explains(
    nc: Any, js: Any, receivers: Receivers, sinks: list[NotifySink]
) -> None:
    await start_sink(nc, make_config(receivers), sinks)
    now = time.time()
    outage = tracker("cluster_unreachable", kind=AlertKind.NETWORK)
    await publish(js, outage.update("c1", "_cluster", True, now, 0.0, summary="cluster c1 unreachable"))
    await wait_for(lambda: len(receivers.webhook.got) == 1)
    dead = tracker("node_unresponsive", kind=AlertKind.LIVENESS)
    await publish(js, [e for n in ("n1", "n2", "n3") for e in dead.update("c1", n, True, now + 1, None)])
    await publish(js, dead.update("c2", "n1", True, now + 1, None))  # another cluster: not explained by c1's outage
    await wait_for(lambda: len(receivers.webhook.got) == 2)
    await asyncio.sleep(1.0)
    assert len(receivers.webhook.got) == 2
    second = receivers.webhook.texts()[1]
    assert "c2/n1 node_unresponsive" in second and "c1/n1" not in second


@pytest.mark.timeout(90)
async def test_restart_neither_repages_nor_loses_a_resolve(nc: Any, js: Any, receivers: Receivers, sinks: list[NotifySink]) -> None:
    cfg = make_config(receivers)
    sink = await start_sink(nc, cfg, sinks)
    t = tracker()
    now = time.time()
    firing = [e for n in ("n1", "n2", "n3") for e in t.update("c1", n, True, now, 99.0)]
    await publish(js, firing)
    await wait_for(lambda: len(receivers.webhook.got) >= 1 and len(receivers.slack.got) >= 1)
    await wait_for(lambda: sum("FIRING" in x for x in receivers.webhook.texts()) and all(
        all(v == "firing" for v in tr.recorded.values()) and len(tr.recorded) == 4 for tr in sink.grouper.alerts.values()
    ), what="delivery outcomes recorded")
    await sink.stop()
    sinks.remove(sink)
    webhook_before = len(receivers.webhook.got)
    fired_nodes = " ".join(receivers.webhook.texts())
    assert all(f"c1/{n}" in fired_nodes for n in ("n1", "n2", "n3"))

    # while the sink is down: the processor re-emits the firings (a replay) and the nodes recover
    await publish(js, [type(e)(e.subject, e.message, e.msg_id + ":replay") for e in firing])
    await publish(js, [e for n in ("n1", "n2", "n3") for e in t.update("c1", n, False, now + 10, 40.0)])

    sink2 = await start_sink(nc, cfg, sinks)
    await wait_for(lambda: len(receivers.webhook.got) > webhook_before, what="the resolve after the restart")
    await asyncio.sleep(1.0)
    after = receivers.webhook.texts()[webhook_before:]
    assert len(after) == 1
    assert json.loads(after[0])["title"].startswith("[RESOLVED:3]")
    assert not any("FIRING" in json.loads(x)["title"] for x in after)
    await wait_for(lambda: not sink2.grouper.alerts, what="episodes retired")


@pytest.mark.timeout(60)
async def test_invalid_alert_message_is_dead_lettered_and_acked(nc: Any, js: Any, receivers: Receivers, sinks: list[NotifySink]) -> None:
    dead: list[DeadLetter] = []

    async def on_dlq(msg: Any) -> None:
        dead.append(codec.decode(msg.data, DeadLetter))

    await nc.subscribe("sw.dlq.notify", cb=on_dlq)
    sink = await start_sink(nc, make_config(receivers), sinks)
    await js.publish("sw.alerts.critical.c1.n1.cpu_high", b'{"not": "an alert"}')
    await wait_for(lambda: len(dead) == 1)
    assert dead[0].subject == "sw.alerts.critical.c1.n1.cpu_high" and "invalid Alert" in dead[0].reason
    assert sink.stats()["invalid"] == 1
    for _ in range(50):
        info = await js.consumer_info("DERIVED", "sink-notify")
        if info.num_ack_pending == 0:
            break
        await asyncio.sleep(0.05)
    assert info.num_ack_pending == 0
