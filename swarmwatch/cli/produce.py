"""``swarmwatch produce``: the per-node sidecar that publishes system snapshots.

Registering the command imports nothing heavy. Running it checks the options
(clear one-line errors), then replaces this process (``exec``) with the lean
entry point ``python -m producers``, so the long-running sidecar does
not carry whatever the rest of the CLI imported. Secrets (token, password,
credentials and TLS paths) pass through the environment, never the command
line, where any user could read them.
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
    nats_creds: Optional[str] = typer.Option(None, "--nats-creds", envvar="SWARMWATCH_NATS_CREDS", help="This node's NATS credentials (`swarmwatch creds issue`: .creds or .nk file)."),
    nats_token: Optional[str] = typer.Option(None, "--nats-token", envvar="SWARMWATCH_NATS_TOKEN", help="NATS auth token."),
    nats_user: Optional[str] = typer.Option(None, "--nats-user", envvar="SWARMWATCH_NATS_USER", help="NATS user."),
    nats_password: Optional[str] = typer.Option(None, "--nats-password", envvar="SWARMWATCH_NATS_PASSWORD", help="NATS password."),
    nats_tls_ca: Optional[str] = typer.Option(None, "--nats-tls-ca", envvar="SWARMWATCH_TLS_CA", help="CA bundle to verify the NATS server."),
    nats_tls_cert: Optional[str] = typer.Option(None, "--nats-tls-cert", envvar="SWARMWATCH_TLS_CERT", help="Client certificate (mutual TLS)."),
    nats_tls_key: Optional[str] = typer.Option(None, "--nats-tls-key", envvar="SWARMWATCH_TLS_KEY", help="Client key (mutual TLS)."),
    old_creds: Optional[str] = typer.Option(None, "--creds", hidden=True),
    old_token: Optional[str] = typer.Option(None, "--token", hidden=True),
    old_user: Optional[str] = typer.Option(None, "--user", hidden=True),
    old_password: Optional[str] = typer.Option(None, "--password", hidden=True),
    old_tls_ca: Optional[str] = typer.Option(None, "--tls-ca", hidden=True),
    old_tls_cert: Optional[str] = typer.Option(None, "--tls-cert", hidden=True),
    old_tls_key: Optional[str] = typer.Option(None, "--tls-key", hidden=True),
    log_level: str = typer.Option("info", "--log-level", help="debug, info, warning or error."),
    no_probes: bool = typer.Option(False, "--no-probes", help="Do not probe peers (latency, jitter, loss)."),
    peers: str = typer.Option("", "--peers", help="Static peer node names, comma separated (discovery finds the rest)."),
    tcp_probe: Optional[list[str]] = typer.Option(None, "--tcp-probe", help="host:port to time TCP connects to (repeatable)."),
    probe_interval: str = typer.Option("5s", "--probe-interval", help="Seconds between probe rounds."),
    max_peers: int = typer.Option(32, "--max-peers", help="Peers probed per round (a stable subset in big clusters)."),
    no_discovery: bool = typer.Option(False, "--no-discovery", help="Do not announce on or listen to peer.join/heartbeat/leave."),
    probe_delay_ms: float = typer.Option(0.0, "--probe-delay-ms", hidden=True, help="Delay probe answers (testing)."),
    config: Optional[str] = typer.Option(None, "--config", help="Sidecar config (YAML/TOML) with 'scrape:' (Prometheus exporters) and 'checks:' (HTTP health checks) lists."),
    scrape: Optional[list[str]] = typer.Option(None, "--scrape", help="Prometheus /metrics URL to scrape into this node's batches (repeatable)."),
    scrape_interval: Optional[str] = typer.Option(None, "--scrape-interval", help="Scrape interval for --scrape URLs and config entries without one (default 10s)."),
    http_check: Optional[list[str]] = typer.Option(None, "--http-check", help="URL to health-check: up/down, status, latency, TLS days left (repeatable)."),
    check_interval: Optional[str] = typer.Option(None, "--check-interval", help="Interval for --http-check URLs and config entries without one (default 10s)."),
    edge_hz: float = typer.Option(10.0, "--edge-hz", help="Samples per second of the thresholds the processor watches; a crossing publishes at once (0: off)."),
    in_process: bool = typer.Option(False, "--in-process", help="Run inside this CLI process instead of exec'ing the lean sidecar entry point."),
) -> None:
    """Publish this node's CPU, memory, disk, network, GPU and watched-process metrics to NATS,
    plus scraped Prometheus exporters (--scrape) and HTTP health checks (--http-check)."""
    import os
    import sys

    from producers.options import connect_options, default_node_name, parse_interval
    from swarmwatch.cli.common import renamed

    creds = renamed("--nats-creds", nats_creds, "--creds", old_creds)
    token = renamed("--nats-token", nats_token, "--token", old_token)
    user = renamed("--nats-user", nats_user, "--user", old_user)
    password = renamed("--nats-password", nats_password, "--password", old_password)
    tls_ca = renamed("--nats-tls-ca", nats_tls_ca, "--tls-ca", old_tls_ca)
    tls_cert = renamed("--nats-tls-cert", nats_tls_cert, "--tls-cert", old_tls_cert)
    tls_key = renamed("--nats-tls-key", nats_tls_key, "--tls-key", old_tls_key)
    from schemas.subjects import check_token

    if log_level.lower() not in ("debug", "info", "warning", "error"):
        _fail(f"log level {log_level!r} is not one of debug, info, warning, error")
    node_name = node if node is not None else default_node_name()
    try:
        parse_interval(interval)
        check_token(cluster, "cluster")
        check_token(node_name, "node")
        if watch_pid is not None and watch_pid <= 0:
            raise ValueError(f"--watch-pid {watch_pid!r} must be a positive process id")
        if spool_max_mb < 0:
            raise ValueError(f"--spool-max-mb {spool_max_mb!r} must be >= 0")
        if not 0 <= edge_hz <= 100:
            raise ValueError(f"--edge-hz {edge_hz!r} must be between 0 (off) and 100")
        connect_options(creds=creds, token=token, user=user, password=password,
                        tls_ca=tls_ca, tls_cert=tls_cert, tls_key=tls_key)
        from producers.sidecar import probe_settings

        probe_settings(no_probes, peers, tcp_probe or [], probe_interval, max_peers, no_discovery, probe_delay_ms)
        from producers.options import sidecar_sources

        sidecar_sources(config, scrape or [], http_check or [], scrape_interval, check_interval)
    except ValueError as exc:
        _fail(str(exc))
    argv = ["--nats", nats_url, "--cluster", cluster, "--node", node_name, "--interval", interval,
            "--spool-max-mb", str(spool_max_mb), "--log-level", log_level]
    if watch_pid is not None:
        argv += ["--watch-pid", str(watch_pid)]
    if spool_dir is not None:
        argv += ["--spool-dir", spool_dir]
    if no_gpu:
        argv.append("--no-gpu")
    if no_per_core:
        argv.append("--no-per-core")
    if no_probes:
        argv.append("--no-probes")
    argv += ["--peers", peers, "--probe-interval", probe_interval, "--max-peers", str(max_peers)]
    for t in tcp_probe or []:
        argv += ["--tcp-probe", t]
    if no_discovery:
        argv.append("--no-discovery")
    if probe_delay_ms:
        argv += ["--probe-delay-ms", str(probe_delay_ms)]
    if config is not None:
        argv += ["--config", config]
    for u in scrape or []:
        argv += ["--scrape", u]
    for u in http_check or []:
        argv += ["--http-check", u]
    if scrape_interval is not None:
        argv += ["--scrape-interval", scrape_interval]
    if check_interval is not None:
        argv += ["--check-interval", check_interval]
    argv += ["--edge-hz", str(edge_hz)]
    secrets = {"SWARMWATCH_NATS_CREDS": creds, "SWARMWATCH_NATS_TOKEN": token, "SWARMWATCH_NATS_USER": user,
               "SWARMWATCH_NATS_PASSWORD": password, "SWARMWATCH_TLS_CA": tls_ca, "SWARMWATCH_TLS_CERT": tls_cert,
               "SWARMWATCH_TLS_KEY": tls_key}
    env = dict(os.environ)
    env.update({k: v for k, v in secrets.items() if v})
    sys.stdout.flush()
    sys.stderr.flush()
    if in_process or os.name != "posix":
        os.environ.update(env)
        from producers.sidecar import main as sidecar_main

        raise typer.Exit(sidecar_main(argv))
    os.execve(sys.executable, [sys.executable, "-m", "producers", *argv], env)


def _fail(message: str) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(2)
