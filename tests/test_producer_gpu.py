"""GPU collection through NVML: real samples where a GPU exists, a clean reason where none does."""
from __future__ import annotations

import json
import subprocess
import sys

from producers.gpu import GpuCollector
from producers.samples import SampleBuffer

GPU_NAMES = {
    "gpu.utilization_percent", "gpu.memory_used_bytes", "gpu.memory_total_bytes", "gpu.memory_free_bytes",
    "gpu.memory_percent", "gpu.temperature_c", "gpu.power_w",
}


def test_gpu_collector_gives_device_samples_or_a_clean_reason() -> None:
    gpu = GpuCollector()
    found = gpu.probe()
    out = SampleBuffer()
    gpu.collect(out)
    try:
        if found:
            assert gpu.reason is None
            assert {x.labels["gpu"] for x in out.items if x.labels} >= {"0"}
            names = {x.name for x in out.items}
            assert names <= GPU_NAMES
            assert "gpu.memory_total_bytes" in names
        else:
            assert out.items == []
            assert out.invalid == 0
            assert gpu.reason and ("NVML" in gpu.reason or "nvidia-ml-py" in gpu.reason)
    finally:
        gpu.close()


def test_disabled_gpu_collector_adds_nothing_and_never_loads_nvml() -> None:
    code = (
        "import sys\n"
        "from producers.gpu import GpuCollector\n"
        "from producers.samples import SampleBuffer\n"
        "g = GpuCollector(enabled=False); out = SampleBuffer()\n"
        "assert not g.probe(); g.collect(out)\n"
        "assert out.items == [] and g.reason == 'disabled', (out.items, g.reason)\n"
        "assert 'pynvml' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_gpu_module_prints_one_json_snapshot() -> None:
    r = subprocess.run([sys.executable, "-m", "producers.gpu"], capture_output=True, text=True, timeout=60, check=True)
    snap = json.loads(r.stdout)
    assert set(snap) >= {"available", "reason", "devices", "samples"}
    if snap["available"]:
        assert snap["devices"] and snap["samples"]
    else:
        assert snap["samples"] == [] and snap["reason"]


def test_sidecar_path_imports_nothing_heavy_and_nvml_only_when_probing() -> None:
    # What `swarmwatch produce` exec's into (python -m producers): the package and the sidecar.
    code = (
        "import sys\n"
        "import producers, producers.sidecar\n"
        "heavy = {'pydantic', 'numpy', 'pyarrow', 'fastapi', 'uvicorn', 'typer', 'rich', 'yaml', 'pynvml'}\n"
        "loaded = heavy & {m.split('.')[0] for m in sys.modules}\n"
        "assert not loaded, loaded\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
