"""Offline runs of an anomaly detector over CSV files (``timestamp,value``).

Writes NAB's results format: ``timestamp,anomaly_score`` with one row per
input row and scores in [0, 1]; a directory of inputs gives a directory of
results with the same tree. Each file gets a fresh detector, the same one the
live operator builds for a series, scored through its vectorised path (equal
to feeding it row by row, so every score depends only on earlier rows).

``live=True`` instead feeds each row as a one-sample MetricBatch to a fresh
``AnomalyOperator`` through the shared dispatch step (``processors.dispatch``),
exactly as the live processor and ``swarmwatch replay`` do: gaps, grace
periods after them and late points are handled as live, and the alerts it
would have raised are counted. A row the operator does not score (late, or in
a grace period) gets score 0.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from processors.anomaly.base import DEFAULT_THRESHOLD, AnomalyDetector
from processors.anomaly.registry import DEFAULT_DETECTOR, make_detector


class BacktestError(ValueError):
    """An input file or path that cannot be backtested (the message names it)."""


@dataclass(slots=True)
class FileResult:
    """One file: rows, rows without a usable value, rows at or above the threshold."""

    source: Path
    output: Path
    rows: int
    gaps: int
    flagged: int


@dataclass(slots=True)
class LiveFileResult(FileResult):
    """A file run through the live operator: also the alerts it raised."""

    alerts_fired: int = 0


@dataclass(slots=True)
class BacktestReport:
    """A whole run; ``points_per_s`` counts reading, scoring and writing."""

    files: list[FileResult] = field(default_factory=list)
    seconds: float = 0.0
    threshold: float = DEFAULT_THRESHOLD
    detector: str = DEFAULT_DETECTOR

    @property
    def rows(self) -> int:
        return sum(f.rows for f in self.files)

    @property
    def flagged(self) -> int:
        return sum(f.flagged for f in self.files)

    @property
    def points_per_s(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else 0.0


def _parse_times(texts: list[str], path: Path) -> np.ndarray:
    """UNIX seconds from ISO-like timestamps (``2015-08-31 18:22:00``) or plain epoch numbers."""
    if not texts:
        return np.zeros(0)
    try:
        return np.array(texts, dtype="datetime64[ms]").astype(np.int64) / 1000.0
    except ValueError:
        pass
    try:
        return np.array(texts, dtype=float)
    except ValueError:
        for i, t in enumerate(texts):
            try:
                np.datetime64(t)
            except ValueError:
                try:
                    float(t)
                except ValueError:
                    raise BacktestError(f"{path}: row {i + 2}: timestamp {t!r} is neither ISO 8601 nor UNIX seconds") from None
        raise BacktestError(f"{path}: timestamps could not be parsed") from None


def read_series(path: Path) -> tuple[list[str], np.ndarray, np.ndarray]:
    """(timestamp texts, UNIX seconds, values) of a ``timestamp,value`` CSV; blank or bad values are NaN."""
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise BacktestError(f"{path}: cannot read: {exc}") from None
    lines = text.splitlines()
    if not lines:
        raise BacktestError(f"{path}: empty file; expected a header 'timestamp,value'")
    header = [h.strip() for h in lines[0].split(",")]
    if "timestamp" not in header or "value" not in header:
        raise BacktestError(f"{path}: header {lines[0]!r} lacks the columns 'timestamp' and 'value'")
    it, iv = header.index("timestamp"), header.index("value")
    rows = [ln.split(",") for ln in lines[1:] if ln.strip()]
    try:
        stamps = [r[it].strip() for r in rows]
        raw = [r[iv] for r in rows]
    except IndexError:
        bad = next(i for i, r in enumerate(rows) if len(r) <= max(it, iv))
        raise BacktestError(f"{path}: row {bad + 2} has {len(rows[bad])} columns; expected {len(header)}") from None
    try:
        values = np.array(raw, dtype=float)
    except ValueError:
        values = np.array([_to_float(x) for x in raw], dtype=float)
    return stamps, _parse_times(stamps, path), values


def _to_float(x: str) -> float:
    try:
        return float(x)
    except ValueError:
        return float("nan")


def write_scores(path: Path, stamps: list[str], scores: np.ndarray) -> None:
    """Write ``timestamp,anomaly_score`` rows."""
    path.parent.mkdir(parents=True, exist_ok=True)
    body = "\n".join(f"{t},{s:.9g}" for t, s in zip(stamps, scores.tolist()))
    path.write_text("timestamp,anomaly_score\n" + body + ("\n" if stamps else ""))


def score_file(source: Path, output: Path, detector: AnomalyDetector) -> FileResult:
    """Score one CSV with ``detector`` (fresh) and write the results."""
    stamps, ts, values = read_series(source)
    scores = np.clip(detector.score_many(values, ts), 0.0, 1.0)
    write_scores(output, stamps, scores)
    return FileResult(
        source, output, len(stamps), int(np.count_nonzero(~np.isfinite(values))), int(np.count_nonzero(scores >= detector.threshold))
    )


def score_file_live(source: Path, output: Path, detector: str = DEFAULT_DETECTOR, threshold: float | None = None) -> LiveFileResult:
    """Score one CSV through a fresh AnomalyOperator and the shared dispatch step; write the results."""
    from processors.anomaly.operator import AnomalyOperator, MetricFamily
    from processors.dispatch import Dispatcher
    from schemas import MetricBatch, Sample

    stamps, ts, values = read_series(source)
    op = AnomalyOperator([MetricFamily("*", detector, threshold=threshold)], max_series=1)
    scores = np.zeros(len(values))
    row = 0

    def record(_key: tuple[str, str, str], _ts: float, _x: float, score: float) -> None:
        scores[row] = score

    op.on_score = record
    dispatcher = Dispatcher([op])
    fired = 0
    for row, (t, v) in enumerate(zip(ts.tolist(), values.tolist())):
        emits, failures = dispatcher.dispatch(MetricBatch("backtest", "file", t, [Sample("value", v)]), t)
        if failures:
            raise failures[0].error
        fired += sum(1 for e in emits if getattr(getattr(e.message, "status", None), "value", None) == "firing")
    scores = np.clip(scores, 0.0, 1.0)
    write_scores(output, stamps, scores)
    thr = op.families[0].build().threshold
    return LiveFileResult(
        source, output, len(stamps), int(np.count_nonzero(~np.isfinite(values))), int(np.count_nonzero(scores >= thr)), fired
    )


def plan(data: Path, out: Path) -> list[tuple[Path, Path]]:
    """(input, output) pairs: a file maps to ``out`` (or ``out/<name>`` if ``out`` is a directory); a tree to the same tree."""
    if data.is_file():
        target = out / data.name if out.is_dir() else out
        return [(data, target)]
    if data.is_dir():
        files = sorted(p for p in data.rglob("*.csv") if p.is_file())
        if not files:
            raise BacktestError(f"{data}: no .csv files under this directory")
        if out.exists() and not out.is_dir():
            raise BacktestError(f"{out}: exists and is not a directory; results of a tree go to a directory")
        return [(p, out / p.relative_to(data)) for p in files]
    raise BacktestError(f"{data}: no such file or directory")


def run_backtest(
    data: Path,
    out: Path,
    detector: str = DEFAULT_DETECTOR,
    threshold: float | None = None,
    on_file: Callable[[FileResult], None] | None = None,
    live: bool = False,
) -> BacktestReport:
    """Backtest every CSV of ``data`` into ``out``; ``on_file`` is called after each (progress).

    ``live``: run each file through the live AnomalyOperator (see the module docstring).
    """
    make_detector(detector, threshold)  # fail on a bad name or threshold before any work
    pairs = plan(Path(data), Path(out))
    report = BacktestReport(detector=detector)
    t0 = time.perf_counter()
    for src, dst in pairs:
        det = make_detector(detector, threshold)
        report.threshold = det.threshold
        res = score_file_live(src, dst, detector, threshold) if live else score_file(src, dst, det)
        report.files.append(res)
        if on_file is not None:
            on_file(res)
    report.seconds = time.perf_counter() - t0
    return report
