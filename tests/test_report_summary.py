"""``swarmwatch report``: summary statistics per node and metric, as HTML with embedded plots, JSON or CSV."""
from __future__ import annotations

import asyncio
import base64
import csv
import io
import json
import re
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import nats
import pytest
from typer.testing import CliRunner

from schemas import Alert, AlertKind, AlertStatus, HealthScore, SeriesStats, Severity, WindowAggregate, encode, subjects
from sinks.report import ReportError, build_report, render, render_csv, render_html, render_json
from swarmwatch.cli import app
from swarmwatch.server import EmbeddedServer
from swarmwatch.streams import ensure_streams

T0 = float(int(time.time()) // 3600 * 3600 - 7200)  # two hours ago, on the hour


def win(node: str, end: float, mean: float, count: int = 10, window_s: float = 10.0, metric: str = "cpu.percent", cluster: str = "c1") -> WindowAggregate:
    s = SeriesStats(metric, count, mean - 5, mean + 5, mean, mean * count, mean, mean + 4, mean + 5, mean + 1, unit="%")
    return WindowAggregate(cluster, node, window_s, end - window_s, end, [s])


def test_statistics_are_sample_weighted_over_the_finest_window_only() -> None:
    aggs = [
        win("n1", T0 + 10, 10.0, count=10),
        win("n1", T0 + 20, 20.0, count=30),
        win("n1", T0 + 60, 99.0, count=60, window_s=60.0),  # coarser window of the same node: not counted
    ]
    rep = build_report(T0, T0 + 100, aggregates=aggs)
    [row] = rep.rows()
    assert row["series"] == "cpu.percent" and row["window_s"] == 10.0
    assert row["windows"] == 2 and row["samples"] == 40
    assert row["mean"] == pytest.approx((10 * 10 + 20 * 30) / 40)
    assert row["min"] == 5.0 and row["max"] == 25.0
    assert row["last"] == 21.0  # the newest window's last value
    assert row["p95"] == 24.0  # the larger of the two window p95s


def test_only_windows_ending_inside_the_range_count() -> None:
    aggs = [win("n1", T0, 1.0), win("n1", T0 + 10, 2.0), win("n1", T0 + 20, 3.0), win("n1", T0 + 30, 4.0)]
    [row] = build_report(T0, T0 + 20, aggregates=aggs).rows()
    assert row["windows"] == 2 and row["mean"] == 2.5


def test_trend_is_the_slope_of_window_means_per_hour() -> None:
    aggs = [win("n1", T0 + 60 * k, 10.0 + k) for k in range(1, 61)]  # +1 per minute
    [row] = build_report(T0, T0 + 3600, aggregates=aggs).rows()
    assert row["trend_per_h"] == pytest.approx(60.0)


def test_an_empty_range_is_refused() -> None:
    with pytest.raises(ReportError, match="empty"):
        build_report(T0, T0)
    with pytest.raises(ReportError, match="pdf"):
        render(build_report(T0, T0 + 1), "pdf")


def _sample_report():
    aggs = [win(f"n{i}", T0 + 10 * k, 30.0 + i + k % 7) for i in range(3) for k in range(1, 200)]
    aggs += [win("n0", T0 + 10 * k, 50.0, metric="mem.percent") for k in range(1, 200)]
    alerts = [Alert("a1", AlertStatus.FIRING, Severity.CRITICAL, AlertKind.THRESHOLD, "cpu_high", "c1", "n2", T0 + 500, "cpu <hot> & high")]
    health = [HealthScore("c1", T0 + 10 * k, 80.0 + k % 5) for k in range(1, 200)]
    return build_report(T0, T0 + 2000, aggregates=aggs, alerts=alerts, health=health)


def test_html_report_is_one_file_with_its_plots_embedded_as_images() -> None:
    text = render_html(_sample_report())
    srcs = re.findall(r'(?:src|href)="([^"]*)"', text)
    assert srcs and all(s.startswith("data:image/svg+xml;base64,") for s in srcs)  # nothing fetched from elsewhere
    assert len(srcs) == 3  # CPU and memory across the fleet, health of c1
    svg = base64.b64decode(srcs[0].split(",", 1)[1])
    root = ET.fromstring(svg)
    assert root.tag.endswith("svg") and root.findall(".//{http://www.w3.org/2000/svg}polyline")
    assert "cpu &lt;hot&gt; &amp; high" in text  # user text is escaped
    assert ">n2<" in text and "cpu_high" in text


def test_csv_has_one_row_per_node_and_series_and_json_matches() -> None:
    rep = _sample_report()
    rows = list(csv.DictReader(io.StringIO(render_csv(rep))))
    assert {(r["node"], r["series"]) for r in rows} == {("n0", "cpu.percent"), ("n1", "cpu.percent"), ("n2", "cpu.percent"), ("n0", "mem.percent")}
    doc = json.loads(render_json(rep))
    assert doc["nodes"] == 3 and len(doc["series"]) == 4
    assert doc["alerts"][0]["rule"] == "cpu_high"
    assert doc["health"]["c1"]["min"] == 80.0 and doc["health"]["c1"]["max"] == 84.0
    by = {(r["node"], r["series"]): r for r in doc["series"]}
    assert float(next(r for r in rows if r["node"] == "n1" and r["series"] == "cpu.percent")["mean"]) == pytest.approx(by[("n1", "cpu.percent")]["mean"])


async def _store(url: str, since: float) -> None:
    nc = await nats.connect(url)
    js = nc.jetstream()
    await ensure_streams(js)
    for k in range(1, 31):
        for i in range(2):
            await js.publish(subjects.agg(10, "c1", f"n{i}"), encode(win(f"n{i}", since + 10 * k, 10.0 * (i + 1))))
    a = Alert("x1", AlertStatus.FIRING, Severity.WARNING, AlertKind.THRESHOLD, "mem_high", "c1", "n1", since + 100, "mem high")
    await js.publish(subjects.alerts("warning", "c1", "n1", "mem_high"), encode(a))
    await js.publish(subjects.health("c1"), encode(HealthScore("c1", since + 100, 70.0)))
    await nc.close()


def test_report_command_reads_the_derived_stream(nats_server: EmbeddedServer, tmp_path: Path) -> None:
    since = time.time() - 600
    asyncio.run(_store(nats_server.url, since))
    out = tmp_path / "r.json"
    r = CliRunner().invoke(app, ["report", "--nats", nats_server.url, "--since", "15m", "--until", "now", "--format", "json", "-o", str(out)])
    assert r.exit_code == 0, r.output
    doc = json.loads(out.read_text())
    means = {s["node"]: s["mean"] for s in doc["series"]}
    assert means == {"n0": 10.0, "n1": 20.0}
    assert {s["windows"] for s in doc["series"]} == {30}
    assert [a["rule"] for a in doc["alerts"]] == ["mem_high"]


def test_report_command_reads_stored_files(nats_server: EmbeddedServer, tmp_path: Path) -> None:
    from sinks.files import FileSink, FileSinkSettings

    since = time.time() - 600
    root = tmp_path / "store"

    async def store_and_sink() -> None:
        await _store(nats_server.url, since)
        nc = await nats.connect(nats_server.url)
        sink = FileSink(nc, root, "json", FileSinkSettings(flush_interval_s=0.2))
        await sink.start()
        deadline = time.monotonic() + 20
        while not list(root.glob("json/agg/**/*.jsonl")):
            assert time.monotonic() < deadline, "file sink wrote nothing"
            await asyncio.sleep(0.1)
        await asyncio.sleep(0.5)
        await sink.stop()
        await nc.close()

    asyncio.run(store_and_sink())
    r = CliRunner().invoke(app, ["report", "--store", str(root), "--since", "15m", "--format", "csv"])
    assert r.exit_code == 0, r.output
    rows = list(csv.DictReader(io.StringIO(r.stdout)))
    assert {(x["node"], float(x["mean"]), int(x["windows"])) for x in rows} == {("n0", 10.0, 30), ("n1", 20.0, 30)}


def test_report_command_names_bad_input() -> None:
    r = CliRunner().invoke(app, ["report", "--since", "last tuesday", "--format", "json", "--store", "."])
    assert r.exit_code == 2 and "last tuesday" in r.output
    r = CliRunner().invoke(app, ["report", "--format", "pdf"])
    assert r.exit_code == 2 and "pdf" in r.output
    r = CliRunner().invoke(app, ["report", "--store", "/nonexistent/store"])
    assert r.exit_code == 2 and "/nonexistent/store" in r.output


def test_a_window_can_be_chosen_and_other_windows_are_left_out() -> None:
    aggs = [win("n1", T0 + 10, 10.0), win("n1", T0 + 60, 40.0, window_s=60.0)]
    [row] = build_report(T0, T0 + 100, aggregates=aggs, window_s=60.0).rows()
    assert row["window_s"] == 60.0 and row["mean"] == 40.0
    r = CliRunner().invoke(app, ["report", "--window", "90x", "--store", "."])
    assert r.exit_code == 2 and "90x" in r.output


HOSTILE = '"><script>alert(1)</script><img src=x onerror=alert(2) x="'


def test_a_hostile_unit_label_or_node_name_is_text_in_the_html_report_never_markup() -> None:
    s = SeriesStats("cpu.percent", 10, 1.0, 9.0, 5.0, 50.0, 5.0, 8.0, 9.0, 5.0, unit=HOSTILE, labels={HOSTILE: HOSTILE})
    s2 = SeriesStats("cpu.percent", 10, 1.0, 9.0, 5.0, 50.0, 5.0, 8.0, 9.0, 5.0, unit=HOSTILE)
    aggs = [WindowAggregate("c1", "n1", 10.0, T0 + 10 * k - 10, T0 + 10 * k, [s, s2]) for k in range(1, 20)]
    aggs += [WindowAggregate(HOSTILE, HOSTILE, 10.0, T0 + 10 * k - 10, T0 + 10 * k, [s]) for k in range(1, 20)]  # names from files
    alerts = [Alert("a1", AlertStatus.FIRING, Severity.CRITICAL, AlertKind.THRESHOLD, HOSTILE, "c1", "n1", T0 + 50, HOSTILE)]
    text = render_html(build_report(T0, T0 + 200, aggregates=aggs, alerts=alerts), title=HOSTILE)
    assert_no_injected_markup(text)
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text  # shown as text
    for src in re.findall(r'src="data:image/svg\+xml;base64,([^"]*)"', text):
        ET.fromstring(base64.b64decode(src))  # every embedded chart is still well-formed XML


def assert_no_injected_markup(text: str) -> None:
    """No <script> element and no event-handler attribute anywhere in the page."""
    from html.parser import HTMLParser

    found: list[str] = []

    class P(HTMLParser):
        def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
            if tag == "script":
                found.append(tag)
            found.extend(k for k, _ in attrs if k.startswith("on"))

    P().feed(text)
    assert found == []


def test_report_reads_a_server_that_requires_a_token_with_nats_token(tmp_path: Path) -> None:
    token = "operator-token-0123456789"
    srv = EmbeddedServer(tmp_path / "nats", port=0, extra_args=["--auth", token]).start()
    try:
        args = ["report", "--nats", srv.url, "--since", "15m", "--format", "json"]
        refused = CliRunner().invoke(app, args, env={"SWARMWATCH_NATS_TOKEN": None})
        ok = CliRunner().invoke(app, [*args, "--nats-token", token])
    finally:
        srv.stop()
    assert refused.exit_code == 2 and "Authorization Violation" in refused.output
    assert ok.exit_code == 0, ok.output
    assert json.loads(ok.output)["source"] == "stream DERIVED"
