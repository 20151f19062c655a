"""``swarmwatch alerts``: tail alert subjects in a readable form."""
from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any, Optional

import typer

from swarmwatch.cli import app
from swarmwatch.cli.common import (
    CONFIG_OPTION,
    NATS_CREDS_OPTION,
    NATS_TOKEN_OPTION,
    NATS_URL_OPTION,
    client_nats_config,
    fail,
    install_stop_signals,
    run_async,
)

_COLORS = {"critical": "bold red", "warning": "yellow", "info": "cyan"}


def format_alert(alert: object) -> str:
    """One line of Rich markup for an Alert."""
    from schemas import Alert

    assert isinstance(alert, Alert)
    sev = alert.severity.value
    color = _COLORS.get(sev, "white") if alert.status.value == "firing" else "green"
    when = time.strftime("%H:%M:%S", time.localtime(alert.ended_at or alert.started_at))
    val = "" if alert.value is None else f" value={alert.value:.4g}"
    thr = "" if alert.threshold is None else f" threshold={alert.threshold:g}"
    return (
        f"{when} [{color}]{alert.status.value.upper():8}[/] [{_COLORS.get(sev, 'white')}]{sev:8}[/] "
        f"{alert.cluster}/{alert.node} [bold]{alert.rule}[/] ({alert.kind.value}){val}{thr} — {alert.summary}"
    )


@app.command()
def alerts(
    nats: str = NATS_URL_OPTION,
    nats_creds: Optional[str] = NATS_CREDS_OPTION,
    nats_token: Optional[str] = NATS_TOKEN_OPTION,
    config: Optional[Path] = CONFIG_OPTION,
    severity: str = typer.Option("*", "--severity", help="info, warning, critical or * for all."),
    cluster: str = typer.Option("*", "--cluster"),
    node: str = typer.Option("*", "--node"),
    as_json: bool = typer.Option(False, "--json", help="Print raw JSON lines."),
    since: Optional[str] = typer.Option(None, "--since", help="Also show stored alerts from this long ago, e.g. 1h."),
) -> None:
    """Show the alerts firing now (from the DERIVED stream), then follow new ones (Ctrl-C to stop)."""
    from rich.console import Console

    nats_cfg = client_nats_config(config, nats_creds, nats_token)
    console = Console(highlight=False)
    subject = f"sw.alerts.{severity}.{cluster}.{node}.*"

    async def main() -> int:
        from processors.configfile import parse_duration
        from schemas import Alert, DecodeError, decode
        from swarmwatch.cancellation import close_now
        from swarmwatch.connect import connect, redact_url

        stop = asyncio.Event()
        install_stop_signals(stop)
        try:
            nc = await connect(nats, nats_cfg, name="swarmwatch-alerts", wait=False)
        except ConnectionError as exc:
            fail(str(exc))

        def show(data: bytes) -> None:
            if as_json:
                print(data.decode(), flush=True)
                return
            try:
                console.print(format_alert(decode(data, Alert)))
            except DecodeError as exc:
                console.print(f"[red]unreadable alert:[/] {exc}")

        # subscribe first so nothing published while the stream is read is missed
        buffered: list[bytes] = []
        following = False

        async def on_msg(m: object) -> None:
            data = m.data  # type: ignore[attr-defined]
            if following:
                show(data)
            else:
                buffered.append(data)

        await nc.subscribe(subject, cb=on_msg)
        history = await stored_alerts(nc, subject)
        seen = {(a.id, a.status.value) for _, a in history}
        now_firing = firing_now(history)
        if not as_json:
            console.print(f"[bold]firing now: {len(now_firing)}[/]" if now_firing else "[dim]nothing firing now[/]")
        for data, _a in now_firing:
            show(data)
        if since:
            start = time.time() - parse_duration(since)
            if not as_json:
                console.print(f"[bold]since {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(start))}:[/]")
            shown = {id(d) for d, _ in now_firing}
            for data, a in history:
                if (a.ended_at or a.started_at) >= start and id(data) not in shown:
                    show(data)
        for data in buffered:
            try:
                a = decode(data, Alert)
            except DecodeError:
                show(data)
                continue
            if (a.id, a.status.value) not in seen:
                show(data)
        buffered.clear()
        following = True
        if not as_json:
            console.print(f"[dim]listening on {subject} at {redact_url(nats)} (Ctrl-C to stop)[/]")
        await stop.wait()
        await close_now(nc)
        return 0

    run_async(main)


async def stored_alerts(nc: Any, subject: str) -> list[tuple[bytes, Any]]:
    """Every alert the DERIVED stream holds under ``subject``, in stream order, as (bytes, Alert).

    Read with an ordered consumer that is deleted afterwards; an unreadable
    message is skipped, a missing stream gives nothing.
    """
    import math

    from schemas import Alert, DecodeError, decode
    from swarmwatch.replay import DERIVED_STREAM, ReplayError, consume_stream

    out: list[tuple[bytes, Any]] = []

    async def take(_subj: str, data: bytes, _seq: int, _stored: float) -> None:
        try:
            out.append((data, decode(data, Alert)))
        except DecodeError:
            pass

    try:
        await consume_stream(nc, DERIVED_STREAM, 0.0, math.inf, take, filter_subject=subject, idle_s=0.5)
    except ReplayError:
        pass
    return out


def firing_now(history: list[tuple[bytes, Any]]) -> list[tuple[bytes, Any]]:
    """The alerts whose latest message is a firing one, oldest start first."""
    last: dict[str, tuple[bytes, Any]] = {}
    for data, a in history:
        prev = last.get(a.id)
        if prev is not None and prev[1].status.value == "resolved":
            continue  # a late firing duplicate after its resolve
        last[a.id] = (data, a)
    firing = [x for x in last.values() if x[1].status.value == "firing"]
    firing.sort(key=lambda x: (x[1].started_at, x[1].id))
    return firing
