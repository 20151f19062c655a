"""Silences in JetStream KV and the ``swarmwatch silence`` commands (real nats-server)."""
from __future__ import annotations

import json
import time
from typing import Any

import pytest
from typer.testing import CliRunner

from schemas import Alert, AlertKind, AlertStatus, Severity
from sinks.notify import Silence, SilenceError, SilenceStore, parse_duration, parse_matchers
from swarmwatch.cli import app
from swarmwatch.server import EmbeddedServer


def alert(rule: str = "cpu_high", cluster: str = "c1", node: str = "n1") -> Alert:
    return Alert(id="x", status=AlertStatus.FIRING, severity=Severity.CRITICAL, kind=AlertKind.THRESHOLD, rule=rule,
                 cluster=cluster, node=node, started_at=time.time(), summary="s")


def test_silence_mutes_only_matching_alerts_while_active() -> None:
    now = time.time()
    s = Silence(id="s1", matchers={"rule": "cpu_*", "node": "!n2"}, starts_at=now, ends_at=now + 60)
    assert s.mutes(alert(), now)
    assert not s.mutes(alert(node="n2"), now)
    assert not s.mutes(alert(rule="mem_high"), now)
    assert not s.mutes(alert(), now + 61)


@pytest.mark.parametrize(("text", "seconds"), [("90s", 90), ("30m", 1800), ("2h", 7200), ("1d", 86400), ("1h30m", 5400)])
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("bad", ["", "2", "2x", "h", "-5m", "2h junk"])
def test_bad_duration_is_refused_with_the_value(bad: str) -> None:
    with pytest.raises(SilenceError, match="duration"):
        parse_duration(bad)


@pytest.mark.parametrize("bad", ["rule", "team=x", "rule=", "node=!"])
def test_bad_matcher_is_refused_with_the_value(bad: str) -> None:
    with pytest.raises(SilenceError) as e:
        parse_matchers([bad])
    assert repr(bad) in str(e.value)


@pytest.mark.timeout(30)
async def test_store_adds_lists_and_expires(nc: Any) -> None:
    store = await SilenceStore.open(nc.jetstream())
    a = await store.add({"rule": "cpu_*"}, 3600, comment="maint", created_by="ana")
    b = await store.add({"cluster": "c2"}, 60)
    listed = await store.list()
    assert [s.id for s in listed] == [a.id, b.id]
    assert listed[0].created_by == "ana" and listed[0].comment == "maint"
    await store.expire(a.id)
    assert [s.id for s in await store.list()] == [b.id]
    assert {s.id for s in await store.list(include_expired=True)} == {a.id, b.id}
    with pytest.raises(SilenceError, match="no silence with id 'nope'"):
        await store.expire("nope")


def test_cli_silence_add_list_expire(nats_server: EmbeddedServer) -> None:
    runner = CliRunner()
    url = nats_server.url
    res = runner.invoke(app, ["silence", "add", "--match", "rule=cpu_*", "--match", "cluster=c1", "--duration", "2h",
                              "--comment", "disk swap", "--by", "ops", "--nats", url])
    assert res.exit_code == 0, res.output
    sid = res.output.split()[0]
    res = runner.invoke(app, ["silence", "list", "--nats", url, "--json"])
    assert res.exit_code == 0, res.output
    rows = [json.loads(line) for line in res.output.splitlines() if line.strip()]
    assert [r["id"] for r in rows] == [sid]
    assert rows[0]["matchers"] == {"rule": "cpu_*", "cluster": "c1"} and rows[0]["comment"] == "disk swap"
    assert rows[0]["ends_at"] - rows[0]["starts_at"] == pytest.approx(7200)
    res = runner.invoke(app, ["silence", "list", "--nats", url])
    assert sid in res.output and "active" in res.output
    res = runner.invoke(app, ["silence", "expire", sid, "--nats", url])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["silence", "list", "--nats", url])
    assert "no silences" in res.output
    res = runner.invoke(app, ["silence", "list", "--all", "--nats", url])
    assert sid in res.output and "expired" in res.output


def test_cli_silence_refuses_bad_input_without_traceback(nats_server: EmbeddedServer) -> None:
    runner = CliRunner()
    res = runner.invoke(app, ["silence", "add", "--match", "team=x", "--nats", nats_server.url])
    assert res.exit_code == 2 and "matcher 'team=x' is invalid" in res.output and "Traceback" not in res.output
    res = runner.invoke(app, ["silence", "add", "--match", "rule=x", "--duration", "forever", "--nats", nats_server.url])
    assert res.exit_code == 2 and "duration 'forever'" in res.output
    res = runner.invoke(app, ["silence", "expire", "abc123", "--nats", nats_server.url])
    assert res.exit_code == 2 and "no silence with id 'abc123'" in res.output


@pytest.mark.timeout(30)
async def test_a_deeply_nested_silence_in_the_bucket_is_refused_not_a_crash(nc: Any) -> None:
    """Found by fuzzing (issue 14): msgspec raises RecursionError, not DecodeError, on 5,000 nested lists."""
    store = await SilenceStore.open(nc.jetstream())
    good = await store.add({"rule": "cpu_*"}, 3600)
    await store.kv.put("deep", b'{"junk":' + b"[" * 5000 + b"]" * 5000 + b"}")
    assert [s.id for s in await store.list()] == [good.id]
    with pytest.raises(SilenceError, match="unreadable"):
        await store.expire("deep")
