"""An example swarmwatch plugin: pages when a GPU has been too hot for a while.

``pip install examples/custom_operator`` registers ``GpuOverheat`` under the
entry-point group ``swarmwatch.operators``; ``swarmwatch process`` then runs
it with no glue code. It raises real alerts through ``AlertTracker`` (firing
once held ``for_s`` seconds of event time, resolved once cool again) and keeps
its state across a restart through ``snapshot``/``restore``: an episode that
fired before the restart resolves after it, with the same alert id.
"""
from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from processors import AlertTracker, Emit, Operator
from schemas import AlertKind, MetricBatch, Severity

METRIC = "gpu.temperature_c"
THRESHOLD_C = 85.0
FOR_S = 10.0


class GpuOverheat(Operator):
    """Critical alert when ``gpu.temperature_c`` (any GPU) stays over ``threshold_c`` for ``for_s`` seconds."""

    name = "gpu_overheat"
    wants_metrics = True
    event_kinds = ()

    def __init__(self, threshold_c: float = THRESHOLD_C, for_s: float = FOR_S) -> None:
        super().__init__()
        self.threshold_c = threshold_c
        self.tracker = AlertTracker(self.name, AlertKind.CUSTOM, Severity.CRITICAL, for_s=for_s)
        self.hottest_c: dict[str, float] = {}  # node -> hottest reading seen (kept across restarts too)

    def on_metrics(self, batch: MetricBatch, now: float) -> Iterable[Emit]:
        out: list[Emit] = []
        for s in batch.samples:
            if s.name != METRIC:
                continue
            key = f"{batch.cluster}/{batch.node}"
            self.hottest_c[key] = max(self.hottest_c.get(key, s.value), s.value)
            out += self.tracker.update(
                batch.cluster,
                batch.node,
                s.value > self.threshold_c,
                batch.ts,
                s.value,
                series=s.series(),
                metric=s.name,
                threshold=self.threshold_c,
                summary=f"GPU {s.series()} on {key} at {s.value:.0f} C (over {self.threshold_c:g} C)",
            )
        return out

    def snapshot(self) -> Any:
        return {"tracker": self.tracker.snapshot(), "hottest_c": self.hottest_c}

    def restore(self, state: Any) -> None:
        state = state or {}
        self.tracker.restore(state.get("tracker"))
        self.hottest_c = dict(state.get("hottest_c", {}))
