"""Custom operators as plugins: entry points, --operator specs, their own stats, flush at stop."""
from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterable
from pathlib import Path

import nats
import pytest

from processors import Emit, Operator, Runtime, operator
from schemas import Alert, MetricBatch, Sample, decode, encode, subjects
from swarmwatch.plugins import PluginError, as_operators, load_spec
from swarmwatch.server import EmbeddedServer
from swarmwatch.streams import ensure_streams
from tests.support import stored, wait_for

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "custom_operator"


def fake_install(target: Path) -> Path:
    """What ``pip install examples/custom_operator`` puts in site-packages: the module and its entry point."""
    target.mkdir(parents=True, exist_ok=True)
    (target / "swarmwatch_example_operator.py").write_text((EXAMPLE / "swarmwatch_example_operator.py").read_text())
    info = target / "swarmwatch_example_operator-0.1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: swarmwatch-example-operator\nVersion: 0.1.0\n")
    (info / "entry_points.txt").write_text("[swarmwatch.operators]\ngpu_overheat = swarmwatch_example_operator:GpuOverheat\n")
    return target


def env_with(site: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(site), str(ROOT), env.get("PYTHONPATH", "")])
    return env


def test_installed_operators_are_listed_in_process_help(tmp_path: Path) -> None:
    site = fake_install(tmp_path / "site")
    out = subprocess.run(
        [sys.executable, "-m", "swarmwatch", "process", "--help"], env=env_with(site), capture_output=True, text=True, timeout=60,
        check=True,
    ).stdout
    assert "gpu_overheat" in out and "swarmwatch_example_operator:GpuOverheat" in out


def test_pip_install_of_the_example_registers_its_entry_point(tmp_path: Path) -> None:
    site = tmp_path / "site"
    res = subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(site), str(EXAMPLE)],
        capture_output=True, text=True, timeout=120,
    )
    if res.returncode != 0:
        pytest.skip(f"pip cannot build the example here (no package index for its build backend?): {res.stderr.strip()[-200:]}")
    eps = list(site.glob("swarmwatch_example_operator-*.dist-info/entry_points.txt"))
    assert eps and "gpu_overheat = swarmwatch_example_operator:GpuOverheat" in eps[0].read_text()


async def test_an_installed_operator_alerts_from_swarmwatch_process_with_no_glue(nats_server: EmbeddedServer, tmp_path: Path) -> None:
    site = fake_install(tmp_path / "site")
    nc = await nats.connect(nats_server.url)
    js = nc.jetstream()
    await ensure_streams(js)
    proc = subprocess.Popen(
        [sys.executable, "-m", "swarmwatch", "process", "--nats", nats_server.url, "--name", "plug", "--operators", "rules"],
        env=env_with(site), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    try:
        t0 = time.time() - 60
        for i, temp in enumerate([70.0] + [95.0] * 12):
            b = MetricBatch("lab", "gpu-1", t0 + i, [Sample("gpu.temperature_c", temp, labels={"gpu": "0"})])
            await js.publish(subjects.metrics("lab", "gpu-1"), encode(b))
        deadline = time.monotonic() + 30
        alerts: list[bytes] = []
        while time.monotonic() < deadline and not alerts:
            assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
            alerts = await stored(js, "sw.alerts.critical.lab.gpu-1.gpu_overheat")
            await asyncio.sleep(0.2)
        [a] = [decode(d, Alert) for d in alerts]
        assert a.status.value == "firing" and a.started_at == t0 + 1 and a.value == 95.0
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
        await nc.close()


def test_operator_specs_name_instances_classes_and_factories() -> None:
    assert [op.name for op in load_spec("tests.plugin_operators:instance")] == ["hot"]
    assert [op.name for op in load_spec("tests.plugin_operators:Hot")] == ["hot"]
    assert [op.name for op in load_spec("tests.plugin_operators:factory")] == ["hot", "cold"]


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("no_colon", "expected pkg.module:attr"),
        ("no_such_module_xyz:op", "cannot import 'no_such_module_xyz'"),
        ("tests.plugin_operators:missing", "has no attribute 'missing'"),
        ("tests.plugin_operators:NotAnOperator", "not a processors.Operator subclass"),
        ("tests.plugin_operators:plain_function", "decorate it with @processors.operator"),
    ],
)
def test_a_bad_operator_spec_is_refused_with_a_message_naming_it(spec: str, message: str) -> None:
    with pytest.raises(PluginError, match=message.replace("(", r"\(").replace(".", r"\.")):
        load_spec(spec)


def test_a_bad_operator_spec_on_the_command_line_is_one_clear_error() -> None:
    res = subprocess.run(
        [sys.executable, "-m", "swarmwatch", "process", "--operator", "nope_module_xyz:op"],
        env=env_with(ROOT), capture_output=True, text=True, timeout=60,
    )
    assert res.returncode == 2 and "cannot import 'nope_module_xyz'" in res.stderr and "Traceback" not in res.stderr


class _Buffered(Operator):
    """Holds every batch until flushed; checkpoints nothing."""

    name = "buffered"

    def __init__(self) -> None:
        super().__init__()
        self.held: list[MetricBatch] = []

    def on_metrics(self, batch: MetricBatch, now: float) -> Iterable[Emit]:
        self.held.append(batch)
        return ()

    def flush(self, now: float) -> Iterable[Emit]:
        out = [Emit(f"sw.health.{b.cluster}", b"{}", f"buffered:{b.node}:{b.ts}") for b in self.held]
        self.held = []
        return out


async def test_stop_flushes_operators_that_checkpoint_no_state_and_counts_their_stats(nc: nats.NATS) -> None:
    js = nc.jetstream()
    await ensure_streams(js)
    selfs: list[MetricBatch] = []

    async def on_self(m: object) -> None:
        selfs.append(decode(m.data, MetricBatch))  # type: ignore[attr-defined]

    await nc.subscribe("sw.self.>", cb=on_self)

    @operator("counted")
    def counted(b: MetricBatch, now: float) -> Iterable[Emit]:
        yield Emit(f"sw.health.{b.cluster}", b"{}", f"counted:{b.node}:{b.ts}")

    buffered = _Buffered()
    rt = Runtime(nc, [buffered, counted], name="flushy", checkpoint_interval_s=0.1, self_metrics_interval_s=0.2)
    await rt.start()
    t0 = time.time() - 10
    for i in range(3):
        await js.publish(subjects.metrics("c1", "n1"), encode(MetricBatch("c1", "n1", t0 + i, [Sample("x", 1.0)])))
    await wait_for(lambda: rt.stats.processed >= 3)
    await wait_for(lambda: any(s.labels and s.labels.get("operator") == "counted" and s.name == "swarmwatch.operator.inputs" and s.value == 3 for b in selfs for s in b.samples))
    assert len(await stored(js, "sw.health.>")) == 3  # only the function operator's so far
    from sinks.api.exposition import render
    from sinks.api.state import FleetState

    state = FleetState()
    state.apply_self("flushy", selfs[-1])
    text = render(state)
    line = next(ln for ln in text.splitlines() if 'metric="swarmwatch.operator.inputs"' in ln and 'operator="counted"' in ln)
    assert line.startswith("swarmwatch_self_total{") and line.endswith(" 3.0")  # on /metrics, counted by the runtime
    await rt.stop()
    assert len(await stored(js, "sw.health.>")) == 6  # the buffered operator's three, flushed at stop
    c = rt.dispatch.counters(buffered)
    assert (c.inputs, c.outputs, c.errors) == (3, 3, 0)
    assert counted.stats.inputs == 0  # counted by the runtime, not by the operator


def test_as_operators_refuses_what_is_not_an_operator() -> None:
    with pytest.raises(PluginError, match="not an operator"):
        as_operators(42, "thing")
