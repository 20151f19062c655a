"""Real federated training (bench/federated.py: FedAvg on scikit-learn's digits, Dirichlet non-IID
clients) judged by the detector, and the aggregator-side TrustGate that closes the loop."""
from __future__ import annotations

import asyncio
import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from bench.federated import FedConfig, aggregate, dirichlet_split, run_federated
from producers.training import TrustGate
from schemas import TrustScore, encode, subjects
from swarmwatch.cli import app

TINY = FedConfig(dataset="digits", model="mlp", clients=20, alpha=0.3, rounds=30, attack_start=8, seed=3)


def _assert_no_honest_accused(cfg: FedConfig) -> None:
    """Run ``cfg``'s federated training with detection on; no honest client may be accused."""
    res = run_federated(cfg)
    assert res.detection is not None and res.detection["honest_accused"] == 0, res.detection

def test_honest_non_iid_training_converges_and_no_honest_client_is_accused() -> None:
    res = run_federated(TINY)
    assert res.accuracy > 0.8, res.accuracy_curve
    assert res.detection is not None and res.detection["honest_accused"] == 0, res.detection


def test_inner_product_manipulation_is_caught_on_real_training_and_gating_keeps_the_model_accurate() -> None:
    clean = run_federated(TINY).accuracy
    plain = run_federated(_with(TINY, attack="ipm", attackers=0.2))
    gated = run_federated(_with(TINY, attack="ipm", attackers=0.2, defence="swarmwatch"))
    assert plain.detection is not None
    assert plain.detection["recall"] == 1.0 and plain.detection["honest_accused"] == 0, plain.detection
    assert plain.detection["median_latency_rounds"] <= 5
    assert gated.excluded_rounds > 0
    assert gated.accuracy >= clean - 0.03 and gated.accuracy > plain.accuracy + 0.02, (clean, plain.accuracy, gated.accuracy)


def _with(cfg: FedConfig, **kw: object) -> FedConfig:
    from dataclasses import replace

    return replace(cfg, **kw)  # type: ignore[arg-type]


def test_dirichlet_split_gives_every_client_data_and_small_alpha_concentrates_labels() -> None:
    y = np.repeat(np.arange(10), 100)
    rng = np.random.default_rng(0)
    skewed = dirichlet_split(y, 40, 0.1, rng)
    mild = dirichlet_split(y, 40, 10.0, rng)
    assert sorted(np.concatenate(skewed).tolist()) == list(range(1000))
    assert min(len(p) for p in skewed) >= 4
    top = lambda parts: np.mean([np.bincount(y[p], minlength=10).max() / len(p) for p in parts])  # noqa: E731
    assert top(skewed) > 0.5 and top(mild) < 0.3


def test_robust_rules_resist_one_huge_row_and_krum_picks_a_member_of_the_majority() -> None:
    U = np.vstack([np.ones((6, 3)) + 0.01 * np.arange(6)[:, None], [[100.0, -100.0, 100.0]]])
    w = np.ones(7)
    assert abs(aggregate("median", U, w, 1)[0] - 1.03) < 0.02
    assert abs(aggregate("trimmed_mean", U, w, 1)[1] - 1.03) < 0.03
    assert aggregate("krum", U, w, 1)[0] < 2.0
    assert aggregate("fedavg", U, w, 1)[0] > 10.0
    assert np.allclose(aggregate("swarmwatch", U, np.r_[np.ones(6), 0.0], 1), U[:6].mean(0))


def _score(node: str, rnd: int, trust: float, flagged: bool, cluster: str = "fl") -> TrustScore:
    return TrustScore(cluster=cluster, node=node, ts=1.7e9 + rnd, round=rnd, trust=trust, evidence={"flagged": True} if flagged else {})


def test_trust_gate_excludes_flagged_and_low_trust_nodes_and_weighs_the_rest_by_trust() -> None:
    gate = TrustGate("fl", min_trust=0.5)
    gate.observe(_score("a", 3, 0.9, False))
    gate.observe(_score("b", 3, 0.45, False))
    gate.observe(_score("c", 3, 0.8, True))
    assert not gate.observe(_score("d", 3, 0.1, True, cluster="other"))
    assert gate.excluded() == {"b", "c"}
    assert gate.weights(["a", "b", "c", "new"]) == {"a": 0.9, "b": 0.0, "c": 0.0, "new": 1.0}
    # an older round arriving late does not overwrite a newer verdict; a newer one does
    assert not gate.observe(_score("c", 2, 1.0, False))
    assert gate.is_excluded("c")
    gate.observe(_score("c", 20, 0.95, False))
    assert not gate.is_excluded("c") and gate.round_of("c") == 20


async def test_trust_gate_follows_trust_scores_published_on_nats(nc) -> None:  # type: ignore[no-untyped-def]
    gate = TrustGate("fl")
    await gate.follow(nc)
    await nc.publish(subjects.trust("fl", "n1"), encode(_score("n1", 5, 0.3, True)))
    await nc.publish(subjects.trust("fl", "n2"), encode(_score("n2", 5, 0.99, False)))
    await nc.publish(subjects.trust("fl", "n3"), b"not json")
    await nc.publish(subjects.trust("other", "n4"), encode(_score("n4", 5, 0.1, True, cluster="other")))
    await nc.flush()
    for _ in range(100):
        if gate.received >= 2 and gate.rejected >= 1:
            break
        await asyncio.sleep(0.02)
    assert gate.excluded() == {"n1"} and gate.trust("n2") == 0.99 and gate.rejected == 1
    await gate.stop()


def test_real_training_reports_backtest_through_the_cli_in_the_simulator_format(tmp_path: Path) -> None:
    res = run_federated(_with(TINY, attack="min_sum", attackers=0.2, rounds=20), keep_reports=True)
    events, out = tmp_path / "events.jsonl", tmp_path / "verdicts.jsonl"
    with open(events, "w") as fh:
        for rep in res.reports or []:
            fh.write(json.dumps(rep) + "\n")
    line = json.loads(events.read_text().splitlines()[0])
    assert {"node_id", "round", "update_norm", "sketch", "loss", "samples"} <= set(line) and len(line["sketch"]) == 64
    run = CliRunner().invoke(app, ["backtest", "byzantine", str(events), "-o", str(out)])
    assert run.exit_code == 0, run.output
    flagged = {json.loads(v)["node_id"] for v in out.read_text().splitlines()}
    assert flagged == set(res.attackers)


@pytest.mark.parametrize("bad", [{"attack": "nope"}, {"defence": "nope"}, {"attackers": 0.6}, {"dataset": "mnist"}])
def test_fed_config_rejects_unknown_choices(bad: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        FedConfig(**bad)  # type: ignore[arg-type]


def test_copied_honest_clients_are_not_accused_when_a_third_of_the_fleet_copies() -> None:
    # 15 copiers pass off a random honest client's update every round, so each honest client is
    # copied in about a third of the rounds (sometimes several rounds running); only copiers are caught
    res = run_federated(FedConfig(dataset="digits", model="mlp", clients=50, alpha=0.3, rounds=30, attack="copy", attackers=0.3, seed=2))
    assert res.detection is not None
    assert res.detection["recall"] == 1.0 and res.detection["honest_accused"] == 0, res.detection


def test_a_steady_non_iid_client_is_not_accused_while_thirty_percent_colluders_are_left_out() -> None:
    # with 15 ALIE colluders out of the consensus, a client whose one-class data keeps it pointing
    # its own way slides slowly below the fleet's alignment over 60 rounds: its own history, not
    # the fleet line, is what it is judged against
    res = run_federated(FedConfig(dataset="digits", model="mlp", clients=50, alpha=0.3, rounds=60, attack="alie", attackers=0.3, seed=0))
    assert res.detection is not None
    assert res.detection["recall"] == 1.0 and res.detection["honest_accused"] == 0, res.detection


def test_a_small_honest_fleet_is_not_accused() -> None:
    # 20 clients: every spread comes from ~19 reports, and a one-class client resends nearly
    # the same update every round (its usual behaviour, not a replay)
    _assert_no_honest_accused(FedConfig(dataset="digits", model="mlp", clients=20, alpha=0.3, rounds=40, seed=0))


def test_two_honest_clients_with_much_the_same_data_are_not_taken_for_colluders() -> None:
    # 20 clients at alpha 0.3: two of them hold mostly the same digit, so their persistent
    # deviations from the consensus point the same way from their first rounds on
    _assert_no_honest_accused(FedConfig(dataset="digits", model="mlp", clients=20, alpha=0.3, rounds=40, seed=1))


def test_a_converged_two_class_fleet_is_not_accused_for_minibatch_loss_swings() -> None:
    # generated two-class data: once converged, a client's loss on one minibatch is near zero or
    # dominated by one hard example, swinging by an order of magnitude between rounds
    res = run_federated(FedConfig(dataset="binary", model="mlp", clients=20, alpha=1.0, rounds=40, seed=2))
    assert res.accuracy > 0.85
    assert res.detection is not None and res.detection["honest_accused"] == 0, res.detection


def test_small_binary_tuning_fleets_are_two_class_tasks_that_exclude_breast_cancer() -> None:
    from bench.federated import SMALL_BINARY, load_dataset

    assert "cancer" not in SMALL_BINARY
    for name in SMALL_BINARY:
        Xtr, ytr, Xte, yte = load_dataset(name)
        assert set(np.unique(ytr)) == {0, 1} and set(np.unique(yte)) == {0, 1}, name
        assert Xtr.shape[1] == Xte.shape[1] and len(Xtr) > 4 * len(Xte) * 0.9, name


def test_a_client_that_turns_towards_the_fleet_is_not_accused_of_turning() -> None:
    # two-class fleet: once a client's own data are fitted its update stops pointing its own
    # way and follows the fleet's gradient: it turns away from its own past, towards the consensus
    _assert_no_honest_accused(FedConfig(dataset="binary", model="mlp", clients=20, alpha=0.5, rounds=40, seed=2))


def test_sign_flippers_on_the_minority_side_of_a_two_class_fleet_are_caught() -> None:
    # even against odd digits: a client of the minority side points against the consensus, so
    # its flipped update points with it; it still points against its own past
    res = run_federated(FedConfig(dataset="digits_even", model="mlp", clients=20, alpha=0.3, rounds=40, attack="sign_flip", attackers=0.2, seed=1))
    assert res.detection is not None and res.detection["recall"] == 1.0, res.detection


def test_clients_of_the_minority_side_are_not_stale_when_the_median_changes_sides() -> None:
    # wine, class 0 against the rest, 20 clients: one-class clients point two ways; as
    # participation varies the coordinate-wise median swings between the sides, and the minority
    # side's steady updates fit an earlier round's consensus better than this one's
    _assert_no_honest_accused(FedConfig(dataset="wine_0", model="mlp", clients=20, alpha=0.5, rounds=40, seed=1))


@pytest.mark.parametrize(("dataset", "alpha", "seed"), [("wine_0", 0.1, 0), ("binary", 0.3, 2)])
def test_a_steady_client_is_not_stale_for_the_small_residual_its_usual_direction_leaves(dataset: str, alpha: float, seed: int) -> None:
    # converged two-class fleets: most clients' fit to an earlier consensus is explained by their
    # usual direction, so the voters' spread of the gap collapses to ~0.001; a steady client's
    # residual of ~0.01 (its update is not quite its usual direction) is within the resolution
    # of sketch cosines, not many sd
    _assert_no_honest_accused(FedConfig(dataset=dataset, model="mlp", clients=20, alpha=alpha, rounds=40, seed=seed))


def test_a_converged_one_class_client_sending_tiny_updates_with_a_tiny_loss_is_not_accused() -> None:
    # wine, class 0 against the rest: a one-class client's data are fitted within a few rounds;
    # its updates settle at ~1/30 of the fleet's, its loss at ~1/5 (beyond own_ratio_cap)
    _assert_no_honest_accused(FedConfig(dataset="wine_0", model="mlp", clients=20, alpha=0.1, rounds=40, seed=2))


def test_honest_kinship_that_grows_as_a_two_class_fleet_converges_is_not_collusion() -> None:
    # digits 3 against 8: two clients holding mostly the same class come to share their
    # persistent deviation (cosine 0.97-0.99) only after round 20, past their warm-up
    res = run_federated(FedConfig(dataset="digits_3v8", model="mlp", clients=20, alpha=0.3, rounds=40, seed=1))
    assert res.detection is not None and "collusion" not in res.detection["accused_reasons"], res.detection
