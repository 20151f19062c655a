"""Edge-triggered sampling: the thresholds the processor watches, sampled fast, published on a crossing.

The processor publishes its rules' thresholds to the KV bucket ``sw_watch``
(:mod:`schemas.watches`); :func:`follow_watches` keeps a producer's copy. An
:class:`EdgeSampler` reads just the watched metrics among the cheap sources
(CPU from /proc/stat deltas, memory, swap, load, NVML utilisation and
temperature) at ``edge_hz`` (default 10 Hz), and SDK gauges on every
``set()``. When a watched value crosses its threshold, or crosses back past the
clear threshold (the rule's hysteresis), the sidecar publishes an out-of-band
MetricBatch with the fast samples at once; the regular batch goes on as
before. The processor still decides (``for``, hysteresis, dedup): the edge
sample only reaches it earlier, and a later regular sample of the same value
changes nothing there.
"""
from __future__ import annotations

import asyncio
import bisect
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from producers.samples import SampleBuffer
from schemas.models import Sample
from schemas.watches import WATCH_BUCKET, Watch, decode_watches

if TYPE_CHECKING:
    from producers.collectors import SystemCollector
    from producers.gpu import GpuCollector
    from producers.publisher import Publisher

DEFAULT_EDGE_HZ = 10.0  # fast samples per second of the watched cheap sources
MAX_EDGE_BATCHES_PER_S = 2.0  # edge batches a producer may add per second (burst of as many); more wait for the tick
WATCH_RETRY_S = 10.0  # how often a producer looks again for a missing bucket or a lost watch
CPU_WINDOW_SAMPLES = 2  # fast CPU % is over this many fast periods (200 ms at 10 Hz): less noise, still early

log = logging.getLogger("swarmwatch.producer")

_CPU = ("cpu.percent", "cpu.iowait_percent")
_MEM = ("mem.percent", "mem.available_bytes", "mem.used_bytes")
_SWAP = ("swap.percent",)
_LOAD = ("load.1m", "load.5m", "load.15m")
_GPU_UTIL = "gpu.utilization_percent"
_GPU_TEMP = "gpu.temperature_c"
FAST_METRICS = (*_CPU, *_MEM, *_SWAP, *_LOAD, _GPU_UTIL, _GPU_TEMP)
"""System metrics an edge sampler can read fast; SDK gauges come on ``set()``."""

StateKey = tuple[Any, ...]
CpuReading = list[tuple[float, float, float]]  # per core: (total, busy, iowait) seconds


class _ProcFile:
    """A /proc file kept open and re-read with ``pread`` (about half the cost of psutil's reader); Linux only."""

    __slots__ = ("fd", "size")

    def __init__(self, path: str, size: int) -> None:
        self.size = size
        try:
            self.fd: int | None = os.open(path, os.O_RDONLY)
        except (OSError, AttributeError):
            self.fd = None

    def read(self) -> bytes | None:
        if self.fd is None:
            return None
        try:
            return os.pread(self.fd, self.size, 0)
        except OSError:
            return None

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


try:
    _CLK_TCK = float(os.sysconf("SC_CLK_TCK"))
except (AttributeError, ValueError, OSError):
    _CLK_TCK = 100.0


def parse_proc_stat(data: bytes) -> CpuReading:
    """Per-core (total, busy, iowait) seconds from /proc/stat, computed exactly as from psutil's cpu_times."""
    out: CpuReading = []
    for line in data.split(b"\n"):
        if not line.startswith(b"cpu"):
            break
        if line[3:4] == b" ":
            continue  # the all-CPU line: totals are summed per core, as the regular collector does
        vals = [int(x) / _CLK_TCK for x in line.split()[1:11]]
        total = sum(vals)
        if len(vals) > 8:
            total -= vals[8]  # guest is already in user
        if len(vals) > 9:
            total -= vals[9]
        iowait = vals[4] if len(vals) > 4 else 0.0
        out.append((total, total - (vals[3] + iowait), iowait))
    return out


def parse_proc_stat_total(data: bytes) -> tuple[float, float, float]:
    """(total, busy, iowait) seconds of all CPUs together, from /proc/stat's first line only."""
    line = data[: data.find(b"\n")]
    vals = [int(x) / _CLK_TCK for x in line.split()[1:11]]
    total = sum(vals)
    if len(vals) > 8:
        total -= vals[8]
    if len(vals) > 9:
        total -= vals[9]
    iowait = vals[4] if len(vals) > 4 else 0.0
    return (total, total - (vals[3] + iowait), iowait)


def parse_meminfo(data: bytes) -> dict[str, int]:
    """The first /proc/meminfo fields (MemTotal, MemFree, MemAvailable) in bytes."""
    out: dict[str, int] = {}
    for line in data.split(b"\n", 3)[:3]:
        name, _, rest = line.partition(b":")
        parts = rest.split()
        if len(parts) == 2:
            out[name.decode()] = int(parts[0]) * 1024
    return out


def _watch_key(w: Watch) -> tuple[Any, ...]:
    labels = None if w.labels is None else tuple(sorted(w.labels.items()))
    return (w.rule, w.metric, w.op, w.threshold, w.hysteresis, labels)


def _series(labels: dict[str, str] | None) -> tuple[tuple[str, str], ...]:
    return () if not labels else tuple(sorted(labels.items()))


OnCrossing = Callable[[list[Sample], "CpuReading | None"], None]
"""Called from the sampler thread with the fast samples and the CPU reading they were computed up to."""


class EdgeSampler:
    """Fast sampling and crossing detection for the watched thresholds (no NATS here).

    :meth:`start` runs the fast reads in a small thread of their own: a
    sleeping thread wakes for a third of what an event-loop timer costs, and
    the producer's event loop is woken only for a crossing. Every method is
    safe to call from any thread.

    ``crossings`` counts threshold crossings seen; ``suppressed`` those whose
    edge batch the rate limit left to the regular tick.
    """

    def __init__(
        self,
        system: SystemCollector | None = None,
        gpu: GpuCollector | None = None,
        *,
        per_core: bool = True,
        max_batches_per_s: float = MAX_EDGE_BATCHES_PER_S,
    ) -> None:
        self.system = system
        self.gpu = gpu
        self.per_core = per_core
        self.max_batches_per_s = max_batches_per_s
        self.watches: list[Watch] = []
        self.crossings = 0
        self.suppressed = 0
        self.errors = 0
        self._state: dict[StateKey, bool] = {}
        self._by_name: dict[str, list[tuple[Watch, tuple[Any, ...]]]] = {}
        self._need: set[str] = set()
        self._percore = False
        self._last_cpu: CpuReading | None = None
        self._cpu_hist: deque[CpuReading] = deque(maxlen=CPU_WINDOW_SAMPLES + 1)
        ncpu = os.cpu_count() or 1
        self._stat = _ProcFile("/proc/stat", 4096 + 160 * ncpu)
        self._meminfo = _ProcFile("/proc/meminfo", 256)  # MemTotal, MemFree and MemAvailable are its first lines
        self._bounds: dict[str, tuple[float, ...]] | None = None  # lean path: the limits per watched fast metric
        self._bands: dict[str, int] = {}  # lean path: where each value lay among its limits at the last full check
        self._tokens = max_batches_per_s
        self._tokens_at = time.monotonic()
        self._lock = threading.RLock()
        self._wake = threading.Event()
        self._halt = threading.Event()
        self._thread: threading.Thread | None = None

    # --- the sampler thread ---------------------------------------------------
    def start(self, hz: float, on_crossing: OnCrossing) -> None:
        """Sample the watched cheap sources ``hz`` times a second in a daemon thread; call ``on_crossing`` on a crossing."""
        if self._thread is not None:
            return
        self._halt.clear()
        self._thread = threading.Thread(target=self._run, args=(1.0 / hz, on_crossing), name="swarmwatch-edges", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 2.0) -> None:
        self._halt.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
            self._thread = None

    def _run(self, period: float, on_crossing: OnCrossing) -> None:
        due = time.monotonic()
        while not self._halt.is_set():
            if not self._need:  # nothing watched that can be read fast: wait for new watches
                self._wake.wait(1.0)
                self._wake.clear()
                due = time.monotonic()
                continue
            try:
                with self._lock:
                    samples = self._lean() if self._bounds is not None else self._sample()
                    hit = bool(samples) and self._crossed(samples) and self._admit(time.monotonic())
                    reading = self._last_cpu
                if hit:
                    on_crossing(samples, reading)
            except Exception:  # noqa: BLE001 - a bug here must not end edge sampling silently
                self.errors += 1
                log.exception("edge sampling failed; carrying on")
            due += period
            now = time.monotonic()
            if due < now:  # fell behind (suspended, overloaded): skip, do not burst
                due = now + period
            time.sleep(due - now)

    # --- watches --------------------------------------------------------------
    def set_watches(self, watches: Iterable[Watch]) -> None:
        """Replace the watched thresholds; crossing state is kept for thresholds that did not change."""
        with self._lock:
            self._set_watches(watches)
        self._wake.set()

    def _set_watches(self, watches: Iterable[Watch]) -> None:
        self.watches = list(watches)
        keep = {_watch_key(w) for w in self.watches}
        self._state = {k: v for k, v in self._state.items() if k[0] in keep}
        self._by_name = {}
        self._need = {n for n in FAST_METRICS if self._matching(n)}
        self._percore = self.per_core and any(
            w.labels is None or "core" in w.labels for w, _ in self._matching("cpu.percent")
        )
        if not self._need & set(_CPU):
            self._last_cpu = None
            self._cpu_hist.clear()
        self._bands = {}
        self._bounds = None
        lean = set(_CPU) | set(_MEM)
        if self._need and self._need <= lean and not self._percore and self._stat.fd is not None and self._meminfo.fd is not None:
            bounds: dict[str, tuple[float, ...]] = {}
            for name in self._need:
                limits: set[float] = set()
                for w, _ in self._matching(name):
                    if w.hysteresis < 0:  # the band shortcut below needs clear threshold <= threshold
                        return
                    limits.update((float(w.threshold), float(w.clear_threshold)))
                bounds[name] = tuple(sorted(limits))
            self._bounds = bounds

    @property
    def active(self) -> bool:
        """True when some watched metric is one this sampler reads fast."""
        return bool(self._need)

    def watches_name(self, name: str) -> bool:
        return bool(self._matching(name))

    def _matching(self, name: str) -> list[tuple[Watch, tuple[Any, ...]]]:
        got = self._by_name.get(name)
        if got is None:
            got = [(w, _watch_key(w)) for w in self.watches if w.matches_name(name)]
            if len(self._by_name) < 10_000:
                self._by_name[name] = got
        return got

    # --- crossings ------------------------------------------------------------
    def crossed(self, samples: Iterable[Sample]) -> bool:
        """Feed samples; True if any watched series crossed its threshold (either way) since its last sample.

        A series seen for the first time counts as coming from the clear side:
        a value already past its threshold (a new watch, a gauge first set high)
        is published at once too; the processor decides whether that is news.
        """
        with self._lock:
            if self._bands:  # a sample from outside the sampler thread (an SDK gauge of the same name) may move a lean series' state
                samples = list(samples)
                if any(x.name in self._bands for x in samples):
                    self._bands = {}
            return self._crossed(samples)

    def _crossed(self, samples: Iterable[Sample]) -> bool:
        hit = False
        for s in samples:
            for w, wk in self._matching(s.name):
                if not w.matches_labels(s.labels):
                    continue
                key = (wk, _series(s.labels))
                was = self._state.get(key)
                now = w.active(s.value, bool(was))
                self._state[key] = now
                if now != bool(was):
                    self.crossings += 1
                    hit = True
        return hit

    def admit(self, now_s: float | None = None) -> bool:
        """Take one edge batch from the rate limit; False (counted in ``suppressed``) when it is spent."""
        now = time.monotonic() if now_s is None else now_s
        with self._lock:
            return self._admit(now)

    def _admit(self, now: float) -> bool:
        self._tokens = min(self.max_batches_per_s, self._tokens + max(0.0, now - self._tokens_at) * self.max_batches_per_s)
        self._tokens_at = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        self.suppressed += 1
        return False

    # --- fast sampling --------------------------------------------------------
    def sample(self) -> list[Sample]:
        """Read the watched cheap sources now (about 60 µs); CPU % is over the last ``CPU_WINDOW_SAMPLES`` calls."""
        with self._lock:
            return self._sample()

    def _sample(self) -> list[Sample]:
        out = SampleBuffer()
        need = self._need
        try:
            if "cpu.percent" in need or "cpu.iowait_percent" in need:
                self._cpu(out)
            if need.intersection(_MEM):
                self._memory(out)
            if "swap.percent" in need:
                import psutil

                sw = psutil.swap_memory()
                out.add("swap.percent", sw.percent if sw.total else 0.0, "%")
            if need.intersection(_LOAD) and hasattr(os, "getloadavg"):
                l1, l5, l15 = os.getloadavg()
                out.add("load.1m", l1)
                out.add("load.5m", l5)
                out.add("load.15m", l15)
            if self.gpu is not None and (_GPU_UTIL in need or _GPU_TEMP in need):
                self.gpu.collect_fast(out, _GPU_UTIL in need, _GPU_TEMP in need)
        except Exception:  # noqa: BLE001 - a broken source must not stop the sampler
            self.errors += 1
        return out.items

    def _lean(self) -> list[Sample]:
        """One fast tick for total CPU and memory only: raw reads and float compares; samples only when a value moved past a limit.

        Between two adjacent limits (thresholds and clear thresholds of every
        matching watch) no watch can change state, so when every value lies in
        the same open interval as at the last full check nothing is built and
        no crossing is possible; otherwise the samples are built exactly as
        :meth:`_sample` does and checked in full.
        """
        bounds = self._bounds
        assert bounds is not None
        need = self._need
        vals: dict[str, float | None] = {}
        try:
            if "cpu.percent" in need or "cpu.iowait_percent" in need:
                raw = self._stat.read()
                if not raw:
                    self._bands = {}
                    return self._sample()
                now = [parse_proc_stat_total(raw)]
                self._last_cpu = None
                hist = self._cpu_hist
                if hist and len(hist[-1]) != 1:
                    hist.clear()
                hist.append(now)
                if len(hist) >= 2:
                    (t1, b1, w1), (t0, b0, w0) = now[0], hist[0][0]
                    dt, db, dw = t1 - t0, b1 - b0, w1 - w0
                    if dt > 0 and db >= 0 and dw >= 0:
                        if "cpu.percent" in need:
                            vals["cpu.percent"] = min(100.0, 100.0 * db / dt)
                        if "cpu.iowait_percent" in need:
                            vals["cpu.iowait_percent"] = min(100.0, 100.0 * dw / dt)
            if "mem.percent" in need or "mem.available_bytes" in need or "mem.used_bytes" in need:
                raw = self._meminfo.read()
                tok = raw.split(None, 9) if raw else []
                if len(tok) < 9 or tok[0] != b"MemTotal:" or tok[6] != b"MemAvailable:":
                    self._bands = {}
                    return self._sample()
                total, avail = int(tok[1]) * 1024, int(tok[7]) * 1024
                if "mem.percent" in need:
                    vals["mem.percent"] = round(100.0 * (total - avail) / total, 1) if total else None
                if "mem.available_bytes" in need:
                    vals["mem.available_bytes"] = avail
                if "mem.used_bytes" in need:
                    vals["mem.used_bytes"] = total - avail
        except Exception:  # noqa: BLE001 - a broken source must not stop the sampler
            self.errors += 1
            self._bands = {}
            return []
        bands = self._bands
        same = len(bands) == len(vals)
        new: dict[str, int] = {}
        for name, v in vals.items():
            lims = bounds.get(name, ())
            if v is None or v != v or v in lims:
                same = False
                new = {}
                break
            b = bisect.bisect_left(lims, v)
            new[name] = b
            if same and bands.get(name) != b:
                same = False
        if same:
            return []
        self._bands = new
        out = SampleBuffer()
        units = {"cpu.percent": "%", "cpu.iowait_percent": "%", "mem.percent": "%", "mem.available_bytes": "B", "mem.used_bytes": "B"}
        for name in ("cpu.percent", "cpu.iowait_percent", "mem.percent", "mem.available_bytes", "mem.used_bytes"):
            if name in vals:
                out.add(name, vals[name], units[name])
        return out.items

    def _memory(self, out: SampleBuffer) -> None:
        raw = self._meminfo.read()
        m = parse_meminfo(raw) if raw else {}
        if "MemTotal" in m and "MemAvailable" in m:
            total, avail = m["MemTotal"], m["MemAvailable"]  # as psutil 7: percent and used from available
            need = self._need
            if "mem.percent" in need:
                out.add("mem.percent", round(100.0 * (total - avail) / total, 1) if total else None, "%")
            if "mem.available_bytes" in need:
                out.add("mem.available_bytes", avail, "B")
            if "mem.used_bytes" in need:
                out.add("mem.used_bytes", total - avail, "B")
            return
        import psutil  # not Linux, or an old kernel

        vm = psutil.virtual_memory()
        out.add("mem.percent", vm.percent, "%")
        out.add("mem.available_bytes", vm.available, "B")
        out.add("mem.used_bytes", vm.used, "B")

    def _read_cpu(self) -> CpuReading:
        raw = self._stat.read()
        if raw:
            return parse_proc_stat(raw)
        import psutil  # not Linux

        now: CpuReading = []
        for t in psutil.cpu_times(percpu=True):
            total = sum(t) - getattr(t, "guest", 0.0) - getattr(t, "guest_nice", 0.0)
            idle = t.idle + getattr(t, "iowait", 0.0)
            now.append((total, total - idle, getattr(t, "iowait", 0.0)))
        return now

    def _cpu(self, out: SampleBuffer) -> None:
        if self._percore:
            now = self._read_cpu()
            self._last_cpu = now
        else:  # all CPUs as one: the first line of /proc/stat is enough (cheap on a 64-core box too)
            raw = self._stat.read()
            now = [parse_proc_stat_total(raw)] if raw else [tuple(map(sum, zip(*self._read_cpu())))]  # type: ignore[list-item]
            self._last_cpu = None
        hist = self._cpu_hist
        if hist and len(hist[-1]) != len(now):
            hist.clear()
        hist.append(now)
        if len(hist) < 2:
            return
        last = hist[0]  # CPU % over the last CPU_WINDOW_SAMPLES fast periods
        sum_dt = sum_busy = sum_wait = 0.0
        for i, ((t1, b1, w1), (t0, b0, w0)) in enumerate(zip(now, last)):
            dt, db, dw = t1 - t0, b1 - b0, w1 - w0
            if dt <= 0 or db < 0 or dw < 0:
                continue
            sum_dt += dt
            sum_busy += db
            sum_wait += dw
            if self._percore:
                out.add("cpu.percent", min(100.0, 100.0 * db / dt), "%", {"core": str(i)})
        if sum_dt > 0:
            if "cpu.percent" in self._need:
                out.add("cpu.percent", min(100.0, 100.0 * sum_busy / sum_dt), "%")
            if "cpu.iowait_percent" in self._need:
                out.add("cpu.iowait_percent", min(100.0, 100.0 * sum_wait / sum_dt), "%")

    def close(self) -> None:
        self.stop()
        with self._lock:
            self._stat.close()
            self._meminfo.close()

    def rebase_system_cpu(self, reading: CpuReading | None = None) -> None:
        """After an edge batch with CPU: the regular CPU sample restarts from the reading the edge sample ended at.

        Without a per-core reading (only total CPU is watched) the cores are read now.
        """
        if self.system is None:
            return
        if reading is None:
            with self._lock:
                reading = self._read_cpu()
        self.system.rebase_cpu(reading)


async def follow_watches(
    publisher: Publisher,
    on_change: Callable[[list[Watch]], None],
    stop: asyncio.Event,
    retry_s: float = WATCH_RETRY_S,
) -> None:
    """Keep ``on_change`` fed with the union of every processor's watches in the ``sw_watch`` bucket.

    Read only: it needs no right to write the bucket. A missing bucket (no
    processor yet) or a lost connection is retried every ``retry_s``.
    """
    from nats.errors import TimeoutError as NatsTimeoutError

    records: dict[str, list[Watch]] = {}
    said_missing = False
    while not stop.is_set():
        nc = publisher.client
        watcher = None
        if nc is None or not nc.is_connected:  # starting, or the broker is away: look as soon as it is back
            connected = asyncio.ensure_future(publisher.wait_connected(retry_s))
            stopper = asyncio.ensure_future(stop.wait())
            await asyncio.wait({connected, stopper}, return_when=asyncio.FIRST_COMPLETED)
            connected.cancel()
            stopper.cancel()
            if publisher.client is None:
                continue
            nc = publisher.client
        try:
            if not nc.is_connected:
                raise ConnectionError("not connected")
            reconnects = publisher.reconnects
            kv = await nc.jetstream().key_value(WATCH_BUCKET)
            watcher = await kv.watchall()
            said_missing = False
            while not stop.is_set():
                getter = asyncio.ensure_future(watcher.updates(timeout=retry_s))
                stopper = asyncio.ensure_future(stop.wait())
                done, _ = await asyncio.wait({getter, stopper}, return_when=asyncio.FIRST_COMPLETED)
                if getter not in done:
                    getter.cancel()
                    break
                stopper.cancel()
                try:
                    entry = getter.result()
                except NatsTimeoutError:
                    if publisher.reconnects != reconnects:  # the watch may not have survived: start a fresh one
                        break
                    continue
                if entry is None:  # the initial values are all in
                    continue
                if entry.operation in ("DEL", "PURGE") or not entry.value:
                    records.pop(entry.key, None)
                else:
                    try:
                        records[entry.key] = decode_watches(entry.value)
                    except ValueError as exc:
                        log.warning("ignoring watch record %s: %s", entry.key, exc)
                        continue
                on_change([w for ws in records.values() for w in ws])
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - no bucket yet, no permission, disconnected: retry later
            if not said_missing:
                log.info("no watched thresholds yet (%s: %s); edge sampling waits for them", type(exc).__name__, exc)
                said_missing = True
        finally:
            if watcher is not None:
                try:
                    await watcher.stop()
                except Exception:  # noqa: BLE001
                    pass
        try:
            await asyncio.wait_for(stop.wait(), retry_s)
        except asyncio.TimeoutError:
            pass
