"""``swarmwatch replay``: run rules and operators over a past range; what would have fired, when, how many pages."""
from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import typer

from swarmwatch.cli import app
from swarmwatch.cli.common import CONFIG_OPTION, NATS_CREDS_OPTION, NATS_TOKEN_OPTION, NATS_URL_OPTION, config_or_exit, fail, nats_overrides, run_async

if TYPE_CHECKING:
    from swarmwatch.replay import ReplayItem, ReplayReport


def parse_speed(value: str) -> float | None:
    """``max`` (None: as fast as possible) or a positive factor of real time (``10``, ``10x``)."""
    v = value.strip().lower()
    if v == "max":
        return None
    v = v.removesuffix("x")
    try:
        f = float(v)
    except ValueError:
        raise ValueError(f"--speed {value!r} is invalid; expected 'max' or a factor of real time such as 10") from None
    if not f > 0:
        raise ValueError(f"--speed {value!r} must be > 0 (or 'max')")
    return f


def paced(items: Iterable[ReplayItem], speed: float | None) -> Iterator[ReplayItem]:
    """Yield items no faster than ``speed`` x real time in event time (None: no pacing)."""
    if speed is None:
        yield from items
        return
    wall0 = time.monotonic()
    ev0: float | None = None
    for it in items:
        if ev0 is None:
            ev0 = it.ts
        ahead = (it.ts - ev0) / speed - (time.monotonic() - wall0)
        if ahead > 0.001:
            time.sleep(ahead)
        yield it


def _fmt_t(t: float | None) -> str:
    return "-" if t is None else time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(t))


def render_text(rep: ReplayReport) -> str:
    """The report as Rich markup lines: per rule then vs now, pages, and what differs."""
    r = rep.result
    lines = [
        f"[bold]replay[/] {_fmt_t(rep.since)} .. {_fmt_t(rep.until)} UTC from {rep.source}: "
        f"{r.items} inputs in {r.seconds:.1f} s ({r.speedup:.0f}x real time), {r.invalid} invalid",
        "",
        f"{'rule':32} {'fired then':>10} {'fires now':>10}  {'first then':19}  {'first now':19}",
    ]
    rules = rep.rules()
    for ln in rules:
        then = str(ln.fired_then) if rep.then_known else "?"
        lines.append(f"{ln.rule:32} {then:>10} {ln.fired_now:>10}  {_fmt_t(ln.first_then):19}  {_fmt_t(ln.first_now):19}")
    if not rules:
        lines.append("(no alert fired then or now)")
    pages_then = "?" if rep.pages_then is None else str(rep.pages_then)
    lines += ["", f"pages: then {pages_then}, now {rep.pages_now}"]
    if rep.then_known:
        new, gone = rep.only_now(), rep.only_then()
        lines.append(f"differences: {len(new)} alert messages only now, {len(gone)} only then")
        for tag, fired in (("[yellow]+ now [/]", new[:20]), ("[cyan]- then[/]", gone[:20])):
            for f in fired:
                a = f.alert
                lines.append(f"  {tag} {_fmt_t(f.at)} {a.status.value:8} {a.severity.value:8} {a.rule} {a.cluster}/{a.node} {a.summary}")
    else:
        lines.append("what fired then is unknown: neither the DERIVED stream nor the store holds alerts for this range")
    return "\n".join(lines)


@app.command("replay")
def replay_cmd(
    since: str = typer.Option("1h", "--since", help="Start: UNIX s, ISO 8601 (2026-11-23T14:00:00Z), 'now' or a duration ago (24h)."),
    until: str = typer.Option("now", "--until", help="End: UNIX s, ISO 8601, 'now' or a duration ago."),
    cluster: Optional[str] = typer.Option(None, "--cluster", help="Only this cluster (glob)."),
    node: Optional[str] = typer.Option(None, "--node", help="Only this node (glob)."),
    speed: str = typer.Option("max", "--speed", help="'max' or N: replay event time at N x real time."),
    rules: Optional[Path] = typer.Option(None, "--rules", help="Threshold rules to try (YAML/TOML); default: the configured ones."),
    operators: Optional[str] = typer.Option(None, "--operators", help="Comma-separated subset of rules,windows,liveness,network,byzantine,anomaly (default: the configured set)."),
    operator: Optional[list[str]] = typer.Option(None, "--operator", help="A custom operator as well, pkg.module:attr; repeatable."),
    no_plugins: bool = typer.Option(False, "--no-plugins", help="Leave out the operators installed under swarmwatch.operators."),
    nats: str = NATS_URL_OPTION,
    nats_creds: Optional[str] = NATS_CREDS_OPTION,
    nats_token: Optional[str] = NATS_TOKEN_OPTION,
    store: Optional[Path] = typer.Option(None, "--store", help="The file sinks' store, read when JetStream no longer holds the range (default <data_dir>/store)."),
    offline: bool = typer.Option(False, "--offline", help="Do not contact NATS: read the store only."),
    publish: bool = typer.Option(False, "--publish", help="Also publish every output under replay.<id>.<subject> (core NATS, never live subjects)."),
    notify: Optional[Path] = typer.Option(None, "--notify", help="Notification config to count pages with (default: one primary channel)."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Write the full report as JSON here."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON instead of a table."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Progress bar with ETA on standard error."),
    config: Optional[Path] = CONFIG_OPTION,
) -> None:
    """Replay stored telemetry through rules and operators: what fired then next to what would fire now, and the pages.

    The source is JetStream while it holds the range, the file store after
    that; outputs never reach live subjects and nothing is left on the server.
    """
    from schemas import check_token
    from sinks.api.timerange import TimeRangeError, parse_range

    cfg = config_or_exit(
        config,
        {
            "processor.rules": str(rules) if rules else None,
            "processor.operators": operators,
            **nats_overrides(nats_creds, nats_token),
        },
    )
    try:
        t_since, t_until = parse_range(since, until, time.time())
        pace = parse_speed(speed)
    except (TimeRangeError, ValueError) as exc:
        fail(str(exc))
    for what, v in (("cluster", cluster), ("node", node)):
        if v and not any(c in v for c in "*?["):
            try:
                check_token(v, what)
            except ValueError as exc:
                fail(str(exc))
    from swarmwatch.pipeline import build_operators
    from swarmwatch.plugins import PluginError, load_operators

    try:
        ops = build_operators(cfg, load_operators(operator or (), include_installed=not no_plugins))
    except (PluginError, ValueError) as exc:
        fail(str(exc))
    notify_cfg = None
    if notify is not None:
        from sinks.notify.config import ConfigError as NotifyConfigError
        from sinks.notify.config import load_config

        try:
            notify_cfg = load_config(notify)
        except (NotifyConfigError, OSError) as exc:
            fail(str(exc))
    store_root = store or Path(cfg.sinks.out or Path(cfg.data_dir) / "store")
    replay_id = uuid.uuid4().hex[:8]

    async def main() -> int:
        from rich.console import Console

        from swarmwatch import replay as rp

        err = Console(stderr=True, highlight=False)
        out = Console(highlight=False)
        nc = None
        if not offline:
            from swarmwatch.cancellation import close_now
            from swarmwatch.connect import connect

            try:
                nc = await connect(nats, cfg.nats, name="swarmwatch-replay", wait=False)
            except ConnectionError as exc:
                if not rp.store_range(store_root):
                    fail(f"{exc}; and no store at {str(store_root)!r} to replay offline (give --store DIR)")
                err.print(f"[dim]{exc}; replaying from the store at {store_root}[/]")
        try:
            source = "store"
            then: list[rp.Fired] | None = None
            if nc is not None:
                holds = await rp.stream_holds(nc, rp.TELEMETRY_STREAM, t_since)
                in_store = rp.store_range(store_root)
                if holds:
                    source = "jetstream"
                elif in_store is not None:
                    source = "store"
                elif holds is not None:
                    source = "jetstream"
                    first, _ = await rp.stream_first_time(nc, rp.TELEMETRY_STREAM)
                    err.print(f"[yellow]JetStream holds telemetry only from {_fmt_t(first)} UTC and there is no store; replaying what is left[/]")
                else:
                    fail(f"nothing to replay: the TELEMETRY stream is empty and there is no store at {str(store_root)!r}")
                if await rp.stream_holds(nc, rp.DERIVED_STREAM, t_since):
                    then = await rp.stream_alerts(nc, t_since, t_until, cluster, node)
            elif not rp.store_range(store_root):
                fail(f"no store at {str(store_root)!r} (give --store DIR)")
            if then is None and rp.store_holds_alerts(store_root):
                then = [f for f in rp.store_alerts(store_root, t_since, t_until) if _match(f.alert, cluster, node)]
            prefix = f"{rp.REPLAY_PREFIX}.{replay_id}" if publish and nc is not None else None
            if publish and nc is None:
                err.print("[yellow]--publish needs NATS; outputs stay in the report[/]")
            bar, tick = _progress(err, t_since, t_until, progress)
            try:
                if source == "jetstream":
                    result = await rp.replay_stream(
                        nc, ops, t_since, t_until, cluster=cluster, node=node, speed=pace, publish_prefix=prefix, progress=tick
                    )
                else:
                    emitted: list[tuple[str, bytes, str | None]] = []

                    def keep(e: Any, now: float) -> None:
                        if prefix is not None:
                            from schemas import encode

                            data = e.message if isinstance(e.message, (bytes, bytearray)) else encode(e.message)
                            emitted.append((f"{prefix}.{e.subject}", bytes(data), e.msg_id))

                    items = rp.store_items(store_root, t_since, t_until, cluster=cluster, node=node, metrics=rp.metrics_wanted(ops))
                    result = rp.replay(
                        paced(items, pace), ops, since=t_since, until=t_until, cluster=cluster, node=node,
                        source="store", on_emit=keep, progress=tick,
                    )
                    if nc is not None:
                        for subj, data, mid in emitted:
                            await nc.publish(subj, data, headers={"Nats-Msg-Id": mid} if mid else None)
                        await nc.flush()
            finally:
                if bar is not None:
                    bar.stop()
            report = rp.ReplayReport(
                since=t_since, until=t_until, source=source, then_known=then is not None, then=then or [],
                now=result.alerts, pages_then=None if then is None else rp.count_pages(then, notify_cfg, t_until),
                pages_now=rp.count_pages(result.alerts, notify_cfg, t_until), result=result,
            )
        finally:
            if nc is not None:
                await close_now(nc)
        doc = report.to_dict()
        doc["replay_id"] = replay_id
        if prefix is not None:
            doc["published_under"] = f"{prefix}.>"
        if output is not None:
            output.write_text(json.dumps(doc, indent=2, default=str))
        if as_json:
            print(json.dumps(doc, default=str))
        else:
            out.print(render_text(report))
            if prefix is not None:
                out.print(f"outputs published under {prefix}.>")
        return 0

    run_async(main)


def _match(alert: Any, cluster: str | None, node: str | None) -> bool:
    import fnmatch

    return (cluster is None or fnmatch.fnmatchcase(alert.cluster, cluster)) and (node is None or fnmatch.fnmatchcase(alert.node, node))


def _progress(console: Any, since: float, until: float, enabled: bool) -> tuple[Any, Any]:
    """A Rich progress bar over event time with ETA, and the callback that advances it."""
    if not enabled or not console.is_terminal:
        return None, None
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    total = max(1.0, until - since)
    bar = Progress(
        TextColumn("replay"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"), TimeRemainingColumn(),
        TextColumn("{task.fields[items]} inputs"), console=console, transient=True,
    )
    task = bar.add_task("replay", total=total, items=0)
    bar.start()

    def tick(now: float, items: int) -> None:
        bar.update(task, completed=min(total, max(0.0, now - since)), items=items)

    return bar, tick
