"""Per-second rates from monotonically increasing counters, with reset handling."""
from __future__ import annotations


class CounterRates:
    """Turn cumulative counters into rates per second from the delta between two readings.

    The first reading of a counter gives no rate (there is nothing to subtract). A
    reading lower than the previous one means the counter was reset (a device came
    back, a process restarted, a 32-bit counter wrapped): it gives no rate for that
    interval, re-baselines on the new reading and is counted in ``resets`` — never a
    negative rate.
    """

    __slots__ = ("_last", "resets")

    def __init__(self) -> None:
        self._last: dict[str, tuple[float, float]] = {}
        self.resets = 0

    def rate(self, key: str, value: float, now_s: float) -> float | None:
        """Rate of ``key`` in units per second since its previous reading, or None."""
        d = self.delta(key, value, now_s)
        return None if d is None else d[0] / d[1]

    def delta(self, key: str, value: float, now_s: float) -> tuple[float, float] | None:
        """``(delta, dt_s)`` of ``key`` since its previous reading, or None (first reading or reset)."""
        prev = self._last.get(key)
        self._last[key] = (value, now_s)
        if prev is None:
            return None
        last_value, last_s = prev
        dt = now_s - last_s
        if dt <= 0.0:
            return None
        d = value - last_value
        if d < 0:
            self.resets += 1
            return None
        return d, dt

    def forget(self, key: str) -> None:
        """Drop the baseline of ``key`` (e.g. a disk or interface that disappeared)."""
        self._last.pop(key, None)

    def __len__(self) -> int:
        return len(self._last)
