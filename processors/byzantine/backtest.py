"""Offline run of ByzantineOperator over a JSON-lines file of training.update reports.

Input lines are either swarmwatch Events (``{"cluster", "node", "ts", "kind",
"payload"}``) or flat reports as the simulator and docs/byzantine.md write them
(``{"node_id", "round", "update_norm", "sketch", "loss"?, "ts"?, "cluster"?, "kind"?}``).
Only ``node_id`` (or ``node``), ``round``, ``update_norm`` and ``sketch`` are
required: ``cluster`` defaults to ``default``, ``kind`` to ``training.update``
and a missing ``ts`` (event time, UNIX s) to a fixed epoch plus the round number. Output: one
verdict per flagged (node, round), ``{"node_id", "round", "score", "reason", ...}``.
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
from processors.byzantine.operator import TRAINING_UPDATE, ByzantineOperator, parse_update
from processors.dispatch import Dispatcher, OperatorFailure

_NO_TS_EPOCH = 1_000_000_000.0  # UNIX s; a line without ts is placed at this epoch + its round number (s)
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


def _ts(obj: dict[str, Any], payload: dict[str, Any]) -> float:
    """Event time: ``ts`` if given, else a fixed epoch plus the round number (keeps rounds in order)."""
    ts = obj.get("ts")
    if ts is None:
        rnd = payload.get("round")
        return _NO_TS_EPOCH + (float(rnd) if isinstance(rnd, (int, float)) and not isinstance(rnd, bool) else 0.0)
    if isinstance(ts, bool) or not isinstance(ts, (int, float)):
        raise BacktestInputError(f"'ts' must be a number (UNIX seconds), got {ts!r}")
    return float(ts)


def to_event(obj: dict[str, Any]) -> Event:
    """One input object as a schemas.Event (flat report lines are converted; ``ts``, ``cluster`` and
    ``kind`` may be left out)."""
    if not isinstance(obj, dict):
        raise BacktestInputError(f"line is not a JSON object: {type(obj).__name__}")
    if isinstance(obj.get("payload"), dict) and "node" in obj:
        full = dict(obj)
        full.setdefault("kind", "training.update")
        full.setdefault("cluster", "default")
        if full.get("ts") is None:
            full["ts"] = _ts(obj, obj["payload"])
        return msgspec.convert(full, Event)
    node = obj.get("node_id", obj.get("node"))
    if node is None:
        raise BacktestInputError(f"line has neither 'payload'+'node' nor 'node_id': keys {sorted(obj)}")
    payload = {k: v for k, v in obj.items() if k not in _SIM_RESERVED}
    return Event(
        cluster=str(obj.get("cluster") or "default"),
        node=str(node),
        ts=_ts(obj, payload),
        kind=str(obj.get("kind") or "training.update"),
        payload=payload,
    )


def read_events(lines: Iterable[str], strict: bool = True) -> Iterator[Event | None]:
    """Parse lines into Events; a bad line raises BacktestInputError (or yields None if not strict)."""
    for no, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            ev = to_event(json.loads(line))
            if ev.kind == TRAINING_UPDATE:
                parse_update(ev.payload)  # names the missing or malformed field now, with the line number
            yield ev
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
    dispatcher = Dispatcher([op])  # the same dispatch step as the live runtime and replay
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
        count(_raising(dispatcher.dispatch(ev, ev.ts)))
    count(_raising(dispatcher.flush(last_ts)))
    refused = op.stats.errors + op.stats.dropped + op.stats.late
    summary.skipped += refused
    summary.flagged_nodes = sorted(flagged)
    if summary.events - refused <= 0:
        # nothing reached the detector: an empty result here would read as "no Byzantine node"
        what = f"all {summary.skipped} lines were skipped" if summary.skipped else "the file has no report"
        raise BacktestInputError(
            f"no usable training.update report: {what} (each line needs node_id, round, update_norm and sketch;"
            " see docs/byzantine.md)"
        )
    return summary


def _raising(step: tuple[list[Any], list[OperatorFailure]]) -> list[Any]:
    """The Emits of a dispatch step; an operator failure aborts the backtest, as a direct call would."""
    emits, failures = step
    if failures:
        raise failures[0].error
    return emits


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
