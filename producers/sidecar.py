"""The producer's run loop: collect a snapshot every interval and publish it as a MetricBatch.

``run_producer`` is what ``swarmwatch produce`` runs; apps can embed it with
:class:`BackgroundProducer` (a daemon thread with its own event loop) so their
:mod:`producers.sdk` metrics ride in the same batches.
"""
from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from producers.collectors import SystemCollector
from producers.edges import DEFAULT_EDGE_HZ, EdgeSampler, follow_watches
from producers.gpu import GpuCollector
from producers.options import DEFAULT_INTERVAL_S, connect_options, default_node_name, parse_interval, sidecar_sources
from producers.process import ProcessWatcher
from producers.publisher import Publisher
from producers.samples import SampleBuffer
from producers.sdk import REGISTRY, Registry
from producers.spool import DEFAULT_DISK_BYTES, DEFAULT_MEMORY_BYTES, Spool
from schemas.codec import encode
from schemas.models import MAX_SAMPLES_PER_BATCH, MetricBatch, Sample
from schemas.subjects import check_token, events as events_subject, metrics as metrics_subject
from swarmwatch.cancellation import stop_task

if TYPE_CHECKING:
    from producers.probes import ProbeSettings

SELF_PREFIX = "swarmwatch.producer."

log = logging.getLogger("swarmwatch.producer")

SampleSource = Callable[[], Iterable[Sample]]
"""An extra sample source polled every tick, e.g. ``PeerProber.samples``."""
SidecarTask = Callable[[Publisher, asyncio.Event], Awaitable[None]]
"""A coroutine run beside the loop with the publisher and the stop event, e.g. ``PeerProber.run_with_publisher``."""

class Producer:
    """One node's sidecar: collectors, SDK registry, publisher and its own counters."""

    def __init__(
        self,
        publisher: Publisher,
        cluster: str,
        node: str,
        *,
        watch_pid: int | None = None,
        gpu: bool = True,
        per_core: bool = True,
        registry: Registry | None = REGISTRY,
        extra_sources: Iterable[SampleSource] = (),
    ) -> None:
        self.cluster = check_token(cluster, "cluster")
        self.node = check_token(node, "node")
        self.subject = metrics_subject(cluster, node)
        self.publisher = publisher
        self.system = SystemCollector(per_core=per_core)
        self.gpu = GpuCollector(enabled=gpu)
        self.watch = ProcessWatcher(watch_pid) if watch_pid else None
        self.registry = registry
        self.extra_sources = list(extra_sources)
        self.boot_id = os.urandom(4).hex()
        self.seq = 0
        self.invalid = 0  # samples dropped as NaN/inf/absurd
        self.truncated = 0  # samples beyond MAX_SAMPLES_PER_BATCH
        self.ticks_skipped = 0
        self.tick_errors = 0  # snapshots that raised (a bug, logged)
        self.collect_ms = 0.0
        self.edges = EdgeSampler(self.system, self.gpu, per_core=per_core)
        self.edge_batches = 0  # out-of-band batches published on a threshold crossing
        self.events_sent = 0  # SDK events published
        self._self_proc: Any = None
        self._self_cpu: tuple[float, float] | None = None
        if gpu:
            self.gpu.probe()
            if not self.gpu.available:
                log.info("no GPU metrics: %s", self.gpu.reason)

    def snapshot(self, now_mono: float | None = None) -> MetricBatch:
        """Collect everything once and build the next batch (``seq`` increases by one)."""
        mono = time.monotonic() if now_mono is None else now_mono
        t0 = time.perf_counter()
        out = SampleBuffer()
        self.system.collect(out, mono)
        self.gpu.collect(out)
        if self.watch is not None:
            self.watch.collect(out, mono)
        if self.registry is not None:
            try:
                out.extend(self.registry.collect(mono))
            except Exception:  # noqa: BLE001 - an app's metric must not stop the node's snapshot
                self.system.errors += 1
        for source in self.extra_sources:
            try:
                out.extend(source())
            except Exception:  # noqa: BLE001 - same: counted, never fatal
                self.system.errors += 1
        self.invalid += out.invalid
        self.collect_ms = (time.perf_counter() - t0) * 1000.0
        self._self_samples(out, mono)
        samples = out.items
        if len(samples) > MAX_SAMPLES_PER_BATCH:
            self.truncated += len(samples) - MAX_SAMPLES_PER_BATCH
            samples = samples[:MAX_SAMPLES_PER_BATCH]
        self.seq += 1
        return MetricBatch(self.cluster, self.node, time.time(), samples, self.seq)

    def _self_samples(self, out: SampleBuffer, mono: float) -> None:
        c = self.publisher.counters()
        for key in ("sent", "failed", "timeouts", "duplicates", "replayed", "spooled", "dropped",
                    "spool_corrupt", "spool_items", "spool_bytes", "inflight", "reconnects", "disconnects",
                    "connected"):
            out.add(SELF_PREFIX + key, c[key])
        reg = self.registry
        out.add(SELF_PREFIX + "invalid", self.invalid + (reg.invalid if reg is not None else 0))
        out.add(SELF_PREFIX + "sdk_refused", reg.refused if reg is not None else 0)
        out.add(SELF_PREFIX + "truncated", self.truncated)
        out.add(SELF_PREFIX + "collector_errors", self.system.errors + self.gpu.errors)
        out.add(SELF_PREFIX + "counter_resets", self.system.rates.resets)
        out.add(SELF_PREFIX + "ticks_skipped", self.ticks_skipped)
        out.add(SELF_PREFIX + "tick_errors", self.tick_errors)
        out.add(SELF_PREFIX + "collect_ms", self.collect_ms, "ms")
        out.add(SELF_PREFIX + "gpu_available", 1.0 if self.gpu.available else 0.0)
        out.add(SELF_PREFIX + "watches", len(self.edges.watches))
        out.add(SELF_PREFIX + "edge_batches", self.edge_batches)
        out.add(SELF_PREFIX + "edge_crossings", self.edges.crossings)
        out.add(SELF_PREFIX + "edge_suppressed", self.edges.suppressed)
        out.add(SELF_PREFIX + "events_sent", self.events_sent)
        try:
            if self._self_proc is None:
                import psutil

                self._self_proc = psutil.Process()
            with self._self_proc.oneshot():
                cpu = self._self_proc.cpu_times()
                rss = self._self_proc.memory_info().rss
        except Exception:  # noqa: BLE001
            return
        used = cpu.user + cpu.system
        last, self._self_cpu = self._self_cpu, (used, mono)
        if last is not None and mono > last[1]:
            out.add(SELF_PREFIX + "cpu_percent", max(0.0, 100.0 * (used - last[0]) / (mono - last[1])), "%")
        out.add(SELF_PREFIX + "rss_bytes", rss, "B")

    async def tick(self) -> MetricBatch:
        """Collect and publish one batch (pipelined: returns before the broker acks)."""
        batch = self.snapshot()
        await self.publisher.publish(self.subject, encode(batch), f"{self.node}:{self.boot_id}:{batch.seq}")
        await self.publish_events()
        return batch

    async def publish_edge(self, samples: list[Sample]) -> MetricBatch:
        """Publish an out-of-band batch of just ``samples`` (a threshold crossing), numbered like the regular ones."""
        self.seq += 1
        batch = MetricBatch(self.cluster, self.node, time.time(), samples[:MAX_SAMPLES_PER_BATCH], self.seq)
        await self.publisher.publish(self.subject, encode(batch), f"{self.node}:{self.boot_id}:{batch.seq}")
        self.edge_batches += 1
        return batch

    async def publish_events(self) -> int:
        """Publish the SDK events queued since the last call, stamped with this node; returns how many."""
        if self.registry is None:
            return 0
        n = 0
        for ev in self.registry.take_events():
            ev.cluster, ev.node = self.cluster, self.node
            self.events_sent += 1
            await self.publisher.publish(events_subject(self.cluster, self.node, ev.kind), encode(ev),
                                         f"{self.node}:{self.boot_id}:ev{self.events_sent}")
            n += 1
        return n

    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        """Publish SDK events and watched gauge crossings at once, from whatever thread the app calls from."""
        reg = self.registry
        if reg is None:
            return
        loop_thread = threading.get_ident()
        pending: set[asyncio.Task[Any]] = set()

        def spawn(coro: Any) -> None:
            t = loop.create_task(coro)
            pending.add(t)
            t.add_done_callback(pending.discard)

        def on_gauge_here(sample: Sample) -> None:
            if self.edges.crossed((sample,)) and self.edges.admit():
                spawn(self.publish_edge([sample]))

        def on_gauge(gauge: Any, key: Any, value: float) -> None:
            if not self.edges.watches_name(gauge.name):
                return
            sample = Sample(gauge.name, value, gauge.unit, dict(key) if key else None)
            if threading.get_ident() == loop_thread:
                on_gauge_here(sample)
            else:
                loop.call_soon_threadsafe(on_gauge_here, sample)

        def on_event() -> None:
            if threading.get_ident() == loop_thread:
                spawn(self.publish_events())
            else:
                loop.call_soon_threadsafe(lambda: spawn(self.publish_events()))

        reg.on_gauge = on_gauge
        reg.on_event = on_event

    def detach(self) -> None:
        if self.registry is not None:
            self.registry.on_gauge = None
            self.registry.on_event = None

    async def run_edges(self, hz: float, stop: asyncio.Event) -> None:
        """Sample the watched cheap sources ``hz`` times a second (in the sampler's thread); publish a batch on a crossing."""
        loop = asyncio.get_running_loop()
        pending: set[asyncio.Task[Any]] = set()

        async def publish(samples: list[Sample]) -> None:
            try:
                await self.publish_edge(samples)
            except Exception:  # noqa: BLE001 - counted like a failed tick, never fatal
                self.tick_errors += 1
                log.exception("edge batch failed; carrying on")

        def publish_here(samples: list[Sample], reading: Any) -> None:
            if any(s.name.startswith("cpu.") for s in samples):
                self.edges.rebase_system_cpu(reading)
            t = loop.create_task(publish(samples))
            pending.add(t)
            t.add_done_callback(pending.discard)

        def on_crossing(samples: list[Sample], reading: Any) -> None:  # in the sampler thread
            loop.call_soon_threadsafe(publish_here, samples, reading)

        self.edges.start(hz, on_crossing)
        try:
            await stop.wait()
        finally:
            await asyncio.to_thread(self.edges.stop)
            if pending:
                await asyncio.wait(pending, timeout=2.0)


async def run_producer(
    nats_url: str | list[str],
    cluster: str,
    node: str,
    interval_s: float = DEFAULT_INTERVAL_S,
    *,
    watch_pid: int | None = None,
    spool_dir: str | Path | None = None,
    spool_memory_bytes: int = DEFAULT_MEMORY_BYTES,
    spool_disk_bytes: int = DEFAULT_DISK_BYTES,
    gpu: bool = True,
    per_core: bool = True,
    registry: Registry | None = REGISTRY,
    extra_sources: Iterable[SampleSource] = (),
    tasks: Iterable[SidecarTask] = (),
    probes: ProbeSettings | None = None,
    publisher: Publisher | None = None,
    connect_options: dict[str, Any] | None = None,
    ack_timeout_s: float = 5.0,
    stop: asyncio.Event | None = None,
    max_batches: int | None = None,
    close_timeout_s: float = 5.0,
    edge_hz: float = DEFAULT_EDGE_HZ,
) -> dict[str, float]:
    """Publish a snapshot every ``interval_s`` until ``stop`` is set (or ``max_batches`` were made).

    Never fails because the broker is away: batches spool and replay on
    reconnect. Bad names or options raise ValueError before anything starts.
    ``publisher`` (not started) replaces the one built from ``nats_url`` and the
    spool options, so other parts (peer probes, discovery) can publish through
    it; each of ``tasks`` runs as ``task(publisher, stop)`` until ``stop``,
    which is set on return. ``edge_hz`` > 0 turns on edge-triggered sampling
    (:mod:`producers.edges`): the thresholds the processor watches are read
    that often and a crossing is published at once; 0 turns it off. Returns
    the final publisher counters.
    """
    interval = parse_interval(interval_s)
    if not 0 <= edge_hz <= 100:
        raise ValueError(f"edge sampling rate {edge_hz!r} must be between 0 (off) and 100 per second")
    check_token(cluster, "cluster")
    check_token(node, "node")
    if watch_pid is not None and watch_pid <= 0:
        raise ValueError(f"watch pid {watch_pid!r} must be a positive process id")
    if publisher is None:
        publisher = Publisher(
            nats_url,
            spool=Spool(spool_memory_bytes, spool_dir, spool_disk_bytes),
            name=f"swarmwatch-producer-{cluster}-{node}",
            ack_timeout_s=ack_timeout_s,
            connect_options=connect_options,
        )
    if probes is not None:  # peer probes and discovery ride on the same connection and batches
        from producers.probes import PeerProber

        prober = PeerProber(
            None, cluster, node, publish=False, publish_fn=publisher.publish,
            static_peers=probes.peers, tcp_targets=probes.tcp_targets, interval_s=probes.interval_s,
            max_peers=probes.max_peers, discover=probes.discover, probe_delay_ms=probes.delay_ms,
        )
        extra_sources = [*extra_sources, prober.samples]
        tasks = [*tasks, prober.run_with_publisher]
    producer = Producer(publisher, cluster, node, watch_pid=watch_pid, gpu=gpu, per_core=per_core, registry=registry,
                        extra_sources=extra_sources)
    stop = stop or asyncio.Event()
    producer.attach(asyncio.get_running_loop())
    if edge_hz > 0:

        async def watch_task(pub: Publisher, stop_ev: asyncio.Event) -> None:
            await follow_watches(pub, producer.edges.set_watches, stop_ev)

        async def edge_task(pub: Publisher, stop_ev: asyncio.Event) -> None:
            await producer.run_edges(edge_hz, stop_ev)

        tasks = [*tasks, watch_task, edge_task]
    await publisher.start()
    side: list[asyncio.Task[None]] = []
    made = 0
    try:
        side = [asyncio.create_task(t(publisher, stop), name=f"swarmwatch-sidecar-{i}") for i, t in enumerate(tasks)]
        await publisher.wait_connected(min(interval, 1.0))  # spare the first batch a trip through the spool
        next_s = time.monotonic()
        while not stop.is_set():
            try:
                await producer.tick()
            except Exception:  # noqa: BLE001 - a bug in one snapshot must not end the sidecar
                producer.tick_errors += 1
                log.exception("snapshot %d failed; carrying on", producer.seq)
            made += 1
            if max_batches is not None and made >= max_batches:
                break
            next_s += interval
            now = time.monotonic()
            if next_s < now:  # fell behind (suspended, overloaded): skip, do not burst
                missed = int((now - next_s) / interval) + 1
                producer.ticks_skipped += missed
                next_s += missed * interval
            try:
                await asyncio.wait_for(stop.wait(), next_s - now)
            except asyncio.TimeoutError:
                pass
    finally:
        stop.set()
        if side:
            _, late = await asyncio.wait(side, timeout=close_timeout_s)
            for t in late:  # repeated cancels: a wait_for inside (a probe's request) can swallow one
                await stop_task(t, close_timeout_s, f"sidecar task {t.get_name()}")
            for t in side:
                if t.done() and not t.cancelled() and t.exception() is not None:
                    log.warning("sidecar task %s failed: %r", t.get_name(), t.exception())
        producer.detach()
        await publisher.close(close_timeout_s)
        producer.gpu.close()
        producer.edges.close()
    result = publisher.counters()
    result["batches"] = float(made)
    result["invalid"] = float(producer.invalid)
    result["edge_batches"] = float(producer.edge_batches)
    return result


class BackgroundProducer:
    """Run :func:`run_producer` in a daemon thread, for apps that publish SDK metrics in-process.

        bg = BackgroundProducer("nats://127.0.0.1:4222", "train", "worker-3")
        bg.start()
        ...
        bg.stop()
    """

    def __init__(self, nats_url: str, cluster: str, node: str, interval_s: float = DEFAULT_INTERVAL_S, **kwargs: Any) -> None:
        check_token(cluster, "cluster")
        check_token(node, "node")
        self._args = (nats_url, cluster, node, parse_interval(interval_s))
        self._kwargs = kwargs
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._main, name="swarmwatch-producer", daemon=True)
        self.result: dict[str, float] | None = None
        self.error: BaseException | None = None

    def start(self) -> BackgroundProducer:
        self._thread.start()
        self._ready.wait(10.0)
        return self

    def _main(self) -> None:
        async def go() -> None:
            self._loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()
            self._ready.set()
            self.result = await run_producer(*self._args, stop=self._stop, **self._kwargs)

        try:
            asyncio.run(go())
        except BaseException as exc:  # noqa: BLE001 - reported through .error
            self.error = exc
        finally:
            self._ready.set()

    def stop(self, timeout_s: float = 10.0) -> dict[str, float] | None:
        """Ask the loop to finish (spooling what is unsent) and wait for the thread."""
        if self._loop is not None and self._stop is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout_s)
        return self.result


# --- lean entry point -------------------------------------------------------------------------
# ``swarmwatch produce`` validates its options and then replaces itself (exec) with this entry
# point (``python -m producers``), so the running sidecar holds only what it needs, whatever
# else the CLI imports.
# Secrets travel in the environment (readable only by the same user), never on the command line.

ENV_SECRETS = {
    "SWARMWATCH_NATS_CREDS": "creds",
    "SWARMWATCH_NATS_TOKEN": "token",
    "SWARMWATCH_NATS_USER": "user",
    "SWARMWATCH_NATS_PASSWORD": "password",
    "SWARMWATCH_TLS_CA": "tls_ca",
    "SWARMWATCH_TLS_CERT": "tls_cert",
    "SWARMWATCH_TLS_KEY": "tls_key",
}


def _arg_parser() -> Any:
    import argparse

    ap = argparse.ArgumentParser(
        prog="python -m producers",
        description="swarmwatch producer sidecar (lean entry point of `swarmwatch produce`). "
        "Auth/TLS come from the environment: " + ", ".join(ENV_SECRETS),
    )
    ap.add_argument("--nats", default="nats://127.0.0.1:4222", help="NATS URL(s), comma separated")
    ap.add_argument("--cluster", default="default")
    ap.add_argument("--node", default=None, help="default: this host's short name")
    ap.add_argument("--interval", default="1s", help="'1s', '500ms', '2' (seconds), '1m'")
    ap.add_argument("--watch-pid", type=int, default=None)
    ap.add_argument("--spool-dir", default=None)
    ap.add_argument("--spool-max-mb", type=float, default=DEFAULT_DISK_BYTES / 2**20)
    ap.add_argument("--no-gpu", action="store_true")
    ap.add_argument("--no-per-core", action="store_true")
    ap.add_argument("--log-level", default="info")
    ap.add_argument("--no-probes", action="store_true", help="do not probe peers")
    ap.add_argument("--peers", default="", help="static peer node names, comma separated")
    ap.add_argument("--tcp-probe", action="append", default=[], help="host:port to time TCP connects to (repeatable)")
    ap.add_argument("--probe-interval", default="5s")
    ap.add_argument("--max-peers", type=int, default=32)
    ap.add_argument("--no-discovery", action="store_true")
    ap.add_argument("--probe-delay-ms", type=float, default=0.0, help=argparse_suppress())
    ap.add_argument("--config", default=None, help="sidecar config (YAML/TOML) with 'scrape:' and 'checks:' lists")
    ap.add_argument("--scrape", action="append", default=[], help="Prometheus /metrics URL to scrape (repeatable)")
    ap.add_argument("--scrape-interval", default=None, help="default scrape interval (10s)")
    ap.add_argument("--http-check", action="append", default=[], help="URL to health-check (repeatable)")
    ap.add_argument("--check-interval", default=None, help="default health-check interval (10s)")
    ap.add_argument("--edge-hz", type=float, default=DEFAULT_EDGE_HZ,
                    help="samples per second of the thresholds the processor watches (0: no edge sampling)")
    return ap


def argparse_suppress() -> str:
    import argparse

    return argparse.SUPPRESS


def probe_settings(no_probes: bool, peers: str, tcp: list[str], interval: str, max_peers: int,
                   no_discovery: bool, delay_ms: float) -> Any:
    """ProbeSettings from command-line values (None when probes are off); ValueError names a bad one."""
    if no_probes:
        return None
    from producers.probes import ProbeSettings, parse_target

    for t in tcp:
        parse_target(t)
    if max_peers < 1:
        raise ValueError(f"--max-peers {max_peers!r} must be >= 1")
    if delay_ms < 0:
        raise ValueError(f"--probe-delay-ms {delay_ms!r} must be >= 0")
    names = tuple(p.strip() for p in peers.split(",") if p.strip())
    for n in names:
        check_token(n, "peer")
    return ProbeSettings(names, tuple(tcp), parse_interval(interval), max_peers, not no_discovery, delay_ms)


def source_tasks(targets: list[Any], checks: list[Any]) -> tuple[list[SampleSource], list[SidecarTask]]:
    """Sample sources and sidecar tasks for Prometheus scrape targets and HTTP checks (none when both are empty)."""
    sources: list[SampleSource] = []
    tasks: list[SidecarTask] = []
    if targets:
        from producers.scrape import Scraper

        scraper = Scraper(targets)
        sources.append(scraper.samples)
        tasks.append(scraper.run)
    if checks:
        from producers.checks import HealthChecker

        checker = HealthChecker(checks)
        sources.append(checker.samples)
        tasks.append(checker.run)
    return sources, tasks


def main(argv: list[str] | None = None) -> int:
    """Run the sidecar until SIGINT/SIGTERM; exit 2 with a one-line message on bad options."""
    import signal
    import sys

    args = _arg_parser().parse_args(argv)
    level = getattr(logging, str(args.log_level).upper(), None)
    logging.basicConfig(level=level if isinstance(level, int) else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        interval_s = parse_interval(args.interval)
        if args.spool_max_mb < 0:
            raise ValueError(f"--spool-max-mb {args.spool_max_mb!r} must be >= 0")
        opts = connect_options(**{k: os.environ.get(env) or None for env, k in ENV_SECRETS.items()})
        probes = probe_settings(args.no_probes, args.peers, args.tcp_probe, args.probe_interval, args.max_peers,
                                args.no_discovery, args.probe_delay_ms)
        sources, tasks = source_tasks(*sidecar_sources(args.config, args.scrape, args.http_check,
                                                       args.scrape_interval, args.check_interval))
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    servers = [u.strip() for u in args.nats.split(",") if u.strip()]

    async def run() -> dict[str, float]:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.add_signal_handler(sig, stop.set)
            except (NotImplementedError, RuntimeError):
                pass
        return await run_producer(
            servers if len(servers) > 1 else servers[0],
            args.cluster,
            args.node if args.node is not None else default_node_name(),
            interval_s,
            watch_pid=args.watch_pid,
            spool_dir=args.spool_dir,
            spool_disk_bytes=int(args.spool_max_mb * 2**20),
            gpu=not args.no_gpu,
            per_core=not args.no_per_core,
            connect_options=opts,
            probes=probes,
            extra_sources=sources,
            tasks=tasks,
            stop=stop,
            edge_hz=args.edge_hz,
        )

    try:
        result = asyncio.run(run())
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    log.info("stopped: sent=%d failed=%d spooled=%d dropped=%d",
             result["sent"], result["failed"], result["spooled"], result["dropped"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
