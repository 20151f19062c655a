"""Offline run of ByzantineOperator over a JSON-lines file of training.update reports.

Input lines are either swarmwatch Events (``{"cluster", "node", "ts", "kind",
"payload"}``) or the simulator's flat reports (``{"kind", "ts", "cluster",
"node_id", "round", "loss", "update_norm", "sketch", ...}``). Output: one
verdict per flagged (node, round), ``{"node_id", "round", "score", "reason"}``.
"""
from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import msgspec

from schemas import Event

from processors.byzantine.detector import DetectorConfig, RoundResult
from processors.byzantine.operator import ByzantineOperator

_SIM_RESERVED = frozenset({"kind", "ts", "cluster", "node_id", "node"})


class BacktestInputError(ValueError):
    """A line of the input file is not a usable training.update report."""


@dataclass(slots=True)
class BacktestSummary:
    """Counts from one backtest run."""

    events: int = 0
    skipped: int = 0
    rounds: int = 0
    verdicts: int = 0
    flagged_nodes: list[str] = field(default_factory=list)
    alerts_fired: int = 0
    alerts_resolved: int = 0


def to_event(obj: dict[str, Any]) -> Event:
    """One input object as a schemas.Event (simulator lines are converted)."""
    if "payload" in obj and "node" in obj:
        return msgspec.convert(obj, Event)
    if "node_id" not in obj:
        raise BacktestInputError(f"line has neither 'payload'+'node' nor 'node_id': keys {sorted(obj)}")
    payload = {k: v for k, v in obj.items() if k not in _SIM_RESERVED}
    return Event(
        cluster=str(obj.get("cluster", "default")),
        node=str(obj["node_id"]),
        ts=float(obj["ts"]),
        kind=str(obj.get("kind", "training.update")),
        payload=payload,
    )


def read_events(lines: Iterable[str], strict: bool = True) -> Iterator[Event | None]:
    """Parse lines into Events; a bad line raises BacktestInputError (or yields None if not strict)."""
    for no, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            yield to_event(json.loads(line))
        except (ValueError, TypeError, KeyError, msgspec.ValidationError) as exc:
            if strict:
                raise BacktestInputError(f"line {no}: {exc}") from None
            yield None


def run(
    events: Iterable[Event | None],
    out: TextIO,
    config: DetectorConfig | None = None,
    close_lag_rounds: int = 0,
) -> BacktestSummary:
    """Feed events to a fresh operator in file order; write one verdict line per flagged (node, round)."""
    summary = BacktestSummary()
    flagged: set[str] = set()

    def observe(cluster: str, res: RoundResult) -> None:
        summary.rounds += 1
        for v in res.verdicts:
            if v.flagged:
                flagged.add(v.node)
                summary.verdicts += 1
                out.write(
                    json.dumps(
                        {
                            "node_id": v.node,
                            "round": v.round,
                            "score": v.suspicion,
                            "reason": v.reason,
                            "trust": v.trust,
                            "cluster": cluster,
                            "detected_round": v.detected_round,
                        },
                        separators=(",", ":"),
                    )
                    + "\n"
                )

    op = ByzantineOperator(config, close_lag_rounds=close_lag_rounds, emit_trust=False, observer=observe)
    last_ts = 0.0

    def count(emits: Iterable[Any]) -> None:
        for e in emits:
            status = getattr(getattr(e.message, "status", None), "value", None)
            if status == "firing":
                summary.alerts_fired += 1
            elif status == "resolved":
                summary.alerts_resolved += 1

    for ev in events:
        if ev is None:
            summary.skipped += 1
            continue
        summary.events += 1
        last_ts = max(last_ts, ev.ts)
        count(op.on_event(ev, ev.ts))
    count(op.flush(last_ts))
    summary.skipped += op.stats.errors + op.stats.dropped + op.stats.late
    summary.flagged_nodes = sorted(flagged)
    return summary


def backtest_file(
    events_path: str | Path,
    verdicts_path: str | Path,
    config: DetectorConfig | None = None,
    close_lag_rounds: int = 0,
    strict: bool = True,
) -> BacktestSummary:
    """Run the operator over ``events_path`` and write verdicts to ``verdicts_path``."""
    src = Path(events_path)
    if not src.is_file():
        raise BacktestInputError(f"events file {str(src)!r} does not exist")
    with open(src, encoding="utf-8") as fin, open(verdicts_path, "w", encoding="utf-8") as fout:
        return run(read_events(fin, strict=strict), fout, config, close_lag_rounds)
