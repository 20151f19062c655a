"""`swarmwatch backtest anomaly`: NAB results format over a file or a tree, mirroring it."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from processors.anomaly import BacktestError, default_detector, read_series, run_backtest
from processors.anomaly.base import DEFAULT_THRESHOLD as T
from swarmwatch.cli import app


def write_csv(
    path: Path, n: int = 1200, spike_at: int | None = 900, blank_at: int | None = None, spike: float = 90.0
) -> list[float]:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(len(path.name))
    values = (20 + rng.uniform(-1, 1, n)).tolist()
    if spike_at is not None:
        values[spike_at] = spike
    rows = ["timestamp,value"]
    for i, v in enumerate(values):
        hh, mm = divmod(i * 5, 60)
        day, hh = divmod(hh, 24)
        text = "" if i == blank_at else f"{v:.4f}"
        rows.append(f"2024-01-{day + 1:02d} {hh:02d}:{mm:02d}:00,{text}")
    path.write_text("\n".join(rows) + "\n")
    return values


def read_results(path: Path) -> tuple[list[str], np.ndarray]:
    with path.open() as fh:
        rows = list(csv.DictReader(fh))
    return [r["timestamp"] for r in rows], np.array([float(r["anomaly_score"]) for r in rows])


def test_tree_is_mirrored_with_one_score_row_per_input_row(tmp_path: Path) -> None:
    data, out = tmp_path / "data", tmp_path / "results"
    write_csv(data / "realA" / "a.csv")
    write_csv(data / "realB" / "deep" / "b.csv", n=500, spike_at=None, blank_at=10)
    report = run_backtest(data, out)
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*.csv")) == ["realA/a.csv", "realB/deep/b.csv"]
    assert report.rows == 1700 and len(report.files) == 2
    stamps, scores = read_results(out / "realA" / "a.csv")
    src_stamps, _, _ = read_series(data / "realA" / "a.csv")
    assert stamps == src_stamps
    assert ((scores >= 0) & (scores <= 1)).all()
    assert scores[900] >= T and np.count_nonzero(scores >= T) <= 2  # the spike, and at most one stray point of noise
    _, b = read_results(out / "realB" / "deep" / "b.csv")
    assert len(b) == 500 and b[10] == 0.0  # a blank value is a gap, scored 0
    assert report.files[1].gaps == 1


def test_backtest_scores_equal_the_live_detector_fed_row_by_row(tmp_path: Path) -> None:
    write_csv(tmp_path / "x.csv")
    run_backtest(tmp_path / "x.csv", tmp_path / "out.csv")
    _, scores = read_results(tmp_path / "out.csv")
    _, ts, values = read_series(tmp_path / "x.csv")
    det = default_detector()
    live = [det.process_one(float(v), float(t)) for v, t in zip(values, ts)]
    np.testing.assert_allclose(scores, live, atol=1e-8)  # results are written with 9 significant digits


def test_threshold_changes_what_counts_as_a_detection(tmp_path: Path) -> None:
    write_csv(tmp_path / "x.csv", spike=21.1)  # just past the usual 19..21
    low = run_backtest(tmp_path / "x.csv", tmp_path / "lo.csv", threshold=0.9998)
    high = run_backtest(tmp_path / "x.csv", tmp_path / "hi.csv", threshold=0.99999)
    assert (low.threshold, high.threshold) == (0.9998, 0.99999)
    _, lo_scores = read_results(tmp_path / "lo.csv")
    assert 0.9998 <= lo_scores[900] < 0.99999
    assert high.flagged < low.flagged


def test_bad_inputs_are_refused_with_the_file_named(tmp_path: Path) -> None:
    (tmp_path / "bad.csv").write_text("time,val\n1,2\n")
    with pytest.raises(BacktestError, match="bad.csv.*lacks the columns"):
        run_backtest(tmp_path / "bad.csv", tmp_path / "o.csv")
    (tmp_path / "ts.csv").write_text("timestamp,value\nyesterday,2\n")
    with pytest.raises(BacktestError, match="row 2: timestamp 'yesterday'"):
        run_backtest(tmp_path / "ts.csv", tmp_path / "o.csv")
    with pytest.raises(BacktestError, match="no such file"):
        run_backtest(tmp_path / "missing", tmp_path / "o")
    (tmp_path / "empty").mkdir()
    with pytest.raises(BacktestError, match="no .csv files"):
        run_backtest(tmp_path / "empty", tmp_path / "o")


def test_epoch_second_timestamps_are_accepted(tmp_path: Path) -> None:
    rows = "\n".join(f"{1_700_000_000 + 60 * i},{(i % 5) + (50 if i == 700 else 0)}" for i in range(800))
    (tmp_path / "e.csv").write_text("timestamp,value\n" + rows + "\n")
    report = run_backtest(tmp_path / "e.csv", tmp_path / "o.csv")
    assert report.rows == 800 and report.flagged == 1


def test_cli_writes_results_and_prints_a_json_summary(tmp_path: Path) -> None:
    write_csv(tmp_path / "data" / "c" / "a.csv")
    write_csv(tmp_path / "data" / "c" / "b.csv", spike_at=1000)
    res = CliRunner().invoke(app, ["backtest", "anomaly", str(tmp_path / "data"), "-o", str(tmp_path / "r")])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout.strip().splitlines()[-1])
    assert summary["files"] == 2 and summary["rows"] == 2400 and 2 <= summary["flagged"] <= 4
    assert summary["threshold"] == T  # the live operator's threshold, by default
    assert (tmp_path / "r" / "c" / "b.csv").exists()


def test_cli_refuses_unknown_detector_and_bad_threshold_without_traceback(tmp_path: Path) -> None:
    write_csv(tmp_path / "a.csv")
    runner = CliRunner()
    res = runner.invoke(app, ["backtest", "anomaly", str(tmp_path / "a.csv"), "-o", str(tmp_path / "o.csv"), "--detector", "lstm"])
    assert res.exit_code == 2 and "'lstm' is unknown" in res.output and "Traceback" not in res.output
    res = runner.invoke(app, ["backtest", "anomaly", str(tmp_path / "a.csv"), "-o", str(tmp_path / "o.csv"), "--threshold", "2"])
    assert res.exit_code == 2 and "threshold 2.0 must be in (0, 1]" in res.output
