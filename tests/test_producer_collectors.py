"""The system collector: expected metric names, sane values, rates from counter deltas."""
from __future__ import annotations

import os
import subprocess
import sys
import time

import psutil
import pytest

from producers.collectors import SystemCollector
from producers.process import ProcessWatcher
from producers.rates import CounterRates
from producers.samples import SampleBuffer


def _by_series(out: SampleBuffer) -> dict[str, float]:
    return {s.series(): s.value for s in out.items}


def _snapshot(collector: SystemCollector) -> SampleBuffer:
    out = SampleBuffer()
    collector.collect(out)
    return out


def _two_snapshots(collector: SystemCollector) -> SampleBuffer:
    """A first snapshot, then the next one that carries CPU % (some kernels and sandboxes
    advance per-CPU counters lazily, and the collector reports CPU % only once they moved)."""
    collector.collect(SampleBuffer())
    for _ in range(25):
        time.sleep(0.2)
        out = SampleBuffer()
        collector.collect(out)
        if any(x.name == "cpu.percent" for x in out.items):
            break
    return out


def test_snapshot_has_the_names_threshold_rules_rely_on_with_sane_values() -> None:
    collector = SystemCollector()
    s = _by_series(_two_snapshots(collector))
    for _ in range(20):  # each core's counters may advance at a different snapshot
        if len([k for k in s if k.startswith("cpu.percent{")]) == (psutil.cpu_count() or 1):
            break
        time.sleep(0.2)
        s = _by_series(_snapshot(collector))
    assert 0.0 <= s["cpu.percent"] <= 100.0
    assert 0.0 <= s["mem.percent"] <= 100.0
    assert 0.0 <= s["disk.percent{mount=/}"] <= 100.0
    cores = psutil.cpu_count() or 1
    per_core = [k for k in s if k.startswith("cpu.percent{core=")]
    assert len(per_core) == cores
    assert all(0.0 <= s[k] <= 100.0 for k in per_core)
    assert s["cpu.count"] == cores
    assert 0 < s["mem.available_bytes"] <= s["mem.total_bytes"]
    assert 0.0 <= s["swap.percent"] <= 100.0
    assert s["proc.count"] >= 1
    assert s["uptime_s"] > 0
    assert s["load.1m"] >= 0


def test_second_snapshot_carries_non_negative_rates_for_disk_and_network() -> None:
    out = _two_snapshots(SystemCollector())
    s = _by_series(out)
    for name in (
        "disk.read_ops_per_s", "disk.write_ops_per_s", "disk.read_bytes_per_s", "disk.write_bytes_per_s",
        "net.bytes_sent_per_s", "net.bytes_recv_per_s", "net.packets_sent_per_s", "net.packets_recv_per_s",
        "net.errors_in_per_s", "net.errors_out_per_s", "net.drops_in_per_s", "net.drops_out_per_s",
    ):
        assert name in s, name
        assert s[name] >= 0.0, name
    if "disk.busy_percent" in s:
        assert 0.0 <= s["disk.busy_percent"] <= 100.0


def test_first_snapshot_has_levels_but_no_rates() -> None:
    out = SampleBuffer()
    SystemCollector().collect(out)
    names = {x.name for x in out.items}
    assert "mem.percent" in names
    assert "net.bytes_sent_per_s" not in names
    assert "cpu.percent" not in names  # CPU % is a delta of CPU times too


def test_units_are_set_for_percentages_and_bytes() -> None:
    out = _two_snapshots(SystemCollector())
    units = {x.name: x.unit for x in out.items}
    assert units["cpu.percent"] == "%"
    assert units["mem.available_bytes"] == "B"
    assert units["net.bytes_sent_per_s"] == "B/s"


def test_rate_is_delta_over_elapsed_seconds() -> None:
    r = CounterRates()
    assert r.rate("x", 100.0, 10.0) is None  # first reading: nothing to subtract
    assert r.rate("x", 200.0, 12.0) == pytest.approx(50.0)
    assert r.rate("x", 200.0, 13.0) == 0.0


def test_counter_reset_gives_no_rate_rather_than_a_negative_one() -> None:
    r = CounterRates()
    r.rate("x", 1_000_000.0, 1.0)
    assert r.rate("x", 10.0, 2.0) is None
    assert r.resets == 1
    assert r.rate("x", 40.0, 3.0) == pytest.approx(30.0)  # re-baselined on the reset value


def test_clock_not_advancing_gives_no_rate() -> None:
    r = CounterRates()
    r.rate("x", 1.0, 5.0)
    assert r.rate("x", 2.0, 5.0) is None


def test_collector_skips_rates_of_a_counter_that_went_backwards() -> None:
    c = SystemCollector()
    c.collect(SampleBuffer())
    # Pretend the previous reading of the network totals was far higher: the interface was reset.
    c.rates._last["net.bytes_sent_per_s"] = (1e18, time.monotonic() - 1.0)
    out = SampleBuffer()
    c.collect(out)
    names = {x.name for x in out.items}
    assert "net.bytes_sent_per_s" not in names
    assert "net.bytes_recv_per_s" in names
    assert c.rates.resets >= 1
    assert all(x.value >= 0 for x in out.items if x.name.endswith("_per_s"))


def test_cpu_percent_skips_cores_whose_times_went_backwards() -> None:
    c = SystemCollector()
    c.collect(SampleBuffer())
    assert c._last_cpu is not None
    c._last_cpu = [(t * 10 + 1e9, b * 10 + 1e9, w) for t, b, w in c._last_cpu]
    out = SampleBuffer()
    c.collect(out)
    assert not [x for x in out.items if x.name == "cpu.percent"]


def test_sample_buffer_drops_and_counts_nan_and_infinite_values() -> None:
    out = SampleBuffer()
    out.add("ok.value", 1.0)
    out.add("bad.nan", float("nan"))
    out.add("bad.inf", float("inf"))
    out.add("bad name with spaces", 1.0)
    out.add("missing.sensor", None)
    assert [x.name for x in out.items] == ["ok.value"]
    assert out.invalid == 3


def test_watched_process_reports_resources_then_goes_down_when_it_exits() -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        w = ProcessWatcher(child.pid)
        w.collect(SampleBuffer())
        time.sleep(0.1)
        out = SampleBuffer()
        w.collect(out)
        s = _by_series(out)
        assert s["watch.up"] == 1.0
        assert s["watch.rss_bytes"] > 1_000_000
        assert s["watch.threads"] >= 1
        assert s["watch.open_files"] >= 3  # stdin, stdout, stderr at least
        assert s["watch.cpu_percent"] >= 0.0
    finally:
        child.kill()
        child.wait()
    out = SampleBuffer()
    w.collect(out)
    assert _by_series(out) == {"watch.up": 0.0}


def test_watched_process_publishes_no_command_line_or_environment() -> None:
    w = ProcessWatcher(os.getpid())
    out = SampleBuffer()
    w.collect(out)
    assert all(x.labels is None for x in out.items)
    assert {x.name for x in out.items} <= {"watch.up", "watch.cpu_percent", "watch.rss_bytes", "watch.threads", "watch.open_files"}


def test_watch_pid_must_be_positive() -> None:
    with pytest.raises(ValueError, match="watch pid 0"):
        ProcessWatcher(0)


def test_ready_made_samples_are_validated_when_added() -> None:
    from schemas.models import Sample

    out = SampleBuffer()
    out.extend([Sample("peer.latency_ms", 3.0), Sample("peer.jitter_ms", float("nan")), Sample("bad name", 1.0)])
    assert [x.name for x in out.items] == ["peer.latency_ms"]
    assert out.invalid == 2


def test_a_core_whose_counters_have_not_moved_keeps_its_baseline_and_reports_later() -> None:
    from collections import namedtuple

    c = SystemCollector(temperature=False)
    CpuTimes = namedtuple("CpuTimes", "user nice system idle iowait")

    def times(busy: float, idle: float) -> tuple[float, ...]:
        return CpuTimes(busy, 0.0, 0.0, idle, 0.0)

    readings = iter([[times(10, 90), times(10, 90)], [times(15, 95), times(10, 90)], [times(20, 100), times(30, 110)]])
    original = psutil.cpu_times
    psutil.cpu_times = lambda percpu=False: next(readings)  # type: ignore[assignment]
    try:
        outs = []
        for _ in range(3):
            out = SampleBuffer()
            c._cpu(out, 0.0)
            outs.append(_by_series(out))
    finally:
        psutil.cpu_times = original  # type: ignore[assignment]
    assert "cpu.percent{core=1}" not in outs[1] and outs[1]["cpu.percent{core=0}"] == 50.0
    assert outs[2]["cpu.percent{core=1}"] == 50.0  # 20 busy of 40 since the last reading that moved
