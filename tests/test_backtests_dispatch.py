"""Both backtests run their operators through the shared dispatch step, like the live runtime and replay."""
from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest

from processors.anomaly.backtest import read_series, run_backtest
from processors.anomaly.registry import default_detector
from processors.byzantine.backtest import run as byzantine_run
from processors.dispatch import Dispatcher
from tests.test_anomaly_backtest import write_csv


def test_live_anomaly_backtest_scores_like_the_detector_and_counts_the_operators_alerts(tmp_path: Path) -> None:
    write_csv(tmp_path / "x.csv")
    report = run_backtest(tmp_path / "x.csv", tmp_path / "live.csv", live=True)
    lines = (tmp_path / "live.csv").read_text().splitlines()[1:]
    scores = np.array([float(ln.split(",")[1]) for ln in lines])
    _, ts, values = read_series(tmp_path / "x.csv")
    det = default_detector()
    direct = np.clip([det.process_one(float(v), float(t)) for v, t in zip(values, ts)], 0, 1)
    np.testing.assert_allclose(scores, direct, atol=1e-8)  # no gaps in this series: the operator scores every row
    (res,) = report.files
    assert res.rows == 1200 and res.flagged >= 1 and res.alerts_fired >= 1  # the spike raised a real alert through AlertTracker


def test_byzantine_backtest_counts_through_the_dispatcher(monkeypatch: pytest.MonkeyPatch) -> None:
    made: list[Dispatcher] = []
    orig = Dispatcher.__init__

    def spy(self: Dispatcher, ops: object) -> None:
        orig(self, ops)  # type: ignore[arg-type]
        made.append(self)

    monkeypatch.setattr(Dispatcher, "__init__", spy)
    lines = []
    for rnd in range(1, 4):
        for n in range(5):
            lines.append(json.dumps({"node_id": f"n{n}", "round": rnd, "ts": 1.7e9 + rnd, "update_norm": 1.0 + 0.01 * n, "sketch": [0.1 * n, 0.2, 0.3, 0.4]}))
    byzantine_run(iter(__import__("processors.byzantine.backtest", fromlist=["read_events"]).read_events(lines)), io.StringIO())
    (d,) = made
    assert d.stats.by_operator["byzantine"].inputs == 15


def test_backtest_anomaly_live_flag_reports_the_alerts(tmp_path: Path) -> None:
    import subprocess
    import sys

    write_csv(tmp_path / "x.csv")
    res = subprocess.run(
        [sys.executable, "-m", "swarmwatch", "backtest", "anomaly", str(tmp_path / "x.csv"), "-o", str(tmp_path / "o.csv"), "--live", "-q"],
        capture_output=True, text=True, timeout=60,
    )
    assert res.returncode == 0, res.stderr
    summary = json.loads(res.stdout.strip().splitlines()[-1])
    assert summary["rows"] == 1200 and summary["alerts_fired"] >= 1
