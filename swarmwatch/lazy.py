"""Lazy package exports (PEP 562): a package ``__init__`` names what it offers without importing it.

Standard library only, so any package (the sidecar's ``producers`` included) can use it
without pulling anything heavy in.
"""
from __future__ import annotations

import importlib
from typing import Any, Callable, Mapping, MutableMapping, Sequence


def lazy_exports(package: str, namespace: MutableMapping[str, Any], lazy: Mapping[str, tuple[str, str]],
                 public: Sequence[str]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """The ``__getattr__`` and ``__dir__`` of ``package``, whose globals are ``namespace``.

    ``lazy`` maps a public name to ``(module, attribute)``: that module is imported on the
    name's first use and the value is cached in ``namespace``. Any other name is tried as a
    submodule ``package.name``; a missing one is an ``AttributeError``. ``public`` is the
    package's ``__all__``.
    """

    def __getattr__(name: str) -> Any:
        """Load a public name or a submodule on first use (PEP 562), so importing the package stays cheap."""
        target = lazy.get(name)
        if target is None:
            try:
                return importlib.import_module(f"{package}.{name}")
            except ModuleNotFoundError as exc:
                if exc.name != f"{package}.{name}":
                    raise
                raise AttributeError(f"module {package!r} has no attribute {name!r}") from None
        value = getattr(importlib.import_module(target[0]), target[1])
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted(set(namespace) | set(public))

    return __getattr__, __dir__
