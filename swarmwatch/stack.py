"""The whole pipeline in one process: embedded server, streams, producer, processors, sinks.

Start order follows the data: server, streams, sinks (so nothing waits on
them), processors, then the producer. Shutdown runs in reverse: the producer
stops first, processors checkpoint and ack, sinks flush and ack, the server
stops last, so Ctrl-C loses nothing.
"""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from rich.console import Console

from swarmwatch.cli.common import install_stop_signals
from processors.configfile import ConfigError
from swarmwatch.config import Config
from swarmwatch.cancellation import bounded, close_connection
from swarmwatch.connect import ConnectStopped, connect
from swarmwatch.logs import setup_logging
from swarmwatch.pipeline import export_watches, make_runtime
from swarmwatch.server import EmbeddedServer, ServerError
from swarmwatch.streams import ensure_streams

log = logging.getLogger("swarmwatch.up")


STOP_STEP_S = 30.0  # the longest one part may take to stop


class Stack:
    """Runs every role of ``cfg`` until a signal (or ``stop``) arrives."""

    def __init__(self, cfg: Config, console: Console | None = None, connect_timeout_s: float | None = None) -> None:
        self.cfg = cfg
        self.connect_timeout_s = connect_timeout_s  # None: wait for an external --nats server until a signal
        self.console = console or Console(stderr=True, highlight=False)
        self.stop_event = asyncio.Event()
        self.server: EmbeddedServer | None = None
        self.url = cfg.nats.url or ""
        self._stoppers: list[tuple[str, Callable[[], Awaitable[Any]]]] = []
        self.ready = asyncio.Event()

    @property
    def data_dir(self) -> Path:
        return Path(self.cfg.data_dir).resolve()

    async def run(self) -> int:
        cfg = self.cfg
        setup_logging(cfg.log_level, cfg.log_json)
        install_stop_signals(self.stop_event)
        try:
            await self.start()
        except ConnectStopped:
            self.console.print("[dim]stopped before the NATS server answered[/]")
            await self.shutdown()
            return 0
        except (ServerError, OSError) as exc:
            self.console.print(f"[red]error:[/] {exc}")
            await self.shutdown()
            return 2
        except ConfigError:
            raise
        except Exception:
            await self.shutdown()
            raise
        self._banner()
        self.ready.set()
        await self.stop_event.wait()
        self.console.print("[dim]stopping: producer, processors (checkpoint), sinks (flush), server…[/]")
        await self.shutdown()
        self.console.print("[green]stopped cleanly[/]")
        return 0

    def validate(self) -> None:
        """Read every file the configuration names before anything starts (ConfigError names the problem)."""
        from processors.rules import load_rules

        load_rules(self.cfg.processor.rules)
        sc = self.cfg.sinks
        if sc.api:
            from sinks.api.server import check_bind

            try:
                check_bind(sc.api_host, sc.api_token)
            except ValueError as exc:
                raise ConfigError(f"sinks.api_host: {exc}") from None
        self._notify_cfg = None
        if self.cfg.sinks.notify:
            from sinks.notify import ConfigError as NotifyConfigError
            from sinks.notify import load_config as load_notify_config

            try:
                self._notify_cfg = load_notify_config(self.cfg.sinks.notify)
            except NotifyConfigError as exc:
                raise ConfigError(str(exc)) from None

    async def start(self) -> None:
        cfg = self.cfg
        self.validate()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if not cfg.nats.url:
            self.server = EmbeddedServer(self.data_dir / "nats", port=cfg.nats.port)
            self.server.start()
            self.url = self.server.url
            self._stoppers.append(("nats-server", self._stop_server))
        nc = await connect(self.url, cfg.nats, name="swarmwatch-up", timeout_s=self.connect_timeout_s, stop=self.stop_event)
        self._stoppers.append(("connection", lambda: close_connection(nc)))
        r = cfg.retention
        await ensure_streams(nc.jetstream(), *r.limits())
        await self._start_sinks(nc)
        if cfg.processor.enabled:
            rt = make_runtime(nc, cfg)
            await rt.start()
            await export_watches(nc, rt.operators, cfg.processor.name)
            self.runtime = rt
            self._stoppers.append(("processor", rt.stop))
        if cfg.producer.enabled:
            await self._start_producer()

    @property
    def store_dir(self) -> Path:
        return Path(self.cfg.sinks.out).resolve() if self.cfg.sinks.out else self.data_dir / "store"

    async def _start_sinks(self, nc: Any) -> None:
        """File sinks, notifications and the API, as configured."""
        from sinks import FileSinkSettings, start_file_sinks

        sc = self.cfg.sinks
        formats = [f for f, on in (("json", sc.json_), ("parquet", sc.parquet)) if on]
        if formats:
            settings = FileSinkSettings(flush_interval_s=sc.flush_interval_s, retention_days=sc.retention_days or None)
            file_sinks = await start_file_sinks(nc, self.store_dir, formats, settings)

            async def stop_files() -> None:
                for fs in file_sinks:
                    await fs.stop()

            self._stoppers.append(("file sinks", stop_files))
        if sc.notify:
            from sinks.notify import NotifySink

            notify_sink = NotifySink(nc, self._notify_cfg)
            await notify_sink.start()
            self.notify_sink = notify_sink
            self._stoppers.append(("notifications", notify_sink.stop))
        if sc.api:
            from sinks.api import ApiServer

            api = ApiServer(
                nc, host=sc.api_host, port=sc.api_port, token=sc.api_token, store_root=self.store_dir,
                extra_allowed_hosts=sc.api_allowed_hosts, allowed_origins=sc.api_allowed_origins,
            )
            await api.start()
            self.api = api
            self._stoppers.append(("api", api.stop))

    async def _start_producer(self) -> None:
        from producers.options import sources_from_entries
        from producers.probes import ProbeSettings
        from producers.sidecar import run_producer, source_tasks

        cfg = self.cfg
        sources, tasks = source_tasks(*sources_from_entries(cfg.producer.scrape, cfg.producer.checks))
        stop = asyncio.Event()
        task = asyncio.create_task(
            run_producer(
                self.url,
                cfg.cluster,
                cfg.node,
                cfg.producer.interval_s,
                watch_pid=cfg.producer.watch_pid,
                gpu=cfg.producer.gpu,
                spool_dir=self.data_dir / "spool",
                probes=ProbeSettings(),
                extra_sources=sources,
                tasks=tasks,
                stop=stop,
            ),
            name="producer",
        )

        async def stop_producer() -> None:
            stop.set()
            try:
                await asyncio.wait_for(task, 15)
            except Exception as exc:
                log.warning("producer stopped with %s", exc)

        self._stoppers.append(("producer", stop_producer))

    async def _stop_server(self) -> None:
        if self.server is not None:
            await asyncio.to_thread(self.server.stop)

    async def shutdown(self) -> None:
        while self._stoppers:  # each part within 30 s; a failure or overrun is logged, the rest still stop
            name, fn = self._stoppers.pop()
            await bounded(fn, STOP_STEP_S, name)

    def _banner(self) -> None:
        cfg = self.cfg
        c = self.console
        c.print(f"[bold green]swarmwatch is up[/] — cluster [bold]{cfg.cluster}[/], node [bold]{cfg.node}[/]")
        c.print(f"  NATS        {self.url}" + (" (embedded, JetStream)" if self.server else ""))
        c.print(f"  data        {self.data_dir}")
        sc = cfg.sinks
        if sc.json_ or sc.parquet:
            fmts = " and ".join(f for f, on in (("JSON lines", sc.json_), ("Parquet", sc.parquet)) if on)
            c.print(f"  files       {self.store_dir} ({fmts}, by date and cluster)")
        c.print(f"  alerts      swarmwatch alerts --nats {self.url}")
        c.print("              or subscribe to sw.alerts.<severity>.<cluster>.<node>.<rule>")
        if cfg.sinks.api and getattr(self, "api", None) is not None:
            c.print(f"  dashboard   {self.api.url}  (API docs {self.api.url}/docs, Prometheus {self.api.url}/metrics)")
            if sc.api_token:
                c.print(f"              token set: open {self.api.url}/#token=<token> once; API clients send 'Authorization: Bearer <token>'")
        if cfg.sinks.notify:
            c.print(f"  notify      {cfg.sinks.notify} (critical: all channels, warning: primary, info: log)")
        else:
            c.print("  notify      none configured (pass --notify notify.yaml; see docs/notify.md)")
        c.print("  stop        Ctrl-C (checkpoints, flushes and acks before exiting)")
