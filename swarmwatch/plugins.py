"""Custom operators from installed packages (entry points) and from ``pkg.module:attr`` specs.

A package registers operators under the entry-point group
``swarmwatch.operators``::

    [project.entry-points."swarmwatch.operators"]
    hot_gpu = "my_ops.gpu:hot_gpu"

Once pip-installed they run in ``swarmwatch process`` (and ``up``) with no
glue code. The target, like ``--operator pkg.module:attr``, may be an
Operator instance, an Operator subclass (built with no arguments), a function
decorated with ``@operator``, or a factory function returning one operator or
a list of them.
"""
from __future__ import annotations

import importlib
from collections.abc import Iterable
from importlib.metadata import EntryPoint, entry_points
from typing import Any

from processors.operator import Operator

ENTRY_POINT_GROUP = "swarmwatch.operators"


class PluginError(ValueError):
    """An operator spec or entry point that cannot be loaded (the message names it and why)."""


def installed() -> list[EntryPoint]:
    """The entry points of group ``swarmwatch.operators``, sorted by name."""
    return sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda ep: ep.name)


def as_operators(obj: Any, where: str) -> list[Operator]:
    """Turn what a spec names into operators (instance, class, factory or a list of them)."""
    if isinstance(obj, Operator):
        return [obj]
    if isinstance(obj, type):
        if not issubclass(obj, Operator):
            raise PluginError(f"{where}: class {obj.__name__} is not a processors.Operator subclass")
        try:
            return [obj()]
        except TypeError as exc:
            raise PluginError(f"{where}: {obj.__name__}() needs arguments ({exc}); expose a configured instance or a factory") from None
    if isinstance(obj, (list, tuple)):
        out: list[Operator] = []
        for x in obj:
            out.extend(as_operators(x, where))
        return out
    if callable(obj):
        try:
            made = obj()
        except TypeError as exc:
            raise PluginError(
                f"{where}: {getattr(obj, '__name__', obj)!r} is a function that is not an operator; "
                f"decorate it with @processors.operator or make it a factory taking no arguments ({exc})"
            ) from None
        return as_operators(made, where)
    raise PluginError(f"{where}: {type(obj).__name__} is not an operator; expected an Operator, a subclass of it or a factory")


def load_spec(spec: str) -> list[Operator]:
    """Operators named by ``pkg.module:attr`` (the module is imported)."""
    module, sep, attr = spec.partition(":")
    if not sep or not module or not attr:
        raise PluginError(f"operator {spec!r} is invalid; expected pkg.module:attr, e.g. my_ops.gpu:hot_gpu")
    try:
        mod = importlib.import_module(module)
    except ImportError as exc:
        raise PluginError(f"operator {spec!r}: cannot import {module!r}: {exc}") from None
    obj: Any = mod
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise PluginError(f"operator {spec!r}: module {module!r} has no attribute {attr!r}") from None
    return as_operators(obj, f"operator {spec!r}")


def load_installed(eps: Iterable[EntryPoint] | None = None) -> list[Operator]:
    """Every operator registered under ``swarmwatch.operators``."""
    out: list[Operator] = []
    for ep in installed() if eps is None else eps:
        try:
            obj = ep.load()
        except Exception as exc:
            raise PluginError(f"installed operator {ep.name!r} ({ep.value}) failed to load: {exc!r}") from None
        out.extend(as_operators(obj, f"installed operator {ep.name!r} ({ep.value})"))
    return out


def load_operators(specs: Iterable[str] = (), *, include_installed: bool = True) -> list[Operator]:
    """Installed operators (unless excluded) plus those named by ``specs``; a name loaded twice is kept once."""
    ops = load_installed() if include_installed else []
    for spec in specs:
        ops.extend(load_spec(spec))
    seen: dict[str, Operator] = {}
    for op in ops:
        prev = seen.get(op.name)
        if prev is not None and prev is not op:
            raise PluginError(f"two custom operators are named {op.name!r}; operator names must be unique")
        seen[op.name] = op
    return list(seen.values())


def describe_installed() -> str:
    """One line per installed operator for ``--help``, or a note that there are none."""
    try:
        eps = installed()
    except Exception:  # a broken distribution must not break --help
        return "(could not list installed operators)"
    if not eps:
        return f"none installed (packages register them under the entry-point group {ENTRY_POINT_GROUP!r})"
    return ", ".join(f"{ep.name} ({ep.value})" for ep in eps)
