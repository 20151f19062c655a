"""``swarmwatch incident export/open``: one folder or archive with the window's data, config and an HTML report; read back."""
from __future__ import annotations

import asyncio
import json
import re
import tarfile
import time
from pathlib import Path
from typing import Any

import nats
from typer.testing import CliRunner

from sinks.parquet import ParquetFormat
from sinks.rows import utc_date
from sinks.segments import partition_dir, segment_name, write_atomic
from swarmwatch.cli import app
from swarmwatch.server import EmbeddedServer
from tests.test_report_summary import HOSTILE, assert_no_injected_markup

DAY = 86_400.0
T0 = (time.time() // DAY) * DAY - DAY + 7200.0  # yesterday 02:00 UTC
run = CliRunner().invoke


def put(root: Path, kind: str, rows: list[dict[str, Any]], cluster: str = "c1") -> None:
    path = partition_dir(root, "parquet", kind, utc_date(rows[0].get("ts", rows[0].get("start"))), cluster) / segment_name(
        kind, rows[0]["_seq"], rows[-1]["_seq"], "parquet")
    write_atomic(path, lambda f: ParquetFormat().write(f, kind, rows))


def make_store(root: Path) -> None:
    """Two hours of 1 Hz cpu samples for n1, n2 of c1 and n9 of c2; an alert on c1/n1 from T0+3600 to T0+3900."""
    seq = 0
    for cluster, nodes in (("c1", ("n1", "n2")), ("c2", ("n9",))):
        rows = []
        for s in range(0, 7200, 10):
            for n in nodes:
                seq += 1
                v = 97.0 if n == "n1" and 3600 <= s < 3900 else 20.0
                rows.append({"ts": T0 + s, "cluster": cluster, "node": n, "metric": "cpu.percent", "labels": {"core": HOSTILE},
                             "value": v, "unit": HOSTILE, "_seq": seq})
        put(root, "metrics", rows, cluster)
    alert = {"id": "cpu_high-1", "severity": "critical", "kind": "threshold", "rule": "cpu_high", "cluster": "c1", "node": "n1",
             "started_at": T0 + 3600, "summary": HOSTILE, "metric": "cpu.percent", "threshold": 95.0, "details": {"for_s": 0}}
    put(root, "alerts", [
        {**alert, "ts": T0 + 3600, "status": "firing", "ended_at": None, "value": 97.0, "_seq": 9001},
        {**alert, "ts": T0 + 3900, "status": "resolved", "ended_at": T0 + 3900, "value": 20.0, "_seq": 9002},
    ])
    put(root, "health", [{"ts": T0 + s, "cluster": "c1", "overall_health": 90.0, "peer_count": 2, "expected_peers": 2,
                          "connection_success_rate": 1.0, "avg_latency": 5.0, "bandwidth_usage": 0.0, "components": {},
                          "nodes": {}, "_seq": 9100 + s} for s in range(0, 7200, 60)])


def test_export_by_alert_takes_its_window_with_margins_and_its_cluster_only(tmp_path: Path) -> None:
    store = tmp_path / "store"
    make_store(store)
    out = tmp_path / "bundle"
    res = run(app, ["incident", "export", "--store", str(store), "--alert", "cpu_high-1", "--margin", "10m", "-o", str(out)])
    assert res.exit_code == 0, res.output
    m = json.loads((out / "manifest.json").read_text())
    assert m["window"]["since"] == T0 + 3600 and m["window"]["until"] == T0 + 3900
    assert m["data"]["since"] == T0 + 3000 and m["data"]["until"] == T0 + 4500
    assert m["clusters"] == ["c1"] and m["alerts"] == ["cpu_high-1"]
    assert m["rows"]["samples"] == 2 * (1500 // 10 + 1) and m["rows"]["alerts"] == 2 and m["rows"]["health"] == 1500 // 60 + 1
    assert json.loads((out / "config" / "rules.json").read_text())  # the rules in force
    q = run(app, ["incident", "open", str(out), "SELECT DISTINCT node, cluster FROM samples ORDER BY node", "-f", "json"])
    assert json.loads(q.output) == [{"node": "n1", "cluster": "c1"}, {"node": "n2", "cluster": "c1"}]


def test_the_bundle_report_is_self_contained_and_escapes_hostile_units_labels_and_summaries(tmp_path: Path) -> None:
    store = tmp_path / "store"
    make_store(store)
    out = tmp_path / "b"
    assert run(app, ["incident", "export", "--store", str(store), "--alert", "cpu_high-1", "-o", str(out)]).exit_code == 0
    text = (out / "report.html").read_text()
    assert_no_injected_markup(text)
    srcs = re.findall(r'(?:src|href)="([^"]*)"', text)
    assert srcs and all(s.startswith("data:image/svg+xml;base64,") for s in srcs)  # opens without swarmwatch or network
    assert "cpu_high-1" in text and "No notification state was read" in text


def test_an_archive_by_time_window_opens_back_to_the_same_rows(tmp_path: Path) -> None:
    store = tmp_path / "store"
    make_store(store)
    arch = tmp_path / "inc.tar.gz"
    since, until = str(T0 + 600), str(T0 + 1200)
    res = run(app, ["incident", "export", "--store", str(store), "--since", since, "--until", until, "--margin", "0s",
                    "--cluster", "c2", "-o", str(arch)])
    assert res.exit_code == 0, res.output
    with tarfile.open(arch) as tar:
        assert any(n.endswith("/report.html") for n in tar.getnames())
    info = run(app, ["incident", "open", str(arch), "--into", str(tmp_path / "x")])
    assert info.exit_code == 0 and "61 samples" in info.output
    q = run(app, ["incident", "open", str(arch), "SELECT count(*) AS n, min(epoch(ts)) AS lo FROM samples", "-f", "json",
                  "--into", str(tmp_path / "y")])
    assert json.loads(q.output) == [{"n": 61, "lo": T0 + 600}]


def test_export_refuses_an_unknown_alert_and_an_empty_window_clearly(tmp_path: Path) -> None:
    store = tmp_path / "store"
    make_store(store)
    res = run(app, ["incident", "export", "--store", str(store), "--alert", "nope", "-o", str(tmp_path / "o")])
    assert res.exit_code == 2 and "'nope' is not in the store" in res.output
    res = run(app, ["incident", "export", "--store", str(store), "--since", "2001-01-01T00:00:00Z", "--until", "2001-01-01T01:00:00Z",
                    "-o", str(tmp_path / "o")])
    assert res.exit_code == 2 and "nothing stored" in res.output


def test_notifications_of_the_alerts_come_from_the_notify_state_on_nats(nats_server: EmbeddedServer, tmp_path: Path) -> None:
    store = tmp_path / "store"
    make_store(store)

    async def record() -> None:
        nc = await nats.connect(nats_server.url)
        kv = await nc.jetstream().create_key_value(bucket="sw_notify", history=1)
        rec = {"alert": {"id": "cpu_high-1"}, "channels": ["oncall"], "received_at": T0 + 3600, "changed_at": T0 + 3901,
               "recorded": {"oncall": "resolved"}, "done": T0 + 3901}
        await kv.put("a.cpu_high-1", json.dumps(rec).encode())
        await kv.put("a.other-alert", json.dumps({**rec, "alert": {"id": "other-alert"}}).encode())
        await nc.close()

    asyncio.run(record())
    out = tmp_path / "b"
    res = run(app, ["incident", "export", "--store", str(store), "--alert", "cpu_high-1", "--nats", nats_server.url, "-o", str(out)])
    assert res.exit_code == 0, res.output
    notes = json.loads((out / "notifications.json").read_text())
    assert list(notes) == ["cpu_high-1"] and notes["cpu_high-1"]["recorded"] == {"oncall": "resolved"}
    assert "<td>oncall</td><td>resolved</td>" in (out / "report.html").read_text()


def test_a_bundle_replays_offline_with_other_rules(tmp_path: Path) -> None:
    store = tmp_path / "store"
    make_store(store)
    out = tmp_path / "b"
    assert run(app, ["incident", "export", "--store", str(store), "--alert", "cpu_high-1", "-o", str(out)]).exit_code == 0
    rules = tmp_path / "new.yaml"
    rules.write_text("defaults: false\nrules:\n  - {name: hot, metric: cpu.percent, op: '>', threshold: 90, severity: critical}\n")
    import subprocess
    import sys

    res = subprocess.run([sys.executable, "-m", "swarmwatch", "incident", "open", str(out), "--replay", "--rules", str(rules)],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    row = next(line for line in res.stdout.splitlines() if line.startswith("hot"))
    assert row.split()[1:3] == ["0", "1"]  # not fired then, fires now


def test_a_large_window_is_exported_in_chunks_that_read_back_whole(tmp_path: Path, monkeypatch: Any) -> None:
    import sinks.incident

    monkeypatch.setattr(sinks.incident, "EXPORT_CHUNK_ROWS", 100)  # many chunks of the same partition
    store = tmp_path / "store"
    make_store(store)
    out = tmp_path / "b"
    res = run(app, ["incident", "export", "--store", str(store), "--since", str(T0), "--until", str(T0 + 7200), "--margin", "0s",
                    "-o", str(out)])
    assert res.exit_code == 0, res.output
    assert len(list((out / "store" / "parquet" / "metrics").rglob("*.parquet"))) > 10
    q = run(app, ["incident", "open", str(out), "SELECT count(*) AS n, count(DISTINCT (_seq, node)) AS u FROM samples", "-f", "json"])
    assert json.loads(q.output) == [{"n": 3 * 720, "u": 3 * 720}]
