"""``swarmwatch produce``: the per-node sidecar that publishes system snapshots.

Everything heavy (nats, psutil, the collectors) is imported inside the command,
so registering it costs the rest of the CLI nothing.
"""
from __future__ import annotations

from typing import NoReturn, Optional

import typer

from swarmwatch.cli import app


@app.command("produce")
def produce(
    nats_url: str = typer.Option("nats://127.0.0.1:4222", "--nats", envvar="SWARMWATCH_NATS", help="NATS server URL(s), comma separated."),
    cluster: str = typer.Option("default", "--cluster", envvar="SWARMWATCH_CLUSTER", help="Cluster name (subject token)."),
    node: Optional[str] = typer.Option(None, "--node", envvar="SWARMWATCH_NODE", help="Node name; default: this host's short name."),
    interval: str = typer.Option("1s", "--interval", help="Snapshot interval: '1s', '500ms', '2' (seconds), '1m'."),
    watch_pid: Optional[int] = typer.Option(None, "--watch-pid", help="Also publish CPU, memory, threads and open files of this process."),
    spool_dir: Optional[str] = typer.Option(None, "--spool-dir", help="Directory for the on-disk spool used while the broker is away."),
    spool_max_mb: float = typer.Option(64.0, "--spool-max-mb", help="Spool file limit in MB (memory ring: 4 MB)."),
    no_gpu: bool = typer.Option(False, "--no-gpu", help="Do not probe NVIDIA GPUs."),
    no_per_core: bool = typer.Option(False, "--no-per-core", help="Only total CPU %, not one series per core."),
    creds: Optional[str] = typer.Option(None, "--creds", help="NATS credentials file (JWT + nkey)."),
    token: Optional[str] = typer.Option(None, "--token", envvar="SWARMWATCH_NATS_TOKEN", help="NATS auth token."),
    user: Optional[str] = typer.Option(None, "--user", help="NATS user."),
    password: Optional[str] = typer.Option(None, "--password", envvar="SWARMWATCH_NATS_PASSWORD", help="NATS password."),
    tls_ca: Optional[str] = typer.Option(None, "--tls-ca", help="CA bundle to verify the server."),
    tls_cert: Optional[str] = typer.Option(None, "--tls-cert", help="Client certificate (mutual TLS)."),
    tls_key: Optional[str] = typer.Option(None, "--tls-key", help="Client key (mutual TLS)."),
    log_level: str = typer.Option("info", "--log-level", help="debug, info, warning or error."),
) -> None:
    """Publish this node's CPU, memory, disk, network, GPU and watched-process metrics to NATS."""
    import asyncio
    import logging
    import signal

    from producers.publisher import connect_options
    from producers.sidecar import default_node_name, parse_interval, run_producer

    level = getattr(logging, log_level.upper(), None)
    if not isinstance(level, int):
        _fail(f"log level {log_level!r} is not one of debug, info, warning, error")
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        interval_s = parse_interval(interval)
        opts = connect_options(
            creds=creds, token=token, user=user, password=password,
            tls_ca=tls_ca, tls_cert=tls_cert, tls_key=tls_key,
        )
        if spool_max_mb < 0:
            raise ValueError(f"--spool-max-mb {spool_max_mb!r} must be >= 0")
    except ValueError as exc:
        _fail(str(exc))
    servers = [u.strip() for u in nats_url.split(",") if u.strip()]
    node_name = node if node is not None else default_node_name()

    async def main() -> dict[str, float]:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.add_signal_handler(sig, stop.set)
            except (NotImplementedError, RuntimeError):  # not on this platform
                pass
        return await run_producer(
            servers if len(servers) > 1 else servers[0],
            cluster,
            node_name,
            interval_s,
            watch_pid=watch_pid,
            spool_dir=spool_dir,
            spool_disk_bytes=int(spool_max_mb * 1024 * 1024),
            gpu=not no_gpu,
            per_core=not no_per_core,
            connect_options=opts,
            stop=stop,
        )

    try:
        result = asyncio.run(main())
    except ValueError as exc:  # bad cluster/node name, pid, spool directory
        _fail(str(exc))
    logging.getLogger("swarmwatch.producer").info(
        "stopped: sent=%d failed=%d spooled=%d dropped=%d", result["sent"], result["failed"], result["spooled"], result["dropped"]
    )


def _fail(message: str) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(2)
