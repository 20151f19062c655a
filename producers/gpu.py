"""GPU samples per device through NVML (the ``pynvml`` module of nvidia-ml-py), with a clean no-GPU path.

``pynvml`` is imported only when a :class:`GpuCollector` first probes, so a
producer on a machine without NVIDIA drivers pays nothing for it. Run
``python -m producers.gpu`` to print one snapshot (or the reason there is none)
as JSON.
"""
from __future__ import annotations

import time
from typing import Any

from producers.samples import SampleBuffer

REPROBE_S = 300.0  # a failed probe is retried this rarely (drivers loaded later, container restarted)


class GpuCollector:
    """Utilisation, memory, temperature and power per NVIDIA GPU, labelled ``{"gpu": "<index>"}``.

    ``available`` is False with ``reason`` set when there is no usable GPU (no
    library, no driver, no device); :meth:`collect` then adds nothing.
    """

    def __init__(self, *, enabled: bool = True) -> None:
        self.enabled = enabled
        self.available = False
        self.reason: str | None = None if enabled else "disabled"
        self.errors = 0
        self._nvml: Any = None
        self._handles: list[Any] = []
        self._probed_s: float | None = None

    def probe(self) -> bool:
        """Load NVML and enumerate devices; True when at least one GPU can be read."""
        self._probed_s = time.monotonic()
        if not self.enabled:
            return False
        try:
            import pynvml
        except ImportError as exc:
            self.reason = f"nvidia-ml-py is not installed ({exc})"
            return False
        try:
            pynvml.nvmlInit()
        except pynvml.NVMLError as exc:
            self.reason = f"NVML unavailable: {_nvml_text(exc)}"
            return False
        except OSError as exc:  # a broken libnvidia-ml on the loader path
            self.reason = f"NVML unavailable: {exc}"
            return False
        try:
            count = pynvml.nvmlDeviceGetCount()
            self._handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(count)]
        except pynvml.NVMLError as exc:
            self.reason = f"NVML could not list devices: {_nvml_text(exc)}"
            _shutdown(pynvml)
            return False
        if not self._handles:
            self.reason = "NVML found no GPU"
            _shutdown(pynvml)
            return False
        self._nvml = pynvml
        self.available = True
        self.reason = None
        return True

    def collect(self, out: SampleBuffer) -> None:
        """Append one sample per metric and device to ``out``; nothing when no GPU."""
        if not self.available:
            if not self.enabled:
                return
            if self._probed_s is not None and time.monotonic() - self._probed_s < REPROBE_S:
                return
            if not self.probe():
                return
        nv = self._nvml
        for i, h in enumerate(self._handles):
            labels = {"gpu": str(i)}
            out.add("gpu.utilization_percent", self._read(lambda: nv.nvmlDeviceGetUtilizationRates(h).gpu), "%", labels)
            mem = self._read(lambda: nv.nvmlDeviceGetMemoryInfo(h))
            if mem is not None:
                out.add("gpu.memory_used_bytes", mem.used, "B", labels)
                out.add("gpu.memory_total_bytes", mem.total, "B", labels)
                out.add("gpu.memory_free_bytes", mem.free, "B", labels)
                if mem.total:
                    out.add("gpu.memory_percent", 100.0 * mem.used / mem.total, "%", labels)
            out.add(
                "gpu.temperature_c",
                self._read(lambda: nv.nvmlDeviceGetTemperature(h, nv.NVML_TEMPERATURE_GPU)),
                "C",
                labels,
            )
            power_mw = self._read(lambda: nv.nvmlDeviceGetPowerUsage(h))
            out.add("gpu.power_w", None if power_mw is None else power_mw / 1000.0, "W", labels)

    def collect_fast(self, out: SampleBuffer, utilization: bool = True, temperature: bool = True) -> None:
        """Only the cheap, fast-changing values (utilisation, temperature) per device, for edge sampling."""
        if not self.available:
            return
        nv = self._nvml
        for i, h in enumerate(self._handles):
            labels = {"gpu": str(i)}
            if utilization:
                out.add("gpu.utilization_percent", self._read(lambda: nv.nvmlDeviceGetUtilizationRates(h).gpu), "%", labels)
            if temperature:
                out.add("gpu.temperature_c", self._read(lambda: nv.nvmlDeviceGetTemperature(h, nv.NVML_TEMPERATURE_GPU)), "C", labels)

    def _read(self, fn: Any) -> Any:
        """One NVML query; None when the device does not support it or it failed (counted)."""
        try:
            return fn()
        except self._nvml.NVMLError_NotSupported:
            return None
        except self._nvml.NVMLError:
            self.errors += 1
            return None

    def close(self) -> None:
        if self._nvml is not None:
            _shutdown(self._nvml)
            self._nvml = None
        self.available = False
        self._handles = []


def _nvml_text(exc: BaseException) -> str:
    name = type(exc).__name__
    try:
        return f"{name}: {exc}"
    except Exception:  # noqa: BLE001 - some NVMLError str() calls back into the missing library
        return name


def _shutdown(pynvml: Any) -> None:
    try:
        pynvml.nvmlShutdown()
    except Exception:  # noqa: BLE001
        pass


def snapshot() -> dict[str, Any]:
    """One GPU snapshot as plain data: ``{"available", "reason", "devices", "samples"}``."""
    gpu = GpuCollector()
    gpu.probe()
    out = SampleBuffer()
    gpu.collect(out)
    names: list[str] = []
    if gpu.available:
        for h in gpu._handles:
            try:
                n = gpu._nvml.nvmlDeviceGetName(h)
                names.append(n.decode() if isinstance(n, bytes) else str(n))
            except Exception:  # noqa: BLE001
                names.append("unknown")
    result = {
        "available": gpu.available,
        "reason": gpu.reason,
        "devices": names,
        "errors": gpu.errors,
        "invalid": out.invalid,
        "samples": [{"name": s.name, "value": s.value, "unit": s.unit, "labels": s.labels} for s in out.items],
    }
    gpu.close()
    return result


if __name__ == "__main__":
    import json

    print(json.dumps(snapshot(), indent=2))
