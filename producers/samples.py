"""A list of samples under construction that drops and counts invalid values."""
from __future__ import annotations

from collections.abc import Iterable

from schemas.models import Sample


class SampleBuffer:
    """Collects samples for one batch; a NaN, infinite or otherwise invalid sample is dropped and counted.

    Collectors append with :meth:`add`; ``value=None`` means "not available" and is
    skipped silently (that is not an error, e.g. a sensor this machine lacks).
    """

    __slots__ = ("items", "invalid")

    def __init__(self) -> None:
        self.items: list[Sample] = []
        self.invalid = 0

    def add(self, name: str, value: float | None, unit: str | None = None, labels: dict[str, str] | None = None) -> None:
        if value is None:
            return
        try:
            self.items.append(Sample(name, float(value), unit, labels).validate())
        except (ValueError, TypeError, OverflowError):
            self.invalid += 1

    def extend(self, samples: Iterable[Sample]) -> None:
        """Append ready-made samples (SDK, probes), validating each; invalid ones are dropped and counted."""
        for s in samples:
            try:
                self.items.append(s.validate())
            except (ValueError, TypeError, OverflowError):
                self.invalid += 1

    def __len__(self) -> int:
        return len(self.items)
