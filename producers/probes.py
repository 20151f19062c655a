"""Peer probes: round-trip latency, jitter, loss and connection success to a node's peers.

Every producer answers probes on the core NATS subject ``sw.probe.<cluster>.<node>``
(request/reply; not stored by any stream) and probes its peers' subjects every
``interval_s``. Peers come from discovery (``producers.discovery``) and/or a
static list; ``host:port`` TCP targets are probed by timing a TCP connect.

Per peer, over a sliding window of the last ``window`` probes:

* ``peer.latency_ms``       mean round-trip time of the successful probes
* ``peer.jitter_ms``        RFC 3550 interarrival jitter over consecutive RTTs
* ``peer.loss_percent``     probes with no answer (timeout, no responder, refused), in %
* ``peer.success_rate``     1 - loss, in [0, 1]
* ``peer.consecutive_failures``  failed probes since the last success

all labelled ``{"peer": <node or host:port>, "via": "nats"|"tcp"}``; and per node:

* ``net.peer_count``               peers being probed
* ``net.peers_reachable``          peers whose last probe succeeded
* ``net.connection_success_rate``  successful / all probes in the windows, in [0, 1]
* ``net.avg_latency_ms``           mean of the peers' latencies
* ``net.avg_jitter_ms``, ``net.loss_percent``
* ``net.bandwidth_mbps``           bytes sent + received per second by the host's
  interfaces other than loopback (psutil counters), in megabits per second; falls
  back to the probes' own bytes when psutil cannot read the counters

Use :func:`run_probes` as a task in the sidecar, or ``python -m producers.probes``.
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import math
import signal
import sys
import time
import zlib
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from producers.discovery import (
    DEFAULT_FORGET_AFTER_S,
    DEFAULT_HEARTBEAT_S,
    DEFAULT_MAX_PEERS,
    Discovery,
    PeerTable,
    PublishFn,
)
from schemas import MetricBatch, Sample, codec, subjects

log = logging.getLogger(__name__)

PROBE_PREFIX = "sw.probe"
DEFAULT_INTERVAL_S = 1.0  # seconds between probe rounds
DEFAULT_TIMEOUT_S = 2.0  # seconds a probe waits for its answer (at most the interval)
DEFAULT_WINDOW = 20  # probes per peer in the sliding window
DEFAULT_PAYLOAD_BYTES = 64  # size of one probe request
DEFAULT_MAX_INFLIGHT = 1024  # delayed replies a responder holds at once; more are refused
MAX_PROBE_DELAY_MS = 60_000.0
_JITTER_GAIN = 1.0 / 16.0  # RFC 3550 section 6.4.1


def probe_subject(cluster: str, node: str) -> str:
    """``sw.probe.<cluster>.<node>``: where ``node`` answers probes (core NATS only)."""
    return f"{PROBE_PREFIX}.{subjects.check_token(cluster, 'cluster')}.{subjects.check_token(node, 'node')}"


def parse_target(target: str) -> tuple[str, int]:
    """``"host:port"`` (or ``"[v6]:port"``) -> (host, port); ValueError names a bad value."""
    host, sep, port_s = target.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port_s.isdigit() or not 0 < int(port_s) < 65536:
        raise ValueError(f"TCP probe target {target!r} is invalid; expected host:port with port 1-65535")
    return host, int(port_s)


class JitterEstimator:
    """RFC 3550 interarrival jitter, applied to round-trip times in milliseconds.

    ``J += (|D| - J) / 16`` where ``D`` is the difference between two consecutive
    RTTs (for RTP, two consecutive transit times). A lost probe does not reset it.
    """

    __slots__ = ("jitter_ms", "_last_ms")

    def __init__(self) -> None:
        self.jitter_ms = 0.0
        self._last_ms: float | None = None

    def update(self, rtt_ms: float) -> float:
        """Feed one RTT; return the new jitter (ms)."""
        if self._last_ms is not None:
            d = abs(rtt_ms - self._last_ms)
            self.jitter_ms += (d - self.jitter_ms) * _JITTER_GAIN
        self._last_ms = rtt_ms
        return self.jitter_ms


@dataclass(slots=True)
class ProbeResult:
    """One probe: success, round trip (ms, None when failed), bytes moved and the error if any."""

    ok: bool
    rtt_ms: float | None
    ts: float
    nbytes: int = 0
    error: str | None = None


class ProbeWindow:
    """The last ``size`` probes of one target with loss, success and latency over them."""

    def __init__(self, size: int = DEFAULT_WINDOW, via: str = "nats") -> None:
        if size < 1:
            raise ValueError(f"probe window must hold >= 1 probe, got {size!r}")
        self.via = via
        self.results: deque[ProbeResult] = deque(maxlen=size)
        self.jitter = JitterEstimator()
        self.consecutive_failures = 0
        self.total = 0
        self.failures_total = 0

    def add(self, r: ProbeResult) -> None:
        self.results.append(r)
        self.total += 1
        if r.ok and r.rtt_ms is not None:
            self.jitter.update(r.rtt_ms)
            self.consecutive_failures = 0
        else:
            self.consecutive_failures += 1
            self.failures_total += 1

    @property
    def count(self) -> int:
        return len(self.results)

    @property
    def successes(self) -> int:
        return sum(1 for r in self.results if r.ok)

    @property
    def success_rate(self) -> float:
        """Successful probes / probes in the window, in [0, 1] (1.0 before any probe)."""
        n = len(self.results)
        return self.successes / n if n else 1.0

    @property
    def loss_percent(self) -> float:
        return 100.0 * (1.0 - self.success_rate)

    @property
    def mean_rtt_ms(self) -> float | None:
        """Mean RTT of the window's successful probes, or None when none succeeded."""
        rtts = [r.rtt_ms for r in self.results if r.ok and r.rtt_ms is not None]
        return sum(rtts) / len(rtts) if rtts else None

    @property
    def last_ok(self) -> bool:
        return bool(self.results) and self.results[-1].ok


class ProbeResponder:
    """Answers probes on ``sw.probe.<cluster>.<node>``, optionally after ``delay_ms``.

    The delay simulates a slow link (tests inject it); delayed replies are held
    concurrently, at most ``max_inflight`` at once (more are refused: no reply, counted).
    """

    def __init__(
        self, nc: Any, cluster: str, node: str, *, delay_ms: float = 0.0, max_inflight: int = DEFAULT_MAX_INFLIGHT
    ) -> None:
        if not (0.0 <= delay_ms <= MAX_PROBE_DELAY_MS) or math.isnan(delay_ms):
            raise ValueError(f"probe delay {delay_ms!r} ms is invalid; expected 0-{MAX_PROBE_DELAY_MS:g} ms")
        self.nc = nc
        self.subject = probe_subject(cluster, node)
        self.node = node
        self.delay_ms = float(delay_ms)
        self.max_inflight = max_inflight
        self.answered = 0
        self.refused = 0
        self._sub: Any = None
        self._inflight: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._sub = await self.nc.subscribe(self.subject, cb=self._on_probe)

    async def stop(self) -> None:
        if self._sub is not None:
            with contextlib.suppress(Exception):
                await self._sub.unsubscribe()
            self._sub = None
        for t in list(self._inflight):
            t.cancel()
        self._inflight.clear()

    async def _on_probe(self, msg: Any) -> None:
        if not msg.reply:
            return
        if self.delay_ms <= 0:
            await self._reply(msg)
            return
        if len(self._inflight) >= self.max_inflight:
            self.refused += 1
            return
        task = asyncio.create_task(self._reply_later(msg))
        self._inflight.add(task)
        task.add_done_callback(self._inflight.discard)

    async def _reply_later(self, msg: Any) -> None:
        await asyncio.sleep(self.delay_ms / 1000.0)
        await self._reply(msg)

    async def _reply(self, msg: Any) -> None:
        # The answer echoes the request (same size both ways) and names the responder.
        try:
            await self.nc.publish(msg.reply, b'{"node":"' + self.node.encode() + b'","echo":' + _as_json(msg.data) + b"}")
            self.answered += 1
        except Exception:  # connection closing: the prober sees a timeout
            self.refused += 1


def _as_json(data: bytes) -> bytes:
    try:
        orjson.loads(data)
        return data
    except orjson.JSONDecodeError:
        return b"null"


async def tcp_connect_ms(host: str, port: int, timeout_s: float) -> float:
    """Time (ms) to open a TCP connection to host:port; raises OSError/TimeoutError on failure."""
    t0 = time.perf_counter()
    _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout_s)
    dt = (time.perf_counter() - t0) * 1000.0
    writer.close()
    with contextlib.suppress(Exception):
        await writer.wait_closed()
    return dt


class _NetCounter:
    """Host network throughput from psutil byte counters, in megabits per second."""

    def __init__(self) -> None:
        self._last: tuple[float, int] | None = None
        self.available = True

    def mbps(self) -> float | None:
        try:
            import psutil

            per = psutil.net_io_counters(pernic=True, nowrap=True) or {}
            total = sum(int(c.bytes_sent + c.bytes_recv) for nic, c in per.items() if not nic.startswith("lo"))
        except Exception:
            self.available = False
            return None
        now = time.monotonic()
        last, self._last = self._last, (now, total)
        if last is None or now <= last[0] or total < last[1]:
            return None
        return (total - last[1]) * 8 / 1e6 / (now - last[0])


@dataclass(frozen=True)
class ProbeSettings:
    """How the sidecar probes its peers (see :class:`PeerProber`).

    ``peers``: static peer node names (discovery adds the rest); ``tcp_targets``:
    ``host:port`` to time TCP connects to; ``interval_s``: seconds between rounds;
    ``max_peers``: peers probed per round; ``discover``: announce and find peers via
    peer.join/heartbeat/leave events; ``delay_ms``: delay this node's probe answers (tests).
    """

    peers: tuple[str, ...] = ()
    tcp_targets: tuple[str, ...] = ()
    interval_s: float = 5.0
    max_peers: int = 32
    discover: bool = True
    delay_ms: float = 0.0


class PeerProber:
    """Probes a node's peers and TCP targets and turns the results into samples.

    ``start()`` begins answering probes and discovering peers; ``probe_once()``
    runs one round; ``samples()`` gives the current figures (a sidecar can add
    them to its own batch); ``run()`` loops and, with ``publish=True``, sends a
    MetricBatch of the figures to ``sw.metrics.<cluster>.<node>`` every round.
    ``stop(clean=True)`` announces ``peer.leave`` before it stops answering.
    Messages go through ``publish_fn(subject, payload, msg_id)`` when given (the
    sidecar's spooling publisher), else JetStream with ``js``, else core NATS.
    """

    def __init__(
        self,
        nc: Any | None,
        cluster: str,
        node: str,
        *,
        js: Any | None = None,
        static_peers: Iterable[str] = (),
        tcp_targets: Iterable[str] = (),
        interval_s: float = DEFAULT_INTERVAL_S,
        timeout_s: float | None = None,
        window: int = DEFAULT_WINDOW,
        heartbeat_s: float = DEFAULT_HEARTBEAT_S,
        forget_after_s: float = DEFAULT_FORGET_AFTER_S,
        max_peers: int = DEFAULT_MAX_PEERS,
        probe_delay_ms: float = 0.0,
        payload_bytes: int = DEFAULT_PAYLOAD_BYTES,
        discover: bool = True,
        publish: bool = True,
        publish_fn: PublishFn | None = None,
    ) -> None:
        subjects.check_token(cluster, "cluster")
        subjects.check_token(node, "node")
        if not interval_s > 0:
            raise ValueError(f"probe interval_s must be > 0 seconds, got {interval_s!r}")
        timeout = min(DEFAULT_TIMEOUT_S, interval_s) if timeout_s is None else timeout_s
        if not timeout > 0:
            raise ValueError(f"probe timeout_s must be > 0 seconds, got {timeout_s!r}")
        if window < 1:
            raise ValueError(f"probe window must hold >= 1 probe, got {window!r}")
        if not 16 <= payload_bytes <= 65536:
            raise ValueError(f"probe payload_bytes must be 16-65536, got {payload_bytes!r}")
        self.nc = nc
        self.js = js
        self.cluster = cluster
        self.node = node
        self.interval_s = float(interval_s)
        self.timeout_s = float(timeout)
        self.window = int(window)
        self.max_peers = int(max_peers)
        self.payload_bytes = int(payload_bytes)
        self.publish = publish
        self.publish_fn = publish_fn
        self.tcp_targets: list[tuple[str, str, int]] = []
        for t in tcp_targets:
            host, port = parse_target(t)
            self.tcp_targets.append((t, host, port))
        self.table = PeerTable(node, static_peers, forget_after_s=forget_after_s, max_peers=max_peers)
        self.responder = ProbeResponder(nc, cluster, node, delay_ms=probe_delay_ms)
        self.discovery = (
            Discovery(
                nc,
                cluster,
                node,
                self.table,
                js=js,
                heartbeat_s=heartbeat_s,
                info={"probe": probe_subject(cluster, node)},
                publish_fn=publish_fn,
            )
            if discover
            else None
        )
        self.windows: dict[str, ProbeWindow] = {}
        self.rounds = 0
        self.refused_targets = 0
        self.batches_published = 0
        self.publish_errors = 0
        self.probe_bytes = 0
        self._seq = 0
        self._net = _NetCounter()
        self._last_mbps: float | None = None
        self._probe_bytes_mark: tuple[float, int] = (time.monotonic(), 0)
        self._started = False

    @property
    def started(self) -> bool:
        return self._started

    async def start(self, nc: Any | None = None) -> None:
        """Answer probes, then announce this node and listen for peers.

        ``nc`` binds the NATS client when the prober was built without one (a
        sidecar whose connection comes up later).
        """
        if nc is not None:
            self.nc = self.responder.nc = nc
            if self.discovery is not None:
                self.discovery.nc = nc
        if self.nc is None:
            raise ValueError(f"prober {self.cluster}/{self.node} has no NATS client; pass one to start()")
        await self.responder.start()
        if self.discovery is not None:
            await self.discovery.start()
        self._net.mbps()  # prime the byte counters
        self._started = True

    async def stop(self, clean: bool = True) -> None:
        """Announce leave (clean), keep answering for one probe timeout, then stop."""
        if not self._started:
            return
        if self.discovery is not None:
            await self.discovery.stop(clean=clean)
        if clean:
            # Peers may have probes in flight sent before they saw the leave.
            await asyncio.sleep(min(self.timeout_s, 0.5))
        await self.responder.stop()
        self._started = False

    def targets(self) -> list[tuple[str, str]]:
        """(name, via) of everything probed this round, peers first; bounded by ``max_peers``.

        Past ``max_peers``, each node keeps a stable pseudo-random subset of its peers
        (ordered by crc32 of the node and peer names), so in a large cluster every peer
        is still probed by about ``max_peers`` others and no node by all of them.
        """
        active = sorted(self.table.active(), key=lambda p: zlib.crc32(f"{self.node}|{p}".encode()))
        out = [(p, "nats") for p in active]
        out += [(name, "tcp") for name, _, _ in self.tcp_targets]
        if len(out) > self.max_peers:
            self.refused_targets += len(out) - self.max_peers
            out = out[: self.max_peers]
        return out

    async def probe_once(self) -> list[tuple[str, ProbeResult]]:
        """Probe every target once, concurrently; record and return the results."""
        targets = self.targets()
        names = {n for n, _ in targets}
        for gone in [n for n in self.windows if n not in names]:
            del self.windows[gone]  # peer left or was forgotten: its figures stop
        results = await asyncio.gather(*(self._probe(name, via) for name, via in targets))
        out: list[tuple[str, ProbeResult]] = []
        for (name, via), r in zip(targets, results, strict=True):
            w = self.windows.get(name)
            if w is None:
                w = self.windows[name] = ProbeWindow(self.window, via)
            w.add(r)
            self.probe_bytes += r.nbytes
            out.append((name, r))
        self.rounds += 1
        return out

    async def _probe(self, name: str, via: str) -> ProbeResult:
        if via == "tcp":
            _, host, port = next(t for t in self.tcp_targets if t[0] == name)
            ts = time.time()
            try:
                ms = await tcp_connect_ms(host, port, self.timeout_s)
                return ProbeResult(True, ms, ts)
            except (OSError, asyncio.TimeoutError) as exc:
                return ProbeResult(False, None, ts, error=type(exc).__name__)
        import nats.errors

        self._seq += 1
        body = orjson.dumps({"from": self.node, "seq": self._seq, "pad": ""})
        pad = max(0, self.payload_bytes - len(body))
        body = orjson.dumps({"from": self.node, "seq": self._seq, "pad": "x" * pad})
        ts = time.time()
        t0 = time.perf_counter()
        try:
            reply = await self.nc.request(probe_subject(self.cluster, name), body, timeout=self.timeout_s)
        except nats.errors.NoRespondersError:
            return ProbeResult(False, None, ts, len(body), "no_responders")
        except (nats.errors.TimeoutError, asyncio.TimeoutError):
            return ProbeResult(False, None, ts, len(body), "timeout")
        except Exception as exc:  # connection closed or draining
            return ProbeResult(False, None, ts, 0, type(exc).__name__)
        rtt = (time.perf_counter() - t0) * 1000.0
        return ProbeResult(True, rtt, ts, len(body) + len(reply.data))

    def _bandwidth_mbps(self) -> float | None:
        mbps = self._net.mbps()
        if mbps is None and not self._net.available:
            now = time.monotonic()
            t0, b0 = self._probe_bytes_mark
            self._probe_bytes_mark = (now, self.probe_bytes)
            if now > t0:
                mbps = (self.probe_bytes - b0) * 8 / 1e6 / (now - t0)
        if mbps is not None:
            self._last_mbps = mbps
        return self._last_mbps

    def samples(self) -> list[Sample]:
        """Per-peer and node-level figures from the current windows (none before the first round)."""
        out: list[Sample] = []
        if self.rounds == 0:
            return out
        lat: list[float] = []
        jit: list[float] = []
        ok = total = reachable = 0
        for name, w in sorted(self.windows.items()):
            if not w.count:
                continue
            labels = {"peer": name, "via": w.via}
            mean = w.mean_rtt_ms
            if mean is not None:
                out.append(Sample("peer.latency_ms", mean, "ms", labels))
                out.append(Sample("peer.jitter_ms", w.jitter.jitter_ms, "ms", labels))
                lat.append(mean)
                jit.append(w.jitter.jitter_ms)
            out.append(Sample("peer.loss_percent", w.loss_percent, "%", labels))
            out.append(Sample("peer.success_rate", w.success_rate, None, labels))
            out.append(Sample("peer.consecutive_failures", float(w.consecutive_failures), None, labels))
            ok += w.successes
            total += w.count
            reachable += int(w.last_ok)
        out.append(Sample("net.peer_count", float(len(self.windows))))
        out.append(Sample("net.peers_reachable", float(reachable)))
        out.append(Sample("net.connection_success_rate", ok / total if total else 1.0))
        out.append(Sample("net.loss_percent", 100.0 * (1 - ok / total) if total else 0.0, "%"))
        if lat:
            out.append(Sample("net.avg_latency_ms", sum(lat) / len(lat), "ms"))
            out.append(Sample("net.avg_jitter_ms", sum(jit) / len(jit), "ms"))
        mbps = self._bandwidth_mbps()
        if mbps is not None:
            out.append(Sample("net.bandwidth_mbps", mbps, "Mbit/s"))
        return out

    def batch(self, ts: float | None = None) -> MetricBatch:
        """The current figures as one MetricBatch of this node."""
        return MetricBatch(self.cluster, self.node, time.time() if ts is None else ts, self.samples(), seq=self.rounds)

    async def publish_batch(self) -> None:
        b = self.batch()
        subject = subjects.metrics(self.cluster, self.node)
        data = codec.encode(b)
        msg_id = f"probe:{self.cluster}:{self.node}:{b.ts:.6f}"
        try:
            if self.publish_fn is not None:
                await self.publish_fn(subject, data, msg_id)
            elif self.js is not None:
                await self.js.publish(subject, data, headers={"Nats-Msg-Id": msg_id}, timeout=2)
            else:
                await self.nc.publish(subject, data)
            self.batches_published += 1
        except Exception as exc:
            self.publish_errors += 1
            log.warning("probes: could not publish figures of %s/%s: %s", self.cluster, self.node, exc)

    async def run(self, stop: asyncio.Event | None = None) -> None:
        """Probe every ``interval_s`` until ``stop`` is set (or the task is cancelled)."""
        if not self._started:
            await self.start()
        stop = stop or asyncio.Event()
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        while not stop.is_set():
            await self.probe_once()
            if self.publish:
                await self.publish_batch()
            next_at += self.interval_s
            delay = next_at - loop.time()
            if delay < 0:  # a round overran: skip the missed slots rather than burst
                next_at = loop.time()
                delay = 0.0
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)


    async def run_with_publisher(self, publisher: Any, stop: asyncio.Event) -> None:
        """For the sidecar: wait for ``publisher.client``, probe until ``stop``, then leave cleanly.

        Build the prober with ``nc=None, publish=False, publish_fn=publisher.publish``
        and add ``prober.samples`` to the sidecar's sample sources.
        """
        try:
            while publisher.client is None:
                if stop.is_set():
                    return
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(stop.wait(), 0.2)
            await self.start(publisher.client)
            await self.run(stop)
        finally:
            await asyncio.shield(self.stop(clean=True))


async def run_probes(
    nc: Any,
    js: Any | None,
    cluster: str,
    node: str,
    *,
    stop: asyncio.Event | None = None,
    clean_stop: bool = True,
    **options: Any,
) -> PeerProber:
    """Run a :class:`PeerProber` until ``stop`` is set or the task is cancelled; leave cleanly.

    ``options`` are PeerProber's keyword arguments (static_peers, tcp_targets,
    interval_s, timeout_s, window, heartbeat_s, probe_delay_ms, publish, ...).
    """
    prober = PeerProber(nc, cluster, node, js=js, **options)
    await prober.start()
    try:
        await prober.run(stop)
    finally:
        await asyncio.shield(prober.stop(clean=clean_stop))
    return prober


def _split(values: Sequence[str]) -> list[str]:
    return [v.strip() for item in values for v in item.split(",") if v.strip()]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m producers.probes", description="Answer and send peer probes; publish network figures.")
    p.add_argument("--url", default="nats://127.0.0.1:4222", help="NATS server URL")
    p.add_argument("--cluster", required=True)
    p.add_argument("--node", required=True)
    p.add_argument("--peers", action="append", default=[], help="static peers, comma-separated node names")
    p.add_argument("--tcp", action="append", default=[], help="TCP targets host:port, comma-separated")
    p.add_argument("--interval-s", type=float, default=DEFAULT_INTERVAL_S)
    p.add_argument("--timeout-s", type=float, default=None)
    p.add_argument("--window", type=int, default=DEFAULT_WINDOW)
    p.add_argument("--heartbeat-s", type=float, default=DEFAULT_HEARTBEAT_S)
    p.add_argument("--probe-delay-ms", type=float, default=0.0, help="delay this node's probe answers (testing)")
    p.add_argument("--no-discovery", action="store_true", help="use only --peers")
    p.add_argument("--core", action="store_true", help="publish with core NATS instead of JetStream")
    return p


async def _amain(args: argparse.Namespace) -> None:
    import nats

    from swarmwatch.cancellation import close_connection

    # Build first: bad names, targets or delays fail before any connection.
    prober = PeerProber(
        None,
        args.cluster,
        args.node,
        static_peers=_split(args.peers),
        tcp_targets=_split(args.tcp),
        interval_s=args.interval_s,
        timeout_s=args.timeout_s,
        window=args.window,
        heartbeat_s=args.heartbeat_s,
        probe_delay_ms=args.probe_delay_ms,
        discover=not args.no_discovery,
    )
    try:
        nc = await nats.connect(args.url, name=f"probes-{args.cluster}-{args.node}", max_reconnect_attempts=-1)
    except Exception as exc:
        raise ConnectionError(f"cannot connect to NATS at {args.url!r}: {exc}") from None
    if not args.core:
        prober.js = nc.jetstream()
        if prober.discovery is not None:
            prober.discovery.js = prober.js
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await prober.start(nc)
        await prober.run(stop)
    finally:
        await asyncio.shield(prober.stop(clean=True))
        await close_connection(nc)  # bounded: a plain drain/close waits for ever on a server that reads nothing


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    try:
        asyncio.run(_amain(args))
    except (ValueError, ConnectionError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
