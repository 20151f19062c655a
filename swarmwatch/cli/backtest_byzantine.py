"""``swarmwatch backtest byzantine EVENTS.jsonl -o VERDICTS.jsonl``: the Byzantine detector over a file."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from swarmwatch.cli import backtest_app


@backtest_app.command("byzantine")
def backtest_byzantine(
    events: Path = typer.Argument(..., help="JSON lines of training.update reports (simulator lines or swarmwatch Events)."),
    output: Optional[Path] = typer.Option(None, "-o", "--output", help="Where to write verdicts: one JSON line per flagged (node, round) (required)."),
    old_out: Optional[Path] = typer.Option(None, "--out", hidden=True),
    close_lag_rounds: int = typer.Option(0, help="Judge a round once a report this many rounds later arrives."),
    lenient: bool = typer.Option(False, help="Skip unreadable lines instead of stopping at the first."),
) -> None:
    """Run the Byzantine detector over EVENTS and write {"node_id", "round", "score", "reason"} verdicts."""
    from swarmwatch.cli.common import fail, renamed

    out = renamed("--output", output, "--out", old_out)
    if out is None:
        fail("--output FILE is required: where to write the verdicts")
    from processors.byzantine import BacktestInputError, backtest_file

    if close_lag_rounds < 0:
        typer.echo(f"error: --close-lag-rounds must be >= 0, got {close_lag_rounds}", err=True)
        raise typer.Exit(2)
    try:
        summary = backtest_file(events, out, close_lag_rounds=close_lag_rounds, strict=not lenient)
    except BacktestInputError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    except OSError as exc:
        typer.echo(f"error: cannot write {str(out)!r}: {exc.strerror}", err=True)
        raise typer.Exit(2) from None
    typer.echo(
        json.dumps(
            {
                "events": summary.events,
                "skipped": summary.skipped,
                "rounds": summary.rounds,
                "verdicts": summary.verdicts,
                "flagged_nodes": len(summary.flagged_nodes),
                "alerts_fired": summary.alerts_fired,
                "alerts_resolved": summary.alerts_resolved,
                "out": str(out),
            }
        )
    )
