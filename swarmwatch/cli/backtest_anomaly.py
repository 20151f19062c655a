"""``swarmwatch backtest anomaly DATA -o RESULTS``: score CSV files offline (NAB results format)."""
from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from swarmwatch.cli import backtest_app

PROGRESS_MIN_FILES = 2  # a single file finishes too fast for a bar to help


@backtest_app.command("anomaly")
def backtest_anomaly(
    data: Path = typer.Argument(..., help="A CSV file (timestamp,value) or a directory tree of them."),
    output: Path = typer.Option(..., "-o", "--output", help="Results: a file for a file, a directory for a tree."),
    threshold: float | None = typer.Option(
        None, "--threshold", help="Alert threshold in (0, 1]; default: the live operator's (a calibrated tail probability)."
    ),
    detector: str = typer.Option("default", "--detector", help="default, extremes, seasonal, sequence or robust_z."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar; print only the summary."),
    live: bool = typer.Option(
        False, "--live", help="Feed each row through the live AnomalyOperator and the shared dispatch step (gaps, grace periods, alerts as live)."
    ),
) -> None:
    """Run the anomaly detector over CSVs and write timestamp,anomaly_score rows (scores in [0, 1])."""
    from processors.anomaly.backtest import BacktestError, plan, run_backtest
    from processors.anomaly.registry import make_detector

    err = Console(stderr=True)
    try:
        make_detector(detector, threshold)
        pairs = plan(data, output)
    except (ValueError, BacktestError) as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None
    show = not quiet and len(pairs) >= PROGRESS_MIN_FILES
    progress = Progress(
        TextColumn("[bold]backtest[/bold] {task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=err,
        transient=True,
        disable=not show,
    )
    with progress:
        task = progress.add_task(str(data), total=len(pairs))
        try:
            report = run_backtest(data, output, detector, threshold, on_file=lambda r: progress.advance(task), live=live)
        except (ValueError, BacktestError) as exc:
            err.print(f"[red]error:[/red] {exc}")
            raise typer.Exit(2) from None
    summary = {
        "files": len(report.files),
        "rows": report.rows,
        "flagged": report.flagged,
        "detector": report.detector,
        "threshold": report.threshold,
        "seconds": round(report.seconds, 3),
        "points_per_s": round(report.points_per_s),
        "output": str(output),
    }
    if live:
        summary["alerts_fired"] = sum(getattr(f, "alerts_fired", 0) for f in report.files)
    typer.echo(json.dumps(summary))
