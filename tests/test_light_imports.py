"""Package ``__init__``s load lazily: a sidecar, a sink or a user's operator loads only what it uses.

Each check runs in a fresh interpreter and looks at ``sys.modules`` (timing is
measured in bench/, never asserted here).
"""
from __future__ import annotations

import json
import subprocess
import sys

import pytest


def _modules_after(statement: str) -> set[str]:
    code = f"import sys, json\n{statement}\nprint(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    return set(json.loads(out.stdout.strip().splitlines()[-1]))


def _loaded(modules: set[str], roots: tuple[str, ...]) -> list[str]:
    return sorted(m for m in modules if m in roots or m.startswith(tuple(r + "." for r in roots)))


def test_operator_contract_imports_no_nats_numpy_fastapi_or_pydantic() -> None:
    mods = _modules_after("import processors.operator")
    assert _loaded(mods, ("nats", "numpy", "fastapi", "pydantic", "processors.byzantine", "processors.anomaly")) == []


def test_writing_an_operator_from_the_package_surface_stays_light() -> None:
    mods = _modules_after("from processors import Emit, Operator, operator")
    assert _loaded(mods, ("nats", "numpy", "fastapi")) == []


def test_file_sink_does_not_load_the_byzantine_detector_or_fastapi() -> None:
    mods = _modules_after("import sinks.files")
    assert _loaded(mods, ("processors.byzantine", "processors.anomaly", "fastapi", "starlette", "numpy")) == []


def test_sidecar_entry_point_loads_no_processors_sinks_or_numpy() -> None:
    mods = _modules_after("import producers.sidecar")
    assert _loaded(mods, ("processors", "sinks", "numpy", "fastapi", "pydantic")) == []


def test_sdk_alone_does_not_load_nats() -> None:
    mods = _modules_after("from producers import counter, gauge, timed")
    assert _loaded(mods, ("nats", "numpy")) == []


@pytest.mark.parametrize("package", ["processors", "processors.anomaly", "processors.byzantine", "sinks", "sinks.api",
                                     "sinks.notify", "producers"])
def test_every_public_name_still_resolves_from_the_package(package: str) -> None:
    code = (f"import importlib\nm = importlib.import_module({package!r})\n"
            "missing = [n for n in m.__all__ if getattr(m, n, None) is None]\nprint(missing)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "[]"


def test_operator_decorator_wins_over_the_submodule_of_the_same_name() -> None:
    code = "import processors.operator\nfrom processors import operator\nprint(callable(operator))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "True"


def test_unknown_name_raises_attribute_error() -> None:
    import processors

    with pytest.raises(AttributeError, match="no_such_thing"):
        getattr(processors, "no_such_thing")
