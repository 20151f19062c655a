"""Resource use of one watched process (usually the service this sidecar sits beside)."""
from __future__ import annotations

import time

import psutil

from producers.samples import SampleBuffer


class ProcessWatcher:
    """CPU %, RSS, threads and open file descriptors of ``pid``; ``watch.up`` says whether it still runs.

    CPU % is the process's CPU time delta over wall time since the last call, in
    percent of one core (200 = two cores busy). Only numbers are published: never
    the command line, environment, user or file names.
    """

    def __init__(self, pid: int) -> None:
        if pid <= 0:
            raise ValueError(f"watch pid {pid!r} must be a positive process id")
        self.pid = pid
        self._proc: psutil.Process | None = None
        self._last: tuple[float, float] | None = None  # (cpu seconds, monotonic seconds)
        try:
            self._proc = psutil.Process(pid)
        except psutil.Error:
            self._proc = None

    def collect(self, out: SampleBuffer, now_s: float | None = None) -> None:
        """Append the watched process's samples to ``out`` (``watch.up`` 0 once it is gone)."""
        mono = time.monotonic() if now_s is None else now_s
        p = self._proc
        if p is None:
            out.add("watch.up", 0.0)
            return
        try:
            with p.oneshot():
                cpu = p.cpu_times()
                mem = p.memory_info()
                threads = p.num_threads()
                fds = _open_files(p)
        except (psutil.NoSuchProcess, psutil.ZombieProcess):
            self._proc = None
            out.add("watch.up", 0.0)
            return
        except psutil.AccessDenied:
            out.add("watch.up", 1.0)
            return
        out.add("watch.up", 1.0)
        used = cpu.user + cpu.system
        last, self._last = self._last, (used, mono)
        if last is not None and mono > last[1] and used >= last[0]:
            out.add("watch.cpu_percent", 100.0 * (used - last[0]) / (mono - last[1]), "%")
        out.add("watch.rss_bytes", mem.rss, "B")
        out.add("watch.threads", threads, "threads")
        out.add("watch.open_files", fds, "files")


def _open_files(p: psutil.Process) -> float | None:
    """Open descriptors (POSIX: files, sockets, pipes) or handles (Windows); cheap, unlike open_files()."""
    try:
        if hasattr(p, "num_fds"):
            return float(p.num_fds())
        if hasattr(p, "num_handles"):
            return float(p.num_handles())
    except psutil.AccessDenied:
        return None
    return None
