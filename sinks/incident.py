"""Incident bundles: one folder (or ``.tar.gz``) holding everything about a time window, readable without swarmwatch.

Layout of a bundle::

    manifest.json           window, margins, filters, the alert asked for, row counts, how it was made
    README.md               what is where, and how to read it with DuckDB, pandas or swarmwatch
    report.html             self-contained report: the incident, notifications, plots, nodes, alerts
    store/parquet/<kind>/date=YYYY-MM-DD/cluster=<c>/<kind>-<first>-<last>.parquet
                            raw samples, events, aggregates, alerts, health, trust of the window
                            (a valid file-sink store: `swarmwatch query --store`, `swarmwatch replay --store`)
    notifications.json      per alert: channels and the delivery each confirmed (the notify sink's state), if read
    config/effective.json   the configuration in force (secrets removed)
    config/rules.json       the threshold rules in force; config/<file> copies of the files given

:func:`export_incident` writes one from a store; :func:`open_bundle` unpacks an
archive and returns the folder.
"""
from __future__ import annotations

import datetime as dt
import json
import shutil
import tarfile
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sinks.query import AT, VIEWS, StoreQuery, at
from sinks.rows import COLUMNS, utc_date

BUNDLE_VERSION = 1
EXPORT_CHUNK_ROWS = 2_000_000  # rows read and written at a time: bounds memory for a large window
DEFAULT_MARGIN_S = 900.0  # taken before and after the window: what led to the incident and how it ended
MANIFEST = "manifest.json"
_TIME_COLS = {"metrics": ("ts",), "events": ("ts",), "agg": ("start", "end"), "alerts": ("ts", "started_at", "ended_at"),
              "trust": ("ts",), "health": ("ts",)}


class IncidentError(ValueError):
    """An incident cannot be exported or opened (unknown alert, empty window, bad bundle)."""


@dataclass(slots=True)
class Selection:
    """What goes in a bundle: a window (UNIX s) with margins, and optional cluster/node filters."""

    since: float
    until: float
    margin_s: float = DEFAULT_MARGIN_S
    clusters: list[str] = field(default_factory=list)
    nodes: list[str] = field(default_factory=list)
    alert_id: str | None = None

    @property
    def start(self) -> float:
        return self.since - self.margin_s

    @property
    def end(self) -> float:
        return self.until + self.margin_s


def alert_window(store: str | Path, alert_id: str, now: float | None = None) -> tuple[float, float, str, str]:
    """(first fired, resolved or now, cluster, node) of an alert in the store; IncidentError if it is not there."""
    with StoreQuery(store) as q:
        rows = q.rows(
            "SELECT epoch_ns(min(started_at)) AS s, epoch_ns(max(coalesce(ended_at, ts))) AS e, "
            "bool_or(status = 'resolved') AS resolved, any_value(cluster) AS cluster, any_value(node) AS node "
            "FROM alerts WHERE id = ?", [alert_id],
        )
    if not rows or rows[0]["s"] is None:
        raise IncidentError(f"alert {alert_id!r} is not in the store; list ids with: swarmwatch query \"SELECT DISTINCT id, rule, node FROM alerts\"")
    r = rows[0]
    end = r["e"] / 1e9 if r["resolved"] else max(r["e"] / 1e9, now if now is not None else time.time())
    return r["s"] / 1e9, end, r["cluster"], r["node"]


def _where(kind: str, sel: Selection) -> tuple[str, list[Any]]:
    tcol = '"end"' if kind == "agg" else "ts"
    conds = [f"{tcol} >= {AT}", f"{tcol} <= {AT}"]
    params: list[Any] = [at(sel.start), at(sel.end)]
    if sel.clusters:
        conds.append(f"cluster IN ({', '.join('?' for _ in sel.clusters)})")
        params += sel.clusters
    if sel.nodes and "node" in dict(COLUMNS[kind]):
        conds.append(f"node IN ({', '.join('?' for _ in sel.nodes)})")
        params += sel.nodes
    return " AND ".join(conds), params


def _copy_kind(q: StoreQuery, view: str, kind: str, sel: Selection, dest: Path) -> int:
    """Rows of one view in the window, written as store segments (one per date and cluster) under ``dest``."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from sinks.compaction import write_sorted_parquet
    from sinks.parquet import SCHEMAS
    from sinks.segments import partition_dir, segment_name, write_atomic

    cols = []
    for name, t in COLUMNS[kind]:
        if t == "json":
            cols.append(f'CAST("{name}" AS VARCHAR) AS "{name}"')
        elif t == "labels":
            cols.append(f'CASE WHEN cardinality("{name}") = 0 THEN NULL ELSE "{name}" END AS "{name}"')
        else:
            cols.append(f'"{name}"')
    tcol = '"start"' if kind == "agg" else "ts"
    where, params = _where(kind, sel)
    [stats] = q.rows(f"SELECT min(_seq) AS lo, max(_seq) AS hi, count(*) AS n FROM {view} WHERE {where}", params)
    if not stats["n"]:
        return 0
    # chunks of consecutive seqs (about EXPORT_CHUNK_ROWS rows each) bound memory; their seq ranges never overlap,
    # so the segments they make are never taken for duplicates of each other
    lo, hi = int(stats["lo"]), int(stats["hi"])
    step = max(1, int((hi - lo + 1) * EXPORT_CHUNK_ROWS / stats["n"]) + 1)
    n = 0
    for a in range(lo, hi + 1, step):
        table = q.arrow(
            f"SELECT {', '.join(cols)}, strftime({tcol}, '%Y-%m-%d') AS _date FROM {view} "
            f"WHERE {where} AND _seq >= ? AND _seq < ? ORDER BY _seq",
            [*params, a, a + step],
        )
        for date in sorted(set(table["_date"].to_pylist())):
            day = table.filter(pc.equal(table["_date"], date))
            for cluster in sorted(set(day["cluster"].to_pylist())):
                part = day.filter(pc.equal(day["cluster"], cluster)).drop_columns(["_date"])
                arrays = [part[f.name].cast(f.type) for f in SCHEMAS[kind]]
                t = pa.Table.from_arrays(arrays, schema=SCHEMAS[kind])
                seqs = t["_seq"]
                path = partition_dir(dest, "parquet", kind, date, cluster) / segment_name(
                    kind, int(pc.min(seqs).as_py()), int(pc.max(seqs).as_py()), "parquet")
                write_atomic(path, lambda f, t=t: write_sorted_parquet(f, kind, [t]))
                n += t.num_rows
    return n


def _iso(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def export_incident(
    store: str | Path,
    out: str | Path,
    sel: Selection,
    *,
    notifications: dict[str, Any] | None = None,
    config_files: Sequence[tuple[str, str]] = (),
    effective_config: dict[str, Any] | None = None,
    rules: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Write a bundle of ``sel`` from ``store`` to ``out`` (a folder, or an archive if it ends in .tar.gz/.tgz).

    ``notifications``: per alert id, what the notify sink recorded (None: not
    read). ``config_files``: (name, text) written under ``config/``, secrets
    already removed. Returns the manifest.
    """
    out = Path(out)
    archive = out.name.endswith((".tar.gz", ".tgz"))
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise IncidentError(f"{str(out)!r} already exists; choose a new folder or archive name")
    if not sel.end > sel.start:
        raise IncidentError("the window is empty: --since must be before --until")
    tmp = Path(tempfile.mkdtemp(prefix="swarmwatch-incident-"))
    folder = tmp / (out.name.removesuffix(".tar.gz").removesuffix(".tgz") if archive else "bundle")
    folder.mkdir()
    try:
        counts: dict[str, int] = {}
        with StoreQuery(store, since=sel.start, until=sel.end, clusters=sel.clusters or None) as q:
            for view, kind in VIEWS.items():
                counts[view] = _copy_kind(q, view, kind, sel, folder / "store")
        if not any(counts.values()):
            raise IncidentError(
                f"nothing stored between {_iso(sel.start)} and {_iso(sel.end)}"
                + (f" for cluster {', '.join(sel.clusters)}" if sel.clusters else "")
                + (f" node {', '.join(sel.nodes)}" if sel.nodes else "")
            )
        alert_ids: list[str] = []
        if counts["alerts"]:
            with StoreQuery(folder / "store") as bq:
                alert_ids = sorted(a["id"] for a in bq.rows("SELECT DISTINCT id FROM alerts"))
        notes = None if notifications is None else {k: v for k, v in notifications.items() if k in set(alert_ids)}
        if notes is not None:
            (folder / "notifications.json").write_text(json.dumps(notes, indent=2, sort_keys=True, default=str))
        cdir = folder / "config"
        cdir.mkdir()
        if effective_config is not None:
            (cdir / "effective.json").write_text(json.dumps(effective_config, indent=2, sort_keys=True, default=str))
        if rules is not None:
            (cdir / "rules.json").write_text(json.dumps(rules, indent=2, default=str))
        for name, text in config_files:
            (cdir / Path(name).name).write_text(text)
        manifest = {
            "bundle_version": BUNDLE_VERSION,
            "created_at": _iso(time.time()),
            "alert_id": sel.alert_id,
            "window": {"since": sel.since, "until": sel.until, "since_iso": _iso(sel.since), "until_iso": _iso(sel.until)},
            "margin_s": sel.margin_s,
            "data": {"since": sel.start, "until": sel.end, "since_iso": _iso(sel.start), "until_iso": _iso(sel.end)},
            "clusters": sel.clusters,
            "nodes": sel.nodes,
            "rows": counts,
            "alerts": alert_ids,
            "notifications": "notifications.json" if notes is not None else None,
            "source_store": str(Path(store).resolve()),
        }
        (folder / MANIFEST).write_text(json.dumps(manifest, indent=2))
        (folder / "README.md").write_text(_readme(manifest))
        (folder / "report.html").write_text(_report(folder, manifest, notes, config_files, rules), encoding="utf-8")
        if archive:
            out.parent.mkdir(parents=True, exist_ok=True)
            with tarfile.open(out, "w:gz") as tar:
                tar.add(folder, arcname=folder.name)
        else:
            out.mkdir(parents=True, exist_ok=True)
            for p in folder.iterdir():
                shutil.move(str(p), out / p.name)
        return manifest
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _readme(m: dict[str, Any]) -> str:
    return f"""# swarmwatch incident bundle

Window {m['window']['since_iso']} .. {m['window']['until_iso']}{' (alert ' + m['alert_id'] + ')' if m['alert_id'] else ''},
data from {m['data']['since_iso']} to {m['data']['until_iso']} ({m['margin_s']:g} s margins).

- `report.html`: open in any browser (no network needed).
- `store/parquet/<kind>/date=.../cluster=.../*.parquet`: the stored rows. Kinds: metrics (raw samples),
  events, agg (window aggregates), alerts, health, trust. Times are UTC nanosecond timestamps.
- `notifications.json`: per alert, the channels and what each confirmed delivering (when the notify state was read).
- `config/`: the configuration and rules in force when the bundle was made (secrets removed).

Without swarmwatch (DuckDB):

    SELECT * FROM read_parquet('store/parquet/metrics/*/*/*.parquet', hive_partitioning = true);

pandas: `pandas.read_parquet('store/parquet/alerts')`.

With swarmwatch:

    swarmwatch incident open THIS_FOLDER "SELECT node, max(value) FROM samples WHERE metric = 'cpu.percent' GROUP BY node"
    swarmwatch incident open THIS_FOLDER --replay --rules new-rules.yaml
"""


def _report(folder: Path, m: dict[str, Any], notes: dict[str, Any] | None, config_files: Sequence[tuple[str, str]],
            rules: list[dict[str, Any]] | None) -> str:
    from sinks.report import BUCKETS, ReportError, _img, render_html, report_from_files, svg_chart

    store = folder / "store"
    since, until = m["data"]["since"], m["data"]["until"]
    try:
        rep = report_from_files(str(store), since, until)
    except ReportError:
        from sinks.report import build_report

        rep = build_report(since, until)
    rep.source = "incident bundle"
    facts: list[tuple[str, str]] = [("window", f"{m['window']['since_iso']} → {m['window']['until_iso']}"),
                                    ("alerts in bundle", str(len(m["alerts"])))]
    alert_text = None
    plots = []
    with StoreQuery(store) as q:
        if m["alert_id"]:
            rows = q.records("alerts", "id = ?", [m["alert_id"]], order="ts, _seq")
            if rows:
                a = rows[-1]
                facts = [("alert", str(a["id"])), ("rule", str(a["rule"])), ("severity", str(a["severity"])),
                         ("node", f"{a['cluster']}/{a['node']}"), ("status", str(a["status"]))] + facts
                alert_text = json.dumps(rows, indent=2, default=str)
                if a.get("metric"):
                    pts = q.rows(
                        "SELECT epoch(ts) AS t, value FROM samples WHERE cluster = ? AND node = ? AND metric = ? ORDER BY ts",
                        [a["cluster"], a["node"], a["metric"]],
                    )
                    if pts:
                        span = until - since
                        b: list[list[float]] = [[] for _ in range(BUCKETS)]
                        for p in pts:
                            b[min(BUCKETS - 1, max(0, int((p["t"] - since) / span * BUCKETS)))].append(p["value"])
                        ys: list[float | None] = [max(v) if v else None for v in b]
                        lines: list[tuple[str, list[float | None]]] = [(f"{a['metric']} (max per step)", ys)]
                        if a.get("threshold") is not None:
                            lines.append(("threshold", [float(a["threshold"])] * BUCKETS))
                        plots.append(_img(svg_chart(f"{a['metric']} on {a['cluster']}/{a['node']}", since, until, lines),
                                          f"{a['metric']} around the alert"))
    note_rows = []
    for aid, rec in sorted((notes or {}).items()):
        for ch in rec.get("channels", []):
            note_rows.append({"time": _iso(rec.get("changed_at") or rec.get("received_at") or since), "channel": ch,
                              "status": (rec.get("recorded") or {}).get(ch, "not confirmed"), "alert": aid,
                              "detail": "episode done" if rec.get("done") else "open"})
    incident = {
        "facts": facts,
        "alert": alert_text,
        "plots": plots,
        "notifications": note_rows,
        "notifications_note": "No notification state was read (export with --nats to include it)." if notes is None
        else "No notification was recorded for these alerts.",
    }
    appendix = [(f"config/{Path(n).name}", t) for n, t in config_files]
    if rules is not None:
        appendix.append(("rules in force", json.dumps(rules, indent=2, default=str)))
    appendix.append(("manifest.json", json.dumps(m, indent=2)))
    title = f"swarmwatch incident {m['alert_id']}" if m["alert_id"] else "swarmwatch incident"
    return render_html(rep, title, incident=incident, appendix=appendix)


_SECRET_KEYS = ("token", "password", "secret", "creds", "credential", "key")


def redact_config(value: Any) -> Any:
    """A config dict with the values of secret-looking keys (tokens, passwords, creds) replaced by ``***``."""
    if isinstance(value, dict):
        return {k: ("***" if v not in (None, "") and any(s in str(k).lower() for s in _SECRET_KEYS) else redact_config(v))
                for k, v in value.items()}
    if isinstance(value, list):
        return [redact_config(v) for v in value]
    return value


async def read_notifications(nc: Any, bucket: str = "sw_notify") -> dict[str, Any]:
    """Per alert id, the notify sink's record (channels, confirmed delivery per channel, times); {} without a bucket.

    Raises ``sinks.buckets.BucketReadError`` when the bucket cannot be read whole (never part of it).
    """
    from nats.js.errors import BucketNotFoundError, NotFoundError

    from sinks.buckets import read_bucket

    js = nc.jetstream()
    try:
        kv = await js.key_value(bucket)
    except (BucketNotFoundError, NotFoundError):
        return {}
    out: dict[str, Any] = {}
    for key, value in (await read_bucket(kv)).items():
        if key.startswith("a.") and value:
            try:
                rec = json.loads(value)
            except (ValueError, RecursionError):  # unreadable or nested too deeply: left out
                continue
            out[key[2:]] = rec
    return out


def open_bundle(path: str | Path, into: str | Path | None = None) -> Path:
    """The bundle's folder: ``path`` itself, or an archive unpacked into ``into`` (default a new temp folder)."""
    p = Path(path)
    if p.is_dir():
        folder = p
    elif p.is_file() and p.name.endswith((".tar.gz", ".tgz")):
        dest = Path(into) if into is not None else Path(tempfile.mkdtemp(prefix="swarmwatch-incident-"))
        dest.mkdir(parents=True, exist_ok=True)
        with tarfile.open(p, "r:gz") as tar:
            tar.extractall(dest, filter="data")  # refuses links and paths outside dest
        subs = [d for d in dest.iterdir() if (d / MANIFEST).is_file()]
        if len(subs) != 1:
            raise IncidentError(f"{str(p)!r} does not hold one incident bundle")
        folder = subs[0]
    else:
        raise IncidentError(f"{str(p)!r} is neither a bundle folder nor a .tar.gz archive")
    if not (folder / MANIFEST).is_file():
        raise IncidentError(f"{str(folder)!r} is not an incident bundle (no {MANIFEST})")
    return folder


def read_manifest(folder: str | Path) -> dict[str, Any]:
    """The bundle's manifest."""
    return dict(json.loads((Path(folder) / MANIFEST).read_text()))
