"""The custom-operator examples in the README and in processors/operator.py run and raise real alerts."""
from __future__ import annotations

import re
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

from processors import Operator
from processors.dispatch import Dispatcher, run_items
from schemas import Alert, AlertStatus, MetricBatch, Sample

ROOT = Path(__file__).resolve().parents[1]
T0 = time.time() - 3600


def readme_blocks() -> list[str]:
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## Custom processors") :]
    section = section[: section.index("\n## ", 5)]
    return re.findall(r"```python\n(.*?)```", section, re.S)


def docstring_blocks() -> list[str]:
    import processors.operator  # noqa: F401

    doc = sys.modules["processors.operator"].__doc__ or ""
    blocks = []
    for m in re.finditer(r"::\n\n((?:    .*\n|\n)+)", doc + "\n"):
        blocks.append(textwrap.dedent(m.group(1)))
    return blocks


def operators_defined(code: str) -> list[Operator]:
    ns: dict[str, Any] = {}
    exec(compile(code, "<example>", "exec"), ns)
    ops = [v for v in ns.values() if isinstance(v, Operator)]
    ops += [v() for v in ns.values() if isinstance(v, type) and issubclass(v, Operator) and v is not Operator]
    return ops


def hot_series(metric: str, hot: float, seconds: int) -> list[MetricBatch]:
    """``seconds`` of a hot reading, then one cool one."""
    vals = [hot] * seconds + [20.0]
    return [MetricBatch("c1", "n1", T0 + i, [Sample(metric, v)]) for i, v in enumerate(vals)]


def alerts_of(op: Operator, metric: str, hot: float, seconds: int) -> list[Alert]:
    out = run_items(Dispatcher([op]), hot_series(metric, hot, seconds))
    return [e.message for e in out if isinstance(e.message, Alert)]


def test_readme_example_fires_and_resolves_a_real_alert() -> None:
    (block,) = readme_blocks()
    (op,) = operators_defined(block)
    alerts = alerts_of(op, "gpu.temperature_c", 90.0, 15)
    assert [a.status for a in alerts] == [AlertStatus.FIRING, AlertStatus.RESOLVED]
    assert alerts[0].rule == "hot_gpu" and alerts[0].severity.value == "critical" and alerts[0].value == 90.0


def test_operator_docstring_examples_raise_real_alerts() -> None:
    blocks = docstring_blocks()
    ops = [op for b in blocks if "import" in b for op in operators_defined(b)]
    by_name = {op.name: op for op in ops}
    assert set(by_name) == {"hot_disk", "hot_gpu"}
    assert [a.status for a in alerts_of(by_name["hot_disk"], "disk.temperature_c", 70.0, 40)] == [AlertStatus.FIRING, AlertStatus.RESOLVED]
    assert [a.status for a in alerts_of(by_name["hot_gpu"], "gpu.temperature_c", 90.0, 15)] == [AlertStatus.FIRING, AlertStatus.RESOLVED]


def test_a_short_spike_below_the_for_duration_raises_nothing() -> None:
    (op,) = operators_defined(readme_blocks()[0])
    assert alerts_of(op, "gpu.temperature_c", 90.0, 5) == []
