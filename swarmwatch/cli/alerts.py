"""``swarmwatch alerts``: tail alert subjects in a readable form."""
from __future__ import annotations

import asyncio
import time
from typing import Optional

import typer

from swarmwatch.cli import app
from swarmwatch.cli.common import fail, install_stop_signals, run_async

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
    nats: str = typer.Option("nats://127.0.0.1:4222", "--nats", help="NATS URL."),
    severity: str = typer.Option("*", "--severity", help="info, warning, critical or * for all."),
    cluster: str = typer.Option("*", "--cluster"),
    node: str = typer.Option("*", "--node"),
    as_json: bool = typer.Option(False, "--json", help="Print raw JSON lines."),
    since: Optional[str] = typer.Option(None, "--since", help="Also show stored alerts from this long ago, e.g. 1h."),
) -> None:
    """Tail sw.alerts.<severity>.<cluster>.<node>.<rule> in a readable form (Ctrl-C to stop)."""
    from rich.console import Console

    console = Console(highlight=False)
    subject = f"sw.alerts.{severity}.{cluster}.{node}.*"

    async def main() -> int:
        from processors.configfile import parse_duration
        from schemas import Alert, DecodeError, decode
        from swarmwatch.connect import connect, redact_url

        stop = asyncio.Event()
        install_stop_signals(stop)
        try:
            nc = await connect(nats, wait=False)
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

        if since:
            from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

            start = time.time() - parse_duration(since)
            iso = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(start))
            cfg = ConsumerConfig(deliver_policy=DeliverPolicy.BY_START_TIME, opt_start_time=iso, ack_policy=AckPolicy.NONE)
            psub = await nc.jetstream().pull_subscribe(subject, stream="DERIVED", config=cfg)
            while True:
                try:
                    msgs = await psub.fetch(500, timeout=0.5)
                except Exception:  # timeout: nothing older left
                    break
                for m in msgs:
                    show(m.data)
            await psub.unsubscribe()

        async def on_msg(m: object) -> None:
            show(m.data)  # type: ignore[attr-defined]

        await nc.subscribe(subject, cb=on_msg)
        console.print(f"[dim]listening on {subject} at {redact_url(nats)} (Ctrl-C to stop)[/]")
        await stop.wait()
        await nc.close()
        return 0

    run_async(main)
