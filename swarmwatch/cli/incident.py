"""``swarmwatch incident export`` and ``swarmwatch incident open``: share a window of the store, read it back."""
from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Optional

import typer

from swarmwatch.cli import app
from swarmwatch.cli.common import NATS_CREDS_OPTION, NATS_TOKEN_OPTION, config_or_exit, fail, nats_overrides

incident_app = typer.Typer(help="Incident bundles: export a window (raw samples, aggregates, alerts, health, trust, config, HTML report) and open one.",
                           no_args_is_help=True)
app.add_typer(incident_app, name="incident")


async def _notifications(url: str, cfg: Any, bucket: str) -> dict[str, Any]:
    import nats as nats_client

    from nats.errors import ConnectionClosedError

    from sinks.buckets import BucketReadError
    from sinks.incident import read_notifications
    from swarmwatch.cancellation import close_now
    from swarmwatch.connect import connect_options, redact_url

    opts = connect_options(cfg.nats, name="swarmwatch-incident")
    opts.update(allow_reconnect=False, max_reconnect_attempts=1, reconnect_time_wait=0.2, connect_timeout=5)

    async def quiet(exc: Exception) -> None:
        return None

    opts["error_cb"] = quiet
    try:
        nc = await nats_client.connect(servers=[u.strip() for u in url.split(",") if u.strip()], **opts)
    except Exception as exc:
        fail(f"cannot connect to NATS at {redact_url(url)!r} to read the notification state: {exc}")
    try:
        return await read_notifications(nc, bucket)
    except (BucketReadError, ConnectionClosedError) as exc:
        fail(f"cannot read the notification state from NATS at {redact_url(url)!r}: {str(exc) or type(exc).__name__}")
    finally:
        await close_now(nc)


@incident_app.command("export")
def export(
    output: Path = typer.Option(..., "--output", "-o", help="Folder to create, or an archive NAME.tar.gz."),
    alert: Optional[str] = typer.Option(None, "--alert", help="The alert id: the window is from its first firing to its resolution (or now)."),
    since: Optional[str] = typer.Option(None, "--since", help="Start (instead of --alert): UNIX s, ISO 8601, 'now' or '1h' ago."),
    until: Optional[str] = typer.Option(None, "--until", help="End: UNIX s, ISO 8601, 'now' or a duration ago (default now)."),
    cluster: Optional[list[str]] = typer.Option(None, "--cluster", help="Only this cluster (repeatable; --alert: default its cluster)."),
    node: Optional[list[str]] = typer.Option(None, "--node", help="Only this node (repeatable; default all nodes of the clusters)."),
    margin: str = typer.Option("15m", "--margin", help="Data taken before and after the window (e.g. 15m, 1h, 0s)."),
    store: Optional[Path] = typer.Option(None, "--store", help="The file sinks' root directory (default <data_dir>/store)."),
    nats: Optional[str] = typer.Option(None, "--nats", help="Also read the notify sink's delivery state from this NATS (notifications per alert)."),
    nats_creds: Optional[str] = NATS_CREDS_OPTION,
    nats_token: Optional[str] = NATS_TOKEN_OPTION,
    notify_bucket: str = typer.Option("sw_notify", "--notify-bucket", help="KV bucket of the notify sink's state."),
    notify: Optional[Path] = typer.Option(None, "--notify", help="The notification config in force, copied with its secrets removed."),
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="swarmwatch YAML/TOML config in force (rules, settings)."),
) -> None:
    """Write one folder or archive with everything about an alert or a time window; opens without swarmwatch."""
    from schemas import check_token
    from sinks.api.timerange import TimeRangeError, parse_duration, parse_range
    from sinks.incident import IncidentError, Selection, alert_window, export_incident, redact_config
    from swarmwatch.cli.query import store_or_default

    if (alert is None) == (since is None):
        fail("give --alert ID, or --since (and --until) for a time window")
    for what, values in (("cluster", cluster or []), ("node", node or [])):
        for v in values:
            try:
                check_token(v, what)
            except ValueError as exc:
                fail(str(exc))
    try:
        margin_s = parse_duration(margin) if margin.strip() not in ("0", "") else 0.0
    except TimeRangeError as exc:
        fail(f"--margin: {exc}")
    root = store_or_default(store, config)
    cfg = config_or_exit(config, nats_overrides(nats_creds, nats_token))
    clusters = list(cluster or [])
    try:
        if alert is not None:
            t0, t1, a_cluster, _a_node = alert_window(root, alert)
            if not clusters:
                clusters = [a_cluster]
        else:
            t0, t1 = parse_range(since, until, time.time())
    except (IncidentError, TimeRangeError) as exc:
        fail(str(exc))
    sel = Selection(t0, t1, margin_s, clusters, list(node or []), alert)

    from processors.configfile import ConfigError
    from processors.rules import load_rules

    try:
        rules = [r.model_dump(mode="json", by_alias=True) for r in load_rules(cfg.processor.rules)]
    except ConfigError as exc:
        fail(str(exc))
    files: list[tuple[str, str]] = []
    if cfg.processor.rules:
        files.append((Path(cfg.processor.rules).name, Path(cfg.processor.rules).read_text()))
    notify_path = notify or (Path(cfg.sinks.notify) if cfg.sinks.notify else None)
    if notify_path is not None:
        from sinks.notify.config import ConfigError as NotifyConfigError
        from sinks.notify.config import load_config
        from sinks.notify.redaction import Redactor

        try:
            ncfg = load_config(notify_path)
        except (NotifyConfigError, OSError) as exc:
            fail(str(exc))
        files.append((notify_path.name, Redactor(ncfg.secrets())(notify_path.read_text())))
    notes = asyncio.run(_notifications(nats, cfg, notify_bucket)) if nats else None
    try:
        manifest = export_incident(root, output, sel, notifications=notes, config_files=files,
                                   effective_config=redact_config(cfg.model_dump(mode="json")), rules=rules)
    except IncidentError as exc:
        fail(str(exc))
    rows = ", ".join(f"{v} {k}" for k, v in manifest["rows"].items() if v)
    typer.echo(f"wrote incident bundle {output}: {rows}; {len(manifest['alerts'])} alerts; "
               f"data {manifest['data']['since_iso']} .. {manifest['data']['until_iso']}", err=True)


@incident_app.command("open")
def open_cmd(
    bundle: Path = typer.Argument(..., help="A bundle folder or .tar.gz archive."),
    sql: Optional[str] = typer.Argument(None, help="SQL over the bundle's views (samples, aggregates, alerts, health, trust, events)."),
    fmt: str = typer.Option("table", "--format", "-f", help="table, csv, json or parquet (for SQL)."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="File for the SQL result."),
    replay: bool = typer.Option(False, "--replay", help="Replay the bundle's samples offline through rules (swarmwatch replay)."),
    rules: Optional[Path] = typer.Option(None, "--rules", help="With --replay: the rules to try (default: the bundle's rules in force)."),
    into: Optional[Path] = typer.Option(None, "--into", help="Unpack an archive here (default a new temporary folder)."),
) -> None:
    """Load a bundle back: print what it holds, run SQL over it, or replay it with other rules."""
    from sinks.incident import IncidentError, open_bundle, read_manifest
    from sinks.query import OUTPUT_FORMATS, QueryError, StoreQuery, write_result

    if fmt not in OUTPUT_FORMATS:
        fail(f"--format {fmt!r} is unknown; expected one of {', '.join(OUTPUT_FORMATS)}")
    try:
        folder = open_bundle(bundle, into)
    except (IncidentError, OSError) as exc:
        fail(str(exc))
    m = read_manifest(folder)
    store = folder / "store"
    if sql is not None:
        try:
            with StoreQuery(store) as q:
                text = write_result(q.arrow(sql), fmt, output)
        except QueryError as exc:
            fail(str(exc))
        if text is not None:
            sys.stdout.write(text)
        return
    if replay:
        args = [sys.executable, "-m", "swarmwatch", "replay", "--offline", "--no-progress", "--store", str(store),
                "--since", str(m["data"]["since"]), "--until", str(m["data"]["until"])]
        if rules is not None:
            args += ["--rules", str(rules)]
        elif (folder / "config" / "rules.json").is_file():
            import json

            import yaml

            rfile = folder / "config" / "rules-in-force.yaml"
            rfile.write_text(yaml.safe_dump({"defaults": False, "rules": json.loads((folder / "config" / "rules.json").read_text())}))
            args += ["--rules", str(rfile)]
        for c in m.get("clusters") or []:
            args += ["--cluster", c]
            break
        raise typer.Exit(subprocess.call(args))
    rows = ", ".join(f"{v} {k}" for k, v in m["rows"].items() if v) or "no rows"
    typer.echo(f"incident bundle {folder}")
    typer.echo(f"  window   {m['window']['since_iso']} .. {m['window']['until_iso']}" + (f"  (alert {m['alert_id']})" if m["alert_id"] else ""))
    typer.echo(f"  data     {m['data']['since_iso']} .. {m['data']['until_iso']}: {rows}")
    typer.echo(f"  alerts   {', '.join(m['alerts'][:10]) or 'none'}{' ...' if len(m['alerts']) > 10 else ''}")
    typer.echo(f"  report   {folder / 'report.html'}")
    typer.echo(f"  query    swarmwatch incident open {folder} \"SELECT * FROM alerts\"   (or: swarmwatch query --store {store} ...)")
    typer.echo(f"  replay   swarmwatch incident open {folder} --replay --rules new-rules.yaml")
