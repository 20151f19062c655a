"""Reports over a time range: summary statistics per node and series, with plots.

Input is stored window aggregates (plus alerts and health), either from the
file sinks' directory (``sinks.reader``) or from the DERIVED stream. The report
is built in one streaming pass with bounded state per series:

- ``windows``, ``samples``, ``mean`` (sample-weighted), ``min``, ``max``, ``last``;
- ``p95``: the 95th percentile of the windows' p95 values (exact up to
  ``RESERVOIR`` windows, a seeded uniform sample beyond);
- ``trend_per_h``: least-squares slope of the window means, per hour.

When a node published several window lengths, only its finest is used, so no
sample counts twice. Renderers: ``render_json``, ``render_csv`` and
``render_html`` (one self-contained file; plots are SVG images embedded as
``data:`` URIs, drawn here without a plotting library).
"""
from __future__ import annotations

import base64
import csv
import io
import math
import random
import time
from array import array
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from schemas import Alert, HealthScore, WindowAggregate, decode, series_key
from schemas.codec import DecodeError

REPORT_FORMATS = ("html", "json", "csv")
RESERVOIR = 512  # window p95 values kept per series for the range's p95
BUCKETS = 120  # time buckets per series for plots
MAX_SERIES = 100_000
KEY_METRICS = (
    ("cpu.percent", "CPU", "%"),
    ("mem.percent", "Memory", "%"),
    ("disk.percent", "Disk", "%"),
    ("net.bytes_recv_per_s", "Network received", "B/s"),
    ("net.bytes_sent_per_s", "Network sent", "B/s"),
    ("gpu.utilization_percent", "GPU", "%"),
    ("net.avg_latency_ms", "Latency", "ms"),
)
CSV_COLUMNS = (
    "cluster", "node", "series", "metric", "labels", "unit", "window_s", "windows", "samples",
    "mean", "min", "max", "p95", "last", "trend_per_h", "first", "last_end",
)


class ReportError(ValueError):
    """A report cannot be made from what the user asked for."""



@dataclass(slots=True)
class SeriesSummary:
    """Running statistics of one node's series over the report range."""

    cluster: str
    node: str
    series: str
    metric: str
    labels: dict[str, str] | None
    unit: str | None
    window_s: float
    windows: int = 0
    samples: int = 0
    wsum: float = 0.0  # sum of mean * count
    min: float = math.inf
    max: float = -math.inf
    last: float = math.nan
    last_end: float = -math.inf
    first: float = math.inf
    # least squares of (hours since range start, window mean)
    sx: float = 0.0
    sy: float = 0.0
    sxx: float = 0.0
    sxy: float = 0.0
    p95s: array = field(default_factory=lambda: array("d"))
    seen_p95: int = 0
    b_sum: array = field(default_factory=lambda: array("d", bytes(8 * BUCKETS)))
    b_n: array = field(default_factory=lambda: array("d", bytes(8 * BUCKETS)))
    b_max: array = field(default_factory=lambda: array("d", [-math.inf] * BUCKETS))

    def add(self, row: dict[str, Any], t0: float, span: float, rng: random.Random) -> None:
        count = int(row.get("count") or 0)
        mean = float(row["mean"])
        end = float(row["end"])
        self.windows += 1
        self.samples += count
        self.wsum += mean * max(count, 1)
        self.min = min(self.min, float(row["min"]))
        self.max = max(self.max, float(row["max"]))
        if end >= self.last_end:
            self.last_end = end
            self.last = float(row["last"])
        self.first = min(self.first, float(row["start"]))
        x = (end - t0) / 3600.0
        self.sx += x
        self.sy += mean
        self.sxx += x * x
        self.sxy += x * mean
        p95 = float(row["p95"])
        self.seen_p95 += 1
        if len(self.p95s) < RESERVOIR:
            self.p95s.append(p95)
        else:
            j = rng.randrange(self.seen_p95)
            if j < RESERVOIR:
                self.p95s[j] = p95
        b = min(BUCKETS - 1, max(0, int((end - t0) / span * BUCKETS)))
        self.b_sum[b] += mean
        self.b_n[b] += 1
        if float(row["max"]) > self.b_max[b]:
            self.b_max[b] = float(row["max"])

    @property
    def mean(self) -> float:
        n = self.samples if self.samples else self.windows
        return self.wsum / n if n else math.nan

    @property
    def p95(self) -> float:
        if not self.p95s:
            return math.nan
        v = sorted(self.p95s)
        return v[min(len(v) - 1, max(0, math.ceil(0.95 * len(v)) - 1))]

    @property
    def trend_per_h(self) -> float:
        n = self.windows
        den = n * self.sxx - self.sx * self.sx
        if n < 2 or den <= 1e-12:
            return 0.0
        return (n * self.sxy - self.sx * self.sy) / den

    def bucket_means(self) -> list[float | None]:
        return [self.b_sum[i] / self.b_n[i] if self.b_n[i] else None for i in range(BUCKETS)]

    def row(self) -> dict[str, Any]:
        def r(v: float) -> float | None:
            return None if not math.isfinite(v) else round(v, 6)

        return {
            "cluster": self.cluster,
            "node": self.node,
            "series": self.series,
            "metric": self.metric,
            "labels": self.labels or {},
            "unit": self.unit,
            "window_s": self.window_s,
            "windows": self.windows,
            "samples": self.samples,
            "mean": r(self.mean),
            "min": r(self.min),
            "max": r(self.max),
            "p95": r(self.p95),
            "last": r(self.last),
            "trend_per_h": r(self.trend_per_h),
            "first": r(self.first),
            "last_end": r(self.last_end),
        }


@dataclass(slots=True)
class Report:
    """Everything a renderer needs."""

    since: float
    until: float
    series: dict[tuple[str, str, str], SeriesSummary] = field(default_factory=dict)
    alerts: list[dict[str, Any]] = field(default_factory=list)
    health: dict[str, list[tuple[float, float]]] = field(default_factory=dict)
    source: str = ""
    generated_at: float = field(default_factory=time.time)
    refused_series: int = 0

    def nodes(self) -> list[tuple[str, str]]:
        return sorted({(c, n) for c, n, _ in self.series})

    def rows(self) -> list[dict[str, Any]]:
        return [self.series[k].row() for k in sorted(self.series)]


class ReportBuilder:
    """Feed rows (the file sinks' flat dicts) or wire messages, then ``build()``."""

    def __init__(
        self,
        since: float,
        until: float,
        *,
        metrics: Sequence[str] = (),
        cluster: str | None = None,
        window_s: float | None = None,
        max_series: int = MAX_SERIES,
    ) -> None:
        if not until > since:
            raise ReportError(f"the range is empty: since {since!r} is not before until {until!r}")
        if window_s is not None and window_s <= 0:
            raise ReportError(f"window {window_s!r} must be a positive number of seconds")
        self.window_s = window_s
        self.report = Report(since, until)
        self.metrics = tuple(metrics)
        self.cluster = cluster
        self.max_series = max_series
        self._span = until - since
        self._rng = random.Random(0)
        self._finest: dict[tuple[str, str], float] = {}
        self._pending: list[dict[str, Any]] = []

    def _wanted(self, metric: str) -> bool:
        return not self.metrics or any(metric == m or metric.startswith(m) for m in self.metrics)

    def add_agg_row(self, row: dict[str, Any]) -> None:
        """One series of one window (the ``agg`` row layout of ``sinks.rows``)."""
        end = float(row["end"])
        if not (self.report.since < end <= self.report.until):
            return
        if self.cluster is not None and row["cluster"] != self.cluster:
            return
        if not self._wanted(row["metric"]):
            return
        node_key = (row["cluster"], row["node"])
        w = float(row["window_s"])
        if self.window_s is not None and w != self.window_s:
            return
        finest = self._finest.get(node_key)
        if finest is None or w < finest:
            if finest is not None:  # a finer window: forget what the coarser one added
                for k in [k for k in self.report.series if k[:2] == node_key]:
                    del self.report.series[k]
            self._finest[node_key] = w
        elif w > finest:
            return
        key = (row["cluster"], row["node"], series_key(row["metric"], row.get("labels")))
        s = self.report.series.get(key)
        if s is None:
            if len(self.report.series) >= self.max_series:
                self.report.refused_series += 1
                return
            s = self.report.series[key] = SeriesSummary(
                row["cluster"], row["node"], key[2], row["metric"], row.get("labels") or None, row.get("unit"), w
            )
        s.add(row, self.report.since, self._span, self._rng)

    def add_agg(self, agg: WindowAggregate) -> None:
        for s in agg.series:
            self.add_agg_row(
                {
                    "window_s": agg.window_s, "start": agg.start, "end": agg.end, "cluster": agg.cluster, "node": agg.node,
                    "metric": s.metric, "labels": s.labels, "unit": s.unit, "count": s.count, "min": s.min, "max": s.max,
                    "mean": s.mean, "p95": s.p95, "last": s.last,
                }
            )

    def add_alert_row(self, row: dict[str, Any]) -> None:
        if self.cluster is not None and row["cluster"] != self.cluster:
            return
        ts = row.get("ts") or row.get("started_at")
        if ts is None or not (self.report.since <= ts <= self.report.until):
            return
        self.report.alerts.append({k: row.get(k) for k in ("ts", "id", "status", "severity", "kind", "rule", "cluster", "node", "summary", "started_at", "ended_at")})

    def add_alert(self, a: Alert) -> None:
        ts = a.ended_at if a.status.value == "resolved" and a.ended_at is not None else a.started_at
        d = {"ts": ts, "id": a.id, "status": a.status.value, "severity": a.severity.value, "kind": a.kind.value, "rule": a.rule,
             "cluster": a.cluster, "node": a.node, "summary": a.summary, "started_at": a.started_at, "ended_at": a.ended_at}
        self.add_alert_row(d)

    def add_health_row(self, row: dict[str, Any]) -> None:
        if self.cluster is not None and row["cluster"] != self.cluster:
            return
        if self.report.since <= row["ts"] <= self.report.until:
            self.report.health.setdefault(row["cluster"], []).append((float(row["ts"]), float(row["overall_health"])))

    def add_message(self, subject: str, data: bytes) -> None:
        """A DERIVED message (sw.agg / sw.alerts / sw.health); others and undecodable ones are skipped."""
        fam = subject.split(".", 2)[1] if subject.count(".") >= 2 else ""
        try:
            if fam == "agg":
                self.add_agg(decode(data, WindowAggregate))
            elif fam == "alerts":
                self.add_alert(decode(data, Alert))
            elif fam == "health":
                h = decode(data, HealthScore)
                self.add_health_row({"cluster": h.cluster, "ts": h.ts, "overall_health": h.overall_health})
        except DecodeError:
            pass

    def build(self) -> Report:
        r = self.report
        r.alerts.sort(key=lambda a: (a["ts"], a["id"]))
        for v in r.health.values():
            v.sort()
        return r


def report_from_files(
    root: str, since: float, until: float, *, cluster: str | None = None, metrics: Sequence[str] = (), window_s: float | None = None
) -> Report:
    """Build from the file sinks' directory (``<root>/<json|parquet>/<kind>/...``), read through :mod:`sinks.query`."""
    from sinks.query import AT, StoreQuery, at
    from sinks.reader import available_format

    if not any(available_format(root, k) for k in ("agg", "alerts", "health")):
        raise ReportError(f"no stored aggregates, alerts or health under {root!r}; expected <root>/json/agg or <root>/parquet/agg")
    b = ReportBuilder(since, until, metrics=metrics, cluster=cluster, window_s=window_s)
    cl = "" if cluster is None else " AND cluster = ?"
    cp = [] if cluster is None else [cluster]
    with StoreQuery(root, since=since, until=until, clusters=None if cluster is None else [cluster]) as q:
        for row in q.records("aggregates", f'"end" > {AT} AND "end" <= {AT}' + cl, [at(since), at(until), *cp], order='"end", _seq'):
            b.add_agg_row(row)
        for row in q.records("alerts", f"ts >= {AT} AND ts <= {AT}" + cl, [at(since), at(until), *cp], order="ts, _seq"):
            b.add_alert_row(row)
        for row in q.records("health", f"ts >= {AT} AND ts <= {AT}" + cl, [at(since), at(until), *cp], order="ts, _seq"):
            b.add_health_row(row)
    b.report.source = f"files under {root}"
    return b.build()


async def report_from_stream(
    nc: Any,
    since: float,
    until: float,
    *,
    cluster: str | None = None,
    metrics: Sequence[str] = (),
    window_s: float | None = None,
    stream: str = "DERIVED",
) -> Report:
    """Build from the DERIVED stream, read once through an ephemeral consumer."""
    from schemas.subjects import window_token
    from sinks.api.backfill import replay

    b = ReportBuilder(since, until, metrics=metrics, cluster=cluster, window_s=window_s)
    c = cluster or "*"
    w = "*" if window_s is None else window_token(window_s)
    subs = [f"sw.agg.{w}.{c}.*", f"sw.alerts.*.{c}.*.*", f"sw.health.{c}"]
    # messages are stored after their window ends; a short margin covers clock skew between hosts
    await replay(nc, subs, since - 120.0, b.add_message, until_s=until, stream=stream)
    b.report.source = f"stream {stream}"
    return b.build()


# ---------------------------------------------------------------- renderers


def _fmt_t(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(ts))


def render_json(report: Report) -> str:
    out = {
        "since": report.since,
        "until": report.until,
        "generated_at": report.generated_at,
        "source": report.source,
        "nodes": len(report.nodes()),
        "series": report.rows(),
        "alerts": report.alerts,
        "health": {c: {"points": len(v), "min": min(h for _, h in v), "mean": sum(h for _, h in v) / len(v), "max": max(h for _, h in v)}
                   for c, v in sorted(report.health.items()) if v},
        "refused_series": report.refused_series,
    }
    return orjson.dumps(out, option=orjson.OPT_INDENT_2).decode()


def render_csv(report: Report) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(CSV_COLUMNS), lineterminator="\n")
    w.writeheader()
    for row in report.rows():
        row = dict(row)
        row["labels"] = ";".join(f"{k}={v}" for k, v in sorted(row["labels"].items()))
        w.writerow({k: "" if row.get(k) is None else row.get(k) for k in CSV_COLUMNS})
    return buf.getvalue()


_PALETTE = ("#2f81f7", "#e5534b", "#57ab5a", "#c69026", "#986ee2", "#39c5cf")


def _nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    if not math.isfinite(lo) or not math.isfinite(hi):
        return []
    if hi - lo < 1e-12:
        hi = lo + 1.0
    raw = (hi - lo) / n
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    t = math.floor(lo / step) * step
    out = []
    while t <= hi + step * 1e-9:
        out.append(round(t, 10))
        t += step
    return out


def _fmt_v(v: float, unit: str | None) -> str:
    if unit == "B/s" or unit == "B":
        for u in ("", "K", "M", "G", "T"):
            if abs(v) < 1024 or u == "T":
                return f"{v:.0f} {u}{unit}" if not u else f"{v:.1f} {u}{unit}"
            v /= 1024
    if abs(v) >= 1e6:
        return f"{v / 1e6:.1f}M"
    if abs(v) >= 1e3:
        return f"{v / 1e3:.1f}k"
    s = f"{v:.2f}".rstrip("0").rstrip(".")
    return s + (unit if unit == "%" else (f" {unit}" if unit else ""))


_TEMPLATES = Path(__file__).resolve().parent / "templates"
_env: Any = None


def _jinja() -> Any:
    """The report templates' environment: autoescape on for every template, so user text is always escaped."""
    global _env
    if _env is None:
        import jinja2

        _env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(str(_TEMPLATES)),
            autoescape=True,  # also for .svg.j2 / .html.j2: markup in a name, unit or label is text, never markup
            undefined=jinja2.StrictUndefined,
            trim_blocks=False,
            keep_trailing_newline=True,
        )
    return _env


def svg_chart(
    title: str,
    x0: float,
    x1: float,
    lines: Sequence[tuple[str, Sequence[float | None]]],
    *,
    band: tuple[Sequence[float | None], Sequence[float | None]] | None = None,
    unit: str | None = None,
    y_range: tuple[float, float] | None = None,
    width: int = 640,
    height: int = 220,
) -> str:
    """A line chart as SVG text: ``lines`` are (label, values at evenly spaced times from x0 to x1)."""
    ml, mr, mt, mb = 64, 12, 28, 40
    pw, ph = width - ml - mr, height - mt - mb
    vals = [v for _, ys in lines for v in ys if v is not None]
    if band is not None:
        vals += [v for v in (*band[0], *band[1]) if v is not None]
    if y_range is not None:
        lo, hi = y_range
    elif vals:
        lo, hi = min(0.0, min(vals)), max(vals) * 1.08 or 1.0
    else:
        lo, hi = 0.0, 1.0
    ticks = _nice_ticks(lo, hi)
    if ticks:
        lo, hi = min(lo, ticks[0]), max(hi, ticks[-1])
    n = max((len(ys) for _, ys in lines), default=0)

    def px(i: int) -> float:
        return ml + (pw * i / (n - 1) if n > 1 else pw / 2)

    def py(v: float) -> float:
        return mt + ph - (v - lo) / (hi - lo) * ph

    yticks = [(py(t), _fmt_v(t, unit)) for t in ticks]
    xticks = []
    for k in range(5):
        f = k / 4
        ts = x0 + (x1 - x0) * f
        label = time.strftime("%H:%M" if x1 - x0 <= 2 * 86400 else "%m-%d %H:%M", time.gmtime(ts))
        xticks.append((ml + pw * f, "start" if k == 0 else "end" if k == 4 else "middle", label))
    band_points = ""
    if band is not None:
        lo_s, hi_s = band
        pts_hi = [(px(i), py(v)) for i, v in enumerate(hi_s) if v is not None]
        pts_lo = [(px(i), py(v)) for i, v in enumerate(lo_s) if v is not None]
        if pts_hi and pts_lo:
            band_points = " ".join(f"{x:.1f},{y:.1f}" for x, y in pts_hi + pts_lo[::-1])
    out_lines = []
    legend_x = float(ml)
    for j, (label, ys) in enumerate(lines):
        segs: list[list[tuple[str, str]]] = [[]]
        for i, v in enumerate(ys):
            if v is None:
                if segs[-1]:
                    segs.append([])
                continue
            segs[-1].append((f"{px(i):.1f}", f"{py(v):.1f}"))
        out_lines.append({"label": label, "color": _PALETTE[j % len(_PALETTE)], "segments": [s for s in segs if s], "legend_x": legend_x})
        legend_x += 24 + 6.5 * len(label)
    return str(_jinja().get_template("chart.svg.j2").render(
        title=title, width=width, height=height, ml=ml, mt=mt, pw=pw, ph=ph, yticks=yticks, xticks=xticks,
        band_points=band_points, lines=out_lines,
    ))


def _img(svg: str, alt: str) -> dict[str, str]:
    """An embedded image for the template: the SVG as a ``data:`` URI (base64, so nothing in it can end the attribute)."""
    return {"alt": alt, "src": "data:image/svg+xml;base64," + base64.b64encode(svg.encode()).decode()}


def _fleet_lines(report: Report, metric: str) -> tuple[list[float | None], list[float | None], list[float | None]] | None:
    """Per bucket: mean over nodes, min and max over nodes of the nodes' bucket means (unlabelled series, or max over labels)."""
    per_node: dict[tuple[str, str], list[float | None]] = {}
    for (c, n, key), s in report.series.items():
        if s.metric != metric:
            continue
        bm = s.bucket_means()
        cur = per_node.get((c, n))
        per_node[(c, n)] = bm if cur is None else [a if b is None else (b if a is None else max(a, b)) for a, b in zip(cur, bm)]
    if not per_node:
        return None
    mean, lo, hi = [], [], []
    for i in range(BUCKETS):
        vs = [v[i] for v in per_node.values() if v[i] is not None]
        mean.append(sum(vs) / len(vs) if vs else None)
        lo.append(min(vs) if vs else None)
        hi.append(max(vs) if vs else None)
    return mean, lo, hi


def report_plots(report: Report) -> list[dict[str, str]]:
    """The report's charts (fleet key metrics, cluster health) as embeddable images."""
    plots: list[dict[str, str]] = []
    for metric, label, unit in KEY_METRICS:
        fl = _fleet_lines(report, metric)
        if fl is None:
            continue
        mean, lo, hi = fl
        svg = svg_chart(
            f"{label} ({metric}) across {len({(c, n) for c, n, _ in report.series})} nodes", report.since, report.until,
            [("fleet mean", mean), ("busiest node", hi)], band=(lo, hi), unit=unit, y_range=(0.0, 100.0) if unit == "%" else None,
        )
        plots.append(_img(svg, f"{label} over time"))
    for cluster, pts in sorted(report.health.items()):
        if not pts:
            continue
        bucket: list[list[float]] = [[] for _ in range(BUCKETS)]
        span = report.until - report.since
        for ts, h in pts:
            bucket[min(BUCKETS - 1, max(0, int((ts - report.since) / span * BUCKETS)))].append(h)
        ys = [sum(b) / len(b) if b else None for b in bucket]
        plots.append(_img(svg_chart(f"Cluster health: {cluster}", report.since, report.until, [("overall health", ys)], y_range=(0.0, 100.0)), f"health of {cluster}"))
    return plots


def render_html(
    report: Report,
    title: str = "swarmwatch report",
    *,
    incident: dict[str, Any] | None = None,
    extra_plots: Sequence[dict[str, str]] = (),
    appendix: Sequence[tuple[str, str]] = (),
) -> str:
    """One self-contained HTML file: summary, fleet plots, health, alerts, per-node table.

    Rendered by a Jinja2 template with autoescape: every name, unit, label and
    summary is text in the page, never markup. ``incident`` (facts, alert,
    notifications), ``extra_plots`` and ``appendix`` (heading, text) are used by
    incident bundles.
    """
    rows = report.rows()
    nodes = report.nodes()
    by_sev: dict[str, int] = {}
    for a in report.alerts:
        if a["status"] == "firing":
            by_sev[a["severity"]] = by_sev.get(a["severity"], 0) + 1
    key_names = [m for m, _, _ in KEY_METRICS]
    by_metric: dict[tuple[str, str, str], list[SeriesSummary]] = {}
    for (c, n, _), s in report.series.items():
        by_metric.setdefault((c, n, s.metric), []).append(s)
    fired: dict[tuple[str, str], int] = {}
    for a in report.alerts:
        if a["status"] == "firing":
            fired[(a["cluster"], a["node"])] = fired.get((a["cluster"], a["node"]), 0) + 1
    node_rows = []
    for c, n in nodes:
        cells: list[dict[str, str] | None] = []
        for m in key_names:
            ss = by_metric.get((c, n, m))
            if not ss:
                cells.append(None)
                continue
            s = max(ss, key=lambda s: s.max)
            cells.append({
                "title": f"min {_fmt_v(s.min, s.unit)} · p95 {_fmt_v(s.p95, s.unit)} · max {_fmt_v(s.max, s.unit)}",
                "mean": _fmt_v(s.mean, s.unit),
                "max": _fmt_v(s.max, s.unit),
            })
        node_rows.append({"cluster": c, "node": n, "cells": cells, "alerts": fired.get((c, n), 0)})
    alerts = [
        {"time": _fmt_t(a["ts"]), "status": a["status"], "severity": a["severity"], "rule": a["rule"], "cluster": a["cluster"],
         "node": a["node"], "summary": a.get("summary") or ""}
        for a in report.alerts[:2000]
    ]
    stat_rows = [
        {"cluster": r["cluster"], "node": r["node"], "series": r["series"], "windows": r["windows"],
         "cells": ["" if r[k] is None else _fmt_v(r[k], r["unit"]) for k in ("mean", "min", "max", "p95", "last")],
         "trend": "" if r["trend_per_h"] is None else f"{r['trend_per_h']:+.3g}"}
        for r in rows[:20_000]
    ]
    return str(_jinja().get_template("report.html.j2").render(
        title=title,
        since=_fmt_t(report.since),
        until=_fmt_t(report.until),
        source=report.source,
        generated=_fmt_t(report.generated_at),
        incident=incident,
        nodes=len(nodes),
        series_count=len(rows),
        fired=sum(by_sev.values()),
        sev_txt=", ".join(f"{v} {k}" for k, v in sorted(by_sev.items())) or "none",
        clusters=len({c for c, _ in nodes} | set(report.health)),
        plots=[*report_plots(report), *extra_plots],
        key_labels=[label for _, label, _ in KEY_METRICS],
        node_rows=node_rows,
        alerts_total=len(report.alerts),
        alerts=alerts,
        stat_rows=stat_rows,
        appendix=list(appendix),
    ))


def render(report: Report, fmt: str) -> str:
    """``html``, ``json`` or ``csv``."""
    if fmt == "html":
        return render_html(report)
    if fmt == "json":
        return render_json(report)
    if fmt == "csv":
        return render_csv(report)
    raise ReportError(f"report format {fmt!r} is unknown; expected one of {', '.join(REPORT_FORMATS)}")


def build_report(
    since: float,
    until: float,
    *,
    aggregates: Iterable[WindowAggregate] = (),
    alerts: Iterable[Alert] = (),
    health: Iterable[HealthScore] = (),
    metrics: Sequence[str] = (),
    cluster: str | None = None,
    window_s: float | None = None,
) -> Report:
    """A report from messages in memory (tests, embedding)."""
    b = ReportBuilder(since, until, metrics=metrics, cluster=cluster, window_s=window_s)
    for a in aggregates:
        b.add_agg(a)
    for al in alerts:
        b.add_alert(al)
    for h in health:
        b.add_health_row({"cluster": h.cluster, "ts": h.ts, "overall_health": h.overall_health})
    b.report.source = "memory"
    return b.build()
