"""``swarmwatch silence add|list|expire``: mute alerts for a while (stored in JetStream KV)."""
from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import typer

from swarmwatch.cli import app
from swarmwatch.cli.common import CONFIG_OPTION, NATS_CREDS_OPTION, NATS_TOKEN_OPTION, NATS_URL_OPTION, client_nats_config, fail, run_async

if TYPE_CHECKING:
    from swarmwatch.config import NatsConfig

silence_app = typer.Typer(help="Create, list and expire silences (they mute firing notifications).", no_args_is_help=True)
app.add_typer(silence_app, name="silence")


def _clock(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(ts))


def _with_store(nats: str, nats_cfg: NatsConfig, bucket: str, work: Callable[[Any], Awaitable[int | None]]) -> None:
    async def main() -> int | None:
        from sinks.notify import SilenceError, SilenceStore
        from swarmwatch.cancellation import close_now
        from swarmwatch.connect import connect

        try:
            nc = await connect(nats, nats_cfg, name="swarmwatch-silence", wait=False)
        except ConnectionError as exc:
            fail(str(exc))
        try:
            store = await SilenceStore.open(nc.jetstream(), bucket)
            return await work(store)
        except SilenceError as exc:
            fail(str(exc))
        finally:
            await close_now(nc)

    run_async(main)


@silence_app.command("add")
def silence_add(
    match: list[str] = typer.Option(..., "--match", "-m", help="LABEL=GLOB (cluster, node, rule, kind, severity); repeatable; '!' negates."),
    duration: str = typer.Option("2h", "--duration", "-d", help="How long, e.g. 30m, 2h, 1d."),
    comment: str = typer.Option("", "--comment", help="Why (shown in 'silence list')."),
    created_by: Optional[str] = typer.Option(None, "--by", help="Who (default: the OS user)."),
    nats: str = NATS_URL_OPTION,
    nats_creds: Optional[str] = NATS_CREDS_OPTION,
    nats_token: Optional[str] = NATS_TOKEN_OPTION,
    config: Optional[Path] = CONFIG_OPTION,
    bucket: str = typer.Option("sw_silences", "--bucket", help="KV bucket of silences."),
) -> None:
    """Mute firing alerts matching every --match for --duration."""
    from sinks.notify import SilenceError, parse_duration, parse_matchers

    try:
        matchers = parse_matchers(match)
        seconds = parse_duration(duration)
    except SilenceError as exc:
        fail(str(exc))

    async def work(store: Any) -> int:
        sil = await store.add(matchers, seconds, comment=comment, created_by=created_by)
        typer.echo(f"{sil.id}  until {_clock(sil.ends_at)}  " + " ".join(f"{k}={v}" for k, v in sil.matchers.items()))
        return 0

    _with_store(nats, client_nats_config(config, nats_creds, nats_token), bucket, work)


@silence_app.command("list")
def silence_list(
    all_: bool = typer.Option(False, "--all", "-a", help="Include expired silences."),
    as_json: bool = typer.Option(False, "--json", help="One JSON object per line."),
    nats: str = NATS_URL_OPTION,
    nats_creds: Optional[str] = NATS_CREDS_OPTION,
    nats_token: Optional[str] = NATS_TOKEN_OPTION,
    config: Optional[Path] = CONFIG_OPTION,
    bucket: str = typer.Option("sw_silences", "--bucket", help="KV bucket of silences."),
) -> None:
    """Show active and pending silences (with --all, expired ones too)."""

    async def work(store: Any) -> int:
        import msgspec

        now = time.time()
        sils = await store.list(include_expired=all_, now=now)
        if as_json:
            for s in sils:
                typer.echo(msgspec.json.encode(s).decode())
            return 0
        if not sils:
            typer.echo("no silences")
            return 0
        for s in sils:
            state = "active" if s.active(now) else ("pending" if s.starts_at > now else "expired")
            matchers = " ".join(f"{k}={v}" for k, v in s.matchers.items())
            typer.echo(f"{s.id}  {state:<7}  {_clock(s.starts_at)} .. {_clock(s.ends_at)}  {matchers}  by {s.created_by or '-'}"
                       + (f"  # {s.comment}" if s.comment else ""))
        return 0

    _with_store(nats, client_nats_config(config, nats_creds, nats_token), bucket, work)


@silence_app.command("expire")
def silence_expire(
    silence_id: str = typer.Argument(..., help="The id shown by 'silence list'."),
    nats: str = NATS_URL_OPTION,
    nats_creds: Optional[str] = NATS_CREDS_OPTION,
    nats_token: Optional[str] = NATS_TOKEN_OPTION,
    config: Optional[Path] = CONFIG_OPTION,
    bucket: str = typer.Option("sw_silences", "--bucket", help="KV bucket of silences."),
) -> None:
    """End a silence now."""

    async def work(store: Any) -> int:
        sil = await store.expire(silence_id)
        typer.echo(f"{sil.id} expired at {_clock(sil.ends_at)}")
        return 0

    _with_store(nats, client_nats_config(config, nats_creds, nats_token), bucket, work)
