"""``swarmwatch backtest byzantine``: the operator over a simulator file, one verdict per flagged (node, round)."""
from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from swarmwatch.cli import app

from processors.byzantine.fleet import SyntheticFleet

T0 = 1_763_800_000.0


def write_sim_file(path: Path, fleet: SyntheticFleet, rounds: int) -> None:
    """Lines in the simulator's flat format (node_id, round, loss, update_norm, sketch at top level)."""
    with open(path, "w") as fh:
        for r in range(rounds):
            for i, rep in enumerate(fleet.round(r)):
                line = {
                    "kind": "training.update",
                    "ts": T0 + 30 * r + 0.01 * i,
                    "cluster": "sim",
                    "node_id": rep.node,
                    "round": r,
                    "loss": rep.loss,
                    "update_norm": rep.update_norm,
                    "sketch": rep.sketch.tolist(),
                    "samples": 512,
                }
                fh.write(json.dumps(line) + "\n")


def test_backtest_writes_one_verdict_per_flagged_node_and_round(tmp_path: Path) -> None:
    fleet = SyntheticFleet(nodes=30, attackers=3, attack="ipm", start=10, seed=21)
    events, out = tmp_path / "events.jsonl", tmp_path / "verdicts.jsonl"
    write_sim_file(events, fleet, 30)
    res = CliRunner().invoke(app, ["backtest", "byzantine", str(events), "-o", str(out)])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout.strip().splitlines()[-1])
    assert summary["rounds"] == 30 and summary["flagged_nodes"] == 3
    verdicts = [json.loads(line) for line in out.read_text().splitlines()]
    assert {v["node_id"] for v in verdicts} == fleet.attackers
    assert all(v["round"] >= 10 for v in verdicts)
    assert all({"node_id", "round", "score", "reason"} <= set(v) for v in verdicts)
    assert len({(v["node_id"], v["round"]) for v in verdicts}) == len(verdicts) == summary["verdicts"]


def test_backtest_of_an_honest_fleet_writes_no_verdicts(tmp_path: Path) -> None:
    events, out = tmp_path / "events.jsonl", tmp_path / "verdicts.jsonl"
    write_sim_file(events, SyntheticFleet(nodes=30, attackers=0, seed=22, noisy_fraction=0.3), 40)
    res = CliRunner().invoke(app, ["backtest", "byzantine", str(events), "-o", str(out)])
    assert res.exit_code == 0, res.output
    assert out.read_text() == ""


def test_backtest_reads_swarmwatch_events_as_well(tmp_path: Path) -> None:
    fleet = SyntheticFleet(nodes=20, attackers=2, attack="scale", start=5, seed=23)
    events, out = tmp_path / "events.jsonl", tmp_path / "verdicts.jsonl"
    with open(events, "w") as fh:
        for r in range(15):
            for rep in fleet.round(r):
                payload = {"round": r, "update_norm": rep.update_norm, "loss": rep.loss, "sketch": rep.sketch.tolist()}
                fh.write(json.dumps({"cluster": "c", "node": rep.node, "ts": T0 + r, "kind": "training.update", "payload": payload}) + "\n")
    res = CliRunner().invoke(app, ["backtest", "byzantine", str(events), "-o", str(out)])
    assert res.exit_code == 0, res.output
    assert {json.loads(line)["node_id"] for line in out.read_text().splitlines()} == fleet.attackers


def test_backtest_names_the_bad_line_or_missing_file_and_exits_2(tmp_path: Path) -> None:
    out = tmp_path / "v.jsonl"
    res = CliRunner().invoke(app, ["backtest", "byzantine", str(tmp_path / "nope.jsonl"), "-o", str(out)])
    assert res.exit_code == 2 and "does not exist" in res.output
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"kind": "training.update"}\n')
    res = CliRunner().invoke(app, ["backtest", "byzantine", str(bad), "-o", str(out)])
    assert res.exit_code == 2 and "line 1" in res.output


def test_backtest_reads_the_minimal_format_the_docs_document_without_ts_cluster_or_kind(tmp_path: Path) -> None:
    fleet = SyntheticFleet(nodes=20, attackers=2, attack="sign_flip", start=5, seed=24)
    events, out = tmp_path / "events.jsonl", tmp_path / "verdicts.jsonl"
    with open(events, "w") as fh:
        for r in range(20):
            for rep in fleet.round(r):
                line = {"node_id": rep.node, "round": r, "update_norm": rep.update_norm, "loss": rep.loss, "sketch": rep.sketch.tolist()}
                fh.write(json.dumps(line) + "\n")
    res = CliRunner().invoke(app, ["backtest", "byzantine", str(events), "-o", str(out)])
    assert res.exit_code == 0, res.output
    verdicts = [json.loads(line) for line in out.read_text().splitlines()]
    assert {v["node_id"] for v in verdicts} == fleet.attackers
    assert {v["cluster"] for v in verdicts} == {"default"}


def test_backtest_names_a_line_whose_report_lacks_a_required_field(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"node_id": "a", "round": 0, "update_norm": 1.0, "sketch": [1, 2]}\n{"node_id": "b", "round": 0, "update_norm": 1.0}\n')
    res = CliRunner().invoke(app, ["backtest", "byzantine", str(bad), "-o", str(tmp_path / "v.jsonl")])
    assert res.exit_code == 2 and "line 2" in res.output and "sketch" in res.output


def test_lenient_backtest_that_skipped_every_line_is_an_error_not_an_empty_result(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text("".join(json.dumps({"node": f"n{i}", "value": i}) + "\n" for i in range(30)))
    res = CliRunner().invoke(app, ["backtest", "byzantine", str(bad), "-o", str(tmp_path / "v.jsonl"), "--lenient"])
    assert res.exit_code == 2 and "all 30 lines were skipped" in res.output
