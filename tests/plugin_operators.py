"""Operators named by the --operator spec tests (tests/test_custom_operators.py)."""
from __future__ import annotations

from processors import Operator


class Hot(Operator):
    name = "hot"


class Cold(Operator):
    name = "cold"


class NotAnOperator:
    pass


instance = Hot()


def factory() -> list[Operator]:
    return [Hot(), Cold()]


def plain_function(batch: object, now: float) -> None:
    return None
