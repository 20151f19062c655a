"""``swarmwatch replay``: the same alerts as the live run, from JetStream or the store, nothing left behind."""
from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import Iterable
from pathlib import Path

import nats
import pytest

from processors import Operator, Rule, Runtime, ThresholdRules, TumblingWindows
from schemas import Alert, Event, Severity, MetricBatch, Sample, decode, encode, subjects
from sinks.rows import message_rows, utc_date
from sinks.segments import get_format, partition_dir, segment_name, write_atomic
from swarmwatch.replay import Fired, count_pages, metrics_wanted, replay, replay_stream, store_items, stream_alerts
from swarmwatch.server import EmbeddedServer
from swarmwatch.streams import ensure_streams
from tests.support import stored, wait_for

RULES = [
    {"name": "mem_high", "metric": "mem.percent", "threshold": 90, "severity": "critical", "for": "3s", "keep_firing_for": "2s"},
    {"name": "cpu_busy", "metric": "cpu.percent", "threshold": 80, "severity": "warning", "hysteresis": 5},
]


def rules() -> list[Rule]:
    return [Rule.model_validate(r) for r in RULES]


def operators() -> list[Operator]:
    return [ThresholdRules(rules()), TumblingWindows([10, 60], allowed_lateness_s=1)]


def fleet(t0: float, seconds: int = 120, nodes: int = 3) -> list[tuple[str, bytes]]:
    """Messages in publish order: each node's mem and cpu cross their thresholds at different times."""
    msgs: list[tuple[str, bytes]] = []
    for i in range(seconds):
        for n in range(nodes):
            node = f"n{n}"
            mem = 95.0 if (20 + 10 * n) <= i < (50 + 10 * n) or 80 <= i < 82 else 40.0 + n
            cpu = 85.0 if (i // (15 + n)) % 3 == 1 else 30.0
            b = MetricBatch("c1", node, t0 + i, [Sample("mem.percent", mem), Sample("cpu.percent", cpu), Sample("disk.percent", 50.0, labels={"mount": "/"})], seq=i)
            msgs.append((subjects.metrics("c1", node), encode(b)))
        if i == 60:
            e = Event("c1", "n0", t0 + i, "peer.joined", {"peer": "n9"})
            msgs.append((subjects.events("c1", "n0", "peer.joined"), encode(e)))
    return msgs


async def publish(js: object, msgs: Iterable[tuple[str, bytes]]) -> None:
    for k, (subj, data) in enumerate(msgs):
        await js.publish(subj, data, headers={"Nats-Msg-Id": f"m{k}"})  # type: ignore[attr-defined]


def write_store(root: Path, msgs: Iterable[tuple[str, bytes]], fmt: str = "parquet") -> None:
    """What the file sinks would write for these messages (seq = publish position + 1)."""
    parts: dict[tuple[str, str, str], list[dict]] = {}
    for seq, (subj, data) in enumerate(msgs, 1):
        kind, ts, cluster, rows = message_rows(subj, data, seq)
        parts.setdefault((kind, utc_date(ts), cluster), []).extend(rows)
    f = get_format(fmt)
    for (kind, date, cluster), rows in parts.items():
        path = partition_dir(root, fmt, kind, date, cluster) / segment_name(kind, rows[0]["_seq"], rows[-1]["_seq"], f.ext)
        write_atomic(path, lambda fh, kind=kind, rows=rows: f.write(fh, kind, rows))


def key(a: Alert) -> tuple:
    return (a.id, a.status.value, a.severity.value, a.rule, a.cluster, a.node, a.started_at, a.ended_at, a.value, a.details.get("series"))


async def live_alerts(nc: nats.NATS, msgs: list[tuple[str, bytes]]) -> list[Alert]:
    js = nc.jetstream()
    rt = Runtime(nc, operators(), name="live", checkpoint_interval_s=0.2)
    await rt.start()
    await publish(js, msgs)
    await wait_for(lambda: rt.stats.processed >= len(msgs), what="live run processed everything")
    await asyncio.sleep(0.3)
    await rt.stop()
    return [decode(d, Alert) for d in await stored(js, "sw.alerts.>")]


async def test_replay_gives_the_same_alerts_as_the_live_run_one_by_one(nc: nats.NATS) -> None:
    js = nc.jetstream()
    await ensure_streams(js)
    t0 = time.time() - 600
    msgs = fleet(t0)
    live = await live_alerts(nc, msgs)
    assert len(live) >= 10  # the input makes every rule fire and resolve on every node

    res = await replay_stream(nc, operators(), t0, t0 + 200)
    assert res.items == len(msgs) and res.invalid == 0
    assert [key(f.alert) for f in res.alerts] == [key(a) for a in live]
    assert res.outputs["agg"] > 0 and res.stats.by_operator["windows"].inputs == len(msgs) - 1

    then = await stream_alerts(nc, t0, t0 + 200)
    assert [key(f.alert) for f in then] == [key(a) for a in live]


async def test_replay_leaves_no_consumer_and_publishes_nothing_on_live_subjects(nc: nats.NATS) -> None:
    js = nc.jetstream()
    await ensure_streams(js)
    t0 = time.time() - 600
    msgs = fleet(t0, seconds=60)
    await publish(js, msgs)
    isolated: list[str] = []

    async def on_replay(m: object) -> None:
        isolated.append(m.subject)  # type: ignore[attr-defined]

    await nc.subscribe("replay.>", cb=on_replay)
    before = (await js.stream_info("DERIVED")).state.messages
    res = await replay_stream(nc, operators(), t0, t0 + 60, publish_prefix="replay.t1")
    await nc.flush()
    await wait_for(lambda: len(isolated) >= res.stats.outputs)
    assert res.alerts and all(s.startswith("replay.t1.sw.") for s in isolated)
    assert (await js.stream_info("DERIVED")).state.messages == before
    assert (await js.stream_info("TELEMETRY")).state.consumer_count == 0


async def test_cluster_node_and_time_filters_select_what_is_replayed(nc: nats.NATS) -> None:
    js = nc.jetstream()
    await ensure_streams(js)
    t0 = time.time() - 600
    msgs = fleet(t0, seconds=40)
    await publish(js, msgs)
    res = await replay_stream(nc, operators(), t0 + 10, t0 + 30, cluster="c1", node="n1")
    assert res.items == 20 and res.first_ts == t0 + 10 and res.last_ts == t0 + 29
    assert {f.alert.node for f in res.alerts} <= {"n1"}


def test_the_store_replays_the_same_alerts_as_the_messages(tmp_path: Path) -> None:
    t0 = float(int(time.time()) // 86400 * 86400 - 86400 + 3600 * 23 + 3500)  # crosses a UTC midnight
    msgs = fleet(t0, seconds=200)
    write_store(tmp_path, msgs)
    direct = replay(msgs, operators(), since=t0, until=t0 + 200)
    items = list(store_items(tmp_path, t0, t0 + 200, chunk_s=45))
    assert len(items) == len(msgs)
    from_store = replay(items, operators(), since=t0, until=t0 + 200, source="store")
    assert [key(f.alert) for f in from_store.alerts] == [key(f.alert) for f in direct.alerts] and direct.alerts


def test_a_what_if_reads_only_the_metrics_its_rules_look_at_and_fires_the_same(tmp_path: Path) -> None:
    t0 = time.time() - 7200
    msgs = fleet(t0, seconds=120)
    write_store(tmp_path, msgs)
    want = metrics_wanted([ThresholdRules(rules())])
    assert want == {"mem.percent", "cpu.percent"}
    items = list(store_items(tmp_path, t0, t0 + 120, metrics=want))
    assert {s.name for b in items if isinstance(b, MetricBatch) for s in b.samples} == want
    direct = replay(msgs, [ThresholdRules(rules())])
    projected = replay(items, [ThresholdRules(rules())])
    assert [key(f.alert) for f in projected.alerts] == [key(f.alert) for f in direct.alerts] and direct.alerts
    assert metrics_wanted(operators()) is None  # windows read every metric


def test_segments_written_twice_after_a_crash_replay_each_message_once(tmp_path: Path) -> None:
    t0 = time.time() - 7200
    msgs = fleet(t0, seconds=30)
    write_store(tmp_path, msgs[:50])
    write_store(tmp_path, msgs)  # the same messages again, in one wider segment
    items = list(store_items(tmp_path, t0, t0 + 30))
    assert len([i for i in items if isinstance(i, MetricBatch)]) == len([m for m in msgs if m[0].startswith("sw.metrics.")])


def test_pages_follow_notification_grouping_and_severity_routing() -> None:
    t0 = time.time() - 600
    res = replay(fleet(t0), operators(), since=t0, until=t0 + 200)
    pages = count_pages(res.alerts, until=t0 + 200)
    firing = [f for f in res.alerts if f.alert.status.value == "firing"]
    assert 0 < pages <= 2 * len(firing)  # grouped: at most one firing and one resolve message per alert
    infos = [Fired(f.at, Alert(**{**{k: getattr(f.alert, k) for k in f.alert.__struct_fields__}, "severity": Severity.INFO})) for f in res.alerts]
    assert count_pages(infos, until=t0 + 200) == 0  # info goes to the log only


def _cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "swarmwatch", "replay", *args], capture_output=True, text=True, timeout=timeout)


async def test_replay_command_sets_what_fired_then_next_to_what_new_rules_would_fire(nats_server: EmbeddedServer, tmp_path: Path) -> None:
    nc = await nats.connect(nats_server.url)
    js = nc.jetstream()
    await ensure_streams(js)
    t0 = time.time() - 600
    msgs = fleet(t0)
    live = await live_alerts(nc, msgs)
    new_rules = tmp_path / "new.yaml"
    new_rules.write_text(
        "defaults: false\nrules:\n"
        "  - {name: mem_high, metric: mem.percent, threshold: 90, severity: critical, for: 3s, keep_firing_for: 2s}\n"
        "  - {name: mem_warm, metric: mem.percent, threshold: 41.5, severity: warning}\n"
    )
    report = tmp_path / "report.json"
    res = await asyncio.to_thread(
        _cli, "--nats", nats_server.url, "--since", str(t0), "--until", str(t0 + 200), "--rules", str(new_rules),
        "--operators", "rules,windows", "--no-progress", "-o", str(report), "--store", str(tmp_path / "none"),
    )
    assert res.returncode == 0, res.stderr
    doc = json.loads(report.read_text())
    assert doc["source"] == "jetstream" and doc["then_known"] and doc["inputs"] == len(msgs)
    by_rule = {r["rule"]: r for r in doc["rules"]}
    live_mem = sum(1 for a in live if a.rule == "mem_high" and a.status.value == "firing")
    assert by_rule["mem_high"]["fired_then"] == by_rule["mem_high"]["fired_now"] == live_mem
    assert by_rule["cpu_busy"]["fired_now"] == 0 and by_rule["cpu_busy"]["fired_then"] > 0  # dropped from the new rules
    # n2 idles at 42 % (one long episode); n0 and n1 cross 41.5 only in their two 95 % episodes each
    assert by_rule["mem_warm"]["fired_then"] == 0 and by_rule["mem_warm"]["fired_now"] == 5
    assert doc["pages_then"] > 0 and doc["pages_now"] > 0
    assert all(a["rule"] != "cpu_busy" for a in doc["only_now"])
    assert "mem_warm" in res.stdout and "pages: then" in res.stdout
    assert (await js.stream_info("TELEMETRY")).state.consumer_count == 1  # only the live processor's durable
    await nc.close()


def test_replay_command_runs_offline_from_the_store(tmp_path: Path) -> None:
    t0 = time.time() - 7200
    msgs = fleet(t0, seconds=60)
    write_store(tmp_path / "store", msgs)
    res = _cli("--offline", "--store", str(tmp_path / "store"), "--since", str(t0), "--until", str(t0 + 60), "--operators", "rules", "--json", "--no-progress")
    assert res.returncode == 0, res.stderr
    doc = json.loads(res.stdout)
    assert doc["source"] == "store" and doc["inputs"] == len(msgs) and doc["now"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--speed", "fast"), "--speed 'fast' is invalid"),
        (("--since", "1h", "--until", "2h"), "since"),
        (("--node", "a.b"), "node"),
        (("--operator", "nope_xyz:op"), "cannot import 'nope_xyz'"),
    ],
)
def test_bad_replay_arguments_are_one_clear_error(args: tuple[str, ...], message: str) -> None:
    res = _cli("--offline", *args, timeout=60)
    assert res.returncode == 2 and message in res.stderr and "Traceback" not in res.stderr


def test_speed_paces_event_time_at_n_times_real_time(monkeypatch: pytest.MonkeyPatch) -> None:
    from swarmwatch.cli import replay as cli_replay

    clock = {"t": 100.0}
    slept: list[float] = []

    def sleep(s: float) -> None:
        slept.append(s)
        clock["t"] += s

    monkeypatch.setattr(cli_replay.time, "monotonic", lambda: clock["t"])
    monkeypatch.setattr(cli_replay.time, "sleep", sleep)
    t0 = time.time() - 600
    items = [MetricBatch("c1", "n1", t0 + 10 * i, [Sample("x", 1.0)]) for i in range(4)]
    assert list(cli_replay.paced(items, 10.0)) == items
    assert slept == pytest.approx([1.0, 1.0, 1.0])  # 10 s of event time per wall second
    assert cli_replay.parse_speed("max") is None and cli_replay.parse_speed("25x") == 25.0
    with pytest.raises(ValueError, match="must be > 0"):
        cli_replay.parse_speed("0")


def test_store_labels_come_back_as_one_dict_per_row_as_written() -> None:
    """The map column is decoded by label set; every row still gets its own dict, in stored key order."""
    import pyarrow as pa

    from swarmwatch.replay import _label_dicts

    rows: list[list[tuple[str, str | None]] | None] = [
        [("core", "0")], None, [], [("core", "1")], [("core", "0")], [("mount", "/"), ("dev", "sda")],
        [("dev", "sda"), ("mount", "/")], [("gpu", None)], [("core", "0")],
    ]
    col = pa.chunked_array([pa.array(rows[:4], type=pa.map_(pa.string(), pa.string())), pa.array(rows[4:], type=pa.map_(pa.string(), pa.string()))])
    got = _label_dicts(col)
    want = [dict(r) if r else None for r in rows]
    assert got == want
    assert [list(d) if d else d for d in got] == [list(d) if d else d for d in want]  # key order kept
    assert got[0] is not got[4] and got[4] is not got[8]  # no shared dicts between samples
