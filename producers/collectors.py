"""System snapshot: CPU, memory, swap, disks, network, processes and uptime via psutil.

Rates (ops/s, bytes/s, packets/s, busy %) come from counter deltas between two
snapshots, so the first snapshot carries levels only. Nothing here reads command
lines, environments, user names or addresses: only numbers about the machine.
"""
from __future__ import annotations

import os
import sys
import time

import psutil

from producers.rates import CounterRates
from producers.samples import SampleBuffer

MAX_MOUNTS = 16  # at most this many filesystems get a disk.percent series
MOUNT_REFRESH_S = 60.0  # how often the list of mounted filesystems is re-read
TEMPERATURE_EVERY = 5  # read temperature sensors every Nth snapshot (they can be slow on big boxes)

_SKIP_FSTYPES = frozenset({"squashfs", "tmpfs", "devtmpfs", "proc", "sysfs", "autofs", "iso9660", "nsfs", "ramfs"})
_SKIP_DISK_PREFIXES = ("loop", "ram", "zram", "fd", "sr", "dm-", "md")
_TEMP_CHIPS = ("coretemp", "k10temp", "zenpower", "cpu_thermal", "cpu-thermal", "soc_thermal", "acpitz")
_NET_COUNTERS = (
    ("bytes_sent", "net.bytes_sent_per_s", "B/s"),
    ("bytes_recv", "net.bytes_recv_per_s", "B/s"),
    ("packets_sent", "net.packets_sent_per_s", "packets/s"),
    ("packets_recv", "net.packets_recv_per_s", "packets/s"),
    ("errin", "net.errors_in_per_s", "errors/s"),
    ("errout", "net.errors_out_per_s", "errors/s"),
    ("dropin", "net.drops_in_per_s", "drops/s"),
    ("dropout", "net.drops_out_per_s", "drops/s"),
)
_DISK_COUNTERS = (
    ("read_count", "disk.read_ops_per_s", "ops/s"),
    ("write_count", "disk.write_ops_per_s", "ops/s"),
    ("read_bytes", "disk.read_bytes_per_s", "B/s"),
    ("write_bytes", "disk.write_bytes_per_s", "B/s"),
)


def _is_whole_disk(name: str) -> bool:
    """A physical whole disk (not a partition, loop, RAM or device-mapper device)."""
    if name.startswith(_SKIP_DISK_PREFIXES):
        return False
    if sys.platform.startswith("linux"):
        # Partitions have no /sys/block entry; summing them too would count I/O twice.
        return os.path.exists(f"/sys/block/{name}")
    return True


class SystemCollector:
    """One psutil snapshot per call of :meth:`collect` (about 0.5 ms on a small VM)."""

    def __init__(self, *, per_core: bool = True, temperature: bool = True) -> None:
        self.per_core = per_core
        self.rates = CounterRates()
        self.errors = 0  # sections that raised (counted, never fatal)
        self._last_cpu: list[tuple[float, float, float]] | None = None  # per core: (total, busy, iowait)
        self._mounts: list[str] = []
        self._mounts_read_s = -MOUNT_REFRESH_S
        self._disk_kind: dict[str, bool] = {}
        self._temperature = temperature and hasattr(psutil, "sensors_temperatures")
        self._freq = hasattr(psutil, "cpu_freq")
        self._last_temp: float | None = None
        self._n = 0
        self._boot_time_s = psutil.boot_time()
        self._sockstat = sys.platform.startswith("linux") and os.path.exists("/proc/net/sockstat")

    def collect(self, out: SampleBuffer, now_s: float | None = None) -> None:
        """Append this snapshot's samples to ``out``; ``now_s`` is a monotonic clock reading."""
        mono = time.monotonic() if now_s is None else now_s
        for section in (self._cpu, self._memory, self._disks, self._network, self._system):
            try:
                section(out, mono)
            except Exception:  # noqa: BLE001 - one broken sensor must not lose the whole snapshot
                self.errors += 1
        self._n += 1

    # --- sections -------------------------------------------------------------------------

    def _cpu(self, out: SampleBuffer, mono: float) -> None:
        cores = psutil.cpu_times(percpu=True)
        now: list[tuple[float, float, float]] = []
        for t in cores:
            total = sum(t) - getattr(t, "guest", 0.0) - getattr(t, "guest_nice", 0.0)  # guest is already in user
            idle = t.idle + getattr(t, "iowait", 0.0)
            now.append((total, total - idle, getattr(t, "iowait", 0.0)))
        last = self._last_cpu
        out.add("cpu.count", len(now), "cores")
        if last is None or len(last) != len(now):
            self._last_cpu = now
            return self._cpu_extras(out)
        baseline = list(last)
        sum_dt = sum_busy = sum_wait = 0.0
        for i, ((t1, b1, w1), (t0, b0, w0)) in enumerate(zip(now, last)):
            dt, db, dw = t1 - t0, b1 - b0, w1 - w0
            if dt < 0 or db < 0 or dw < 0:  # counters went backwards (hotplug, reset): start over for this core
                baseline[i] = now[i]
                continue
            if dt == 0:  # the kernel has not advanced this core's counters yet: keep the baseline, report later
                continue
            baseline[i] = now[i]
            sum_dt += dt
            sum_busy += db
            sum_wait += dw
            if self.per_core:
                out.add("cpu.percent", min(100.0, 100.0 * db / dt), "%", {"core": str(i)})
        self._last_cpu = baseline
        if sum_dt > 0:
            out.add("cpu.percent", min(100.0, 100.0 * sum_busy / sum_dt), "%")
            out.add("cpu.iowait_percent", min(100.0, 100.0 * sum_wait / sum_dt), "%")
        return self._cpu_extras(out)

    def rebase_cpu(self, cores: list[tuple[float, float, float]]) -> None:
        """Count the next ``cpu.percent`` from this reading (per core: total, busy, iowait seconds).

        Edge sampling publishes CPU over the time up to a crossing; the next
        regular sample then covers only the time after it, so the two never overlap.
        """
        last = self._last_cpu
        if last is not None and len(last) == len(cores) and cores and cores[0][0] < last[0][0]:
            return  # the regular sample has already moved past this reading
        self._last_cpu = list(cores)

    def _cpu_extras(self, out: SampleBuffer) -> None:
        """Load average, frequency and temperature."""
        load = os.getloadavg() if hasattr(os, "getloadavg") else None
        if load is not None:
            out.add("load.1m", load[0])
            out.add("load.5m", load[1])
            out.add("load.15m", load[2])
        if self._freq:
            try:
                f = psutil.cpu_freq()
            except Exception:  # noqa: BLE001 - not readable here: stop asking
                self._freq = False
                f = None
            if f is not None and f.current > 0:
                out.add("cpu.freq_mhz", f.current, "MHz")
        if self._temperature:
            if self._n % TEMPERATURE_EVERY == 0:
                self._last_temp = self._read_temperature()
            out.add("cpu.temperature_c", self._last_temp, "C")

    def _read_temperature(self) -> float | None:
        try:
            temps = psutil.sensors_temperatures()
        except Exception:  # noqa: BLE001
            temps = {}
        if not temps:
            if self._n == 0:
                self._temperature = False  # no sensors on this machine: never ask again
            return None
        for chip in _TEMP_CHIPS:
            entries = temps.get(chip)
            if entries:
                vals = [e.current for e in entries if e.current is not None and e.current > -50]
                if vals:
                    return max(vals)
        return None

    def _memory(self, out: SampleBuffer, mono: float) -> None:
        vm = psutil.virtual_memory()
        out.add("mem.percent", vm.percent, "%")
        out.add("mem.available_bytes", vm.available, "B")
        out.add("mem.used_bytes", vm.used, "B")
        out.add("mem.total_bytes", vm.total, "B")
        sw = psutil.swap_memory()
        out.add("swap.percent", sw.percent if sw.total else 0.0, "%")
        out.add("swap.used_bytes", sw.used, "B")
        out.add("swap.total_bytes", sw.total, "B")

    def _disks(self, out: SampleBuffer, mono: float) -> None:
        if mono - self._mounts_read_s >= MOUNT_REFRESH_S:
            self._mounts_read_s = mono
            self._mounts = self._read_mounts()
        for mount in self._mounts:
            try:
                u = psutil.disk_usage(mount)
            except OSError:
                continue
            out.add("disk.percent", u.percent, "%", {"mount": mount})
            out.add("disk.free_bytes", u.free, "B", {"mount": mount})
        per = psutil.disk_io_counters(perdisk=True, nowrap=True) or {}
        sums = [0.0] * 7
        busiest: float | None = None
        for name, c in per.items():
            whole = self._disk_kind.get(name)
            if whole is None:
                whole = self._disk_kind[name] = _is_whole_disk(name)
            if not whole:
                continue
            sums[0] += c.read_count
            sums[1] += c.write_count
            sums[2] += c.read_bytes
            sums[3] += c.write_bytes
            sums[4] += c.read_time
            sums[5] += c.write_time
            busy_ms = getattr(c, "busy_time", None)
            if busy_ms is not None:
                d = self.rates.delta(f"disk.busy.{name}", busy_ms, mono)
                if d is not None:
                    pct = min(100.0, 100.0 * d[0] / (d[1] * 1000.0))
                    busiest = pct if busiest is None else max(busiest, pct)
        for i, (_, metric, unit) in enumerate(_DISK_COUNTERS):
            out.add(metric, self.rates.rate(metric, sums[i], mono), unit)
        reads = self.rates.delta("disk.reads", sums[0], mono)
        rtime = self.rates.delta("disk.read_time", sums[4], mono)
        if reads is not None and rtime is not None and reads[0] > 0:
            out.add("disk.read_latency_ms", rtime[0] / reads[0], "ms")
        writes = self.rates.delta("disk.writes", sums[1], mono)
        wtime = self.rates.delta("disk.write_time", sums[5], mono)
        if writes is not None and wtime is not None and writes[0] > 0:
            out.add("disk.write_latency_ms", wtime[0] / writes[0], "ms")
        out.add("disk.busy_percent", busiest, "%")

    @staticmethod
    def _read_mounts() -> list[str]:
        seen: set[str] = set()
        mounts: list[str] = []
        for p in psutil.disk_partitions(all=False):
            if p.fstype in _SKIP_FSTYPES or p.device.startswith("/dev/loop") or p.device in seen:
                continue
            if p.mountpoint.startswith(("/snap/", "/proc", "/sys", "/run/")):
                continue
            seen.add(p.device)
            mounts.append(p.mountpoint)
        mounts.sort(key=len)  # keep "/" and short top-level mounts when there are too many
        return mounts[:MAX_MOUNTS]

    def _network(self, out: SampleBuffer, mono: float) -> None:
        per = psutil.net_io_counters(pernic=True, nowrap=True) or {}
        sums = [0.0] * len(_NET_COUNTERS)
        for nic, c in per.items():
            if nic == "lo" or nic.startswith("lo0"):  # loopback traffic is the host talking to itself
                continue
            for i, (field, _, _) in enumerate(_NET_COUNTERS):
                sums[i] += getattr(c, field)
        for i, (_, metric, unit) in enumerate(_NET_COUNTERS):
            out.add(metric, self.rates.rate(metric, sums[i], mono), unit)
        if self._sockstat:
            out.add("net.tcp_connections", _tcp_inuse(), "connections")

    def _system(self, out: SampleBuffer, mono: float) -> None:
        out.add("proc.count", len(psutil.pids()), "processes")
        out.add("uptime_s", max(0.0, time.time() - self._boot_time_s), "s")


def _tcp_inuse() -> float | None:
    """Open TCP sockets on this host (Linux /proc/net/sockstat ``TCP: inuse N``)."""
    try:
        with open("/proc/net/sockstat", encoding="ascii") as f:
            for line in f:
                if line.startswith("TCP:"):
                    parts = line.split()
                    return float(parts[parts.index("inuse") + 1])
    except (OSError, ValueError, IndexError):
        return None
    return None
