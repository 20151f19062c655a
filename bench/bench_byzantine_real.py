"""Byzantine detector and trust-gated FedAvg on real federated training (bench/federated.py). Prints JSON.

    python bench/bench_byzantine_real.py [--seeds 3] [--clients 50] [--rounds 60] [--out bench/byzantine_real.json]

Three parts, each on the same seeds:

* ``honest``: honest-only runs at every Dirichlet alpha: honest nodes ever accused.
* ``attacks``: every attack at 20 % and 30 % attackers; per attack the final test accuracy
  of no defence (FedAvg), coordinate-wise median, trimmed mean, Krum and swarmwatch-gated
  FedAvg, next to the clean run (same seed, attackers honest), and the detector's recall,
  median latency and honest accusations on the plain-FedAvg run.
* ``held_out``: the same on a model the detector was not tuned on (softmax regression;
  tuning used the MLP), reported separately.
* ``held_out_data``: honest-only runs at every alpha and attacks at 20 % on a dataset the
  detector was not tuned on (``--held-out-dataset``, default breast cancer: 2 classes,
  20 clients, 40 rounds), reported separately.
* ``small_binary``: the same fleet (20 clients, 40 rounds, honest-only at every alpha and
  attacks at 20 %) on two-class tasks of breast cancer's nature made from other data
  (``--datasets``, default ``bench.federated.SMALL_BINARY``): the tuning fleets for small,
  fast-converging binary fleets, so that breast cancer stays held out. ``--defences``
  limits the attack runs' defences (``fedavg`` alone gives the detection figures).

``--part`` runs one part; ``--jsonl`` appends every run as it finishes, and ``--resume
LOG...`` reuses the runs those logs already hold (same configuration and seed), so a
long benchmark can be split across processes and summarised at the end. ``--update``
merges what was run into the existing ``--out`` file (per alpha, per attack case), and
every entry names the commit of the code that produced it (``code``).
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np

from bench.federated import ATTACKS, DATASETS, DEFENCES, SMALL_BINARY, FedConfig, run_federated

ALPHAS = (0.1, 0.3, 0.5, 1.0)
FRACTIONS = (0.2, 0.3)


_CACHE: dict[tuple[Any, ...], dict[str, Any]] = {}
CODE = "unknown"  # commit of the code that runs (set in main)


def _commit() -> str:
    """Short commit of the working tree, with ``+dirty`` if tracked files differ from it."""
    import subprocess

    root = Path(__file__).resolve().parents[1]
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root, capture_output=True, text=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + ("+dirty" if dirty else "")


def _merge_into(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """``new`` over ``old``, recursively for dicts (so a re-run attack case replaces only itself);
    an entry (a dict naming its ``code``) replaces the old one whole: its reasons are its own."""
    out = dict(old)
    for k, v in new.items():
        whole = not isinstance(v, dict) or "code" in v or not isinstance(out.get(k), dict)
        out[k] = v if whole else _merge_into(out[k], v)
    return out
_KEY = ("dataset", "model", "clients", "alpha", "rounds", "attack", "attackers", "defence", "seed")


def _key(row: dict[str, Any]) -> tuple[Any, ...]:
    return tuple(row[k] for k in _KEY)


def _run(cfg: FedConfig, log: Any) -> dict[str, Any]:
    cached = _CACHE.get(_key({k: getattr(cfg, k) for k in _KEY}))
    if cached is not None and (cached["detection"] is not None or not (cfg.detect or cfg.defence == "swarmwatch")):
        return cached
    t = time.perf_counter()
    res = run_federated(cfg)
    row = {
        "dataset": cfg.dataset,
        "model": cfg.model,
        "clients": cfg.clients,
        "alpha": cfg.alpha,
        "rounds": cfg.rounds,
        "attack": cfg.attack,
        "attackers": cfg.attackers,
        "defence": cfg.defence,
        "seed": cfg.seed,
        "accuracy": res.accuracy,
        "detection": res.detection,
        "excluded_client_rounds": res.excluded_rounds,
        "seconds": round(time.perf_counter() - t, 2),
    }
    if log is not None:
        log.write(json.dumps(row) + "\n")
        log.flush()
    print(json.dumps({k: row[k] for k in ("model", "alpha", "attack", "attackers", "defence", "seed", "accuracy")}
                     | ({"det": row["detection"]} if row["detection"] else {})), file=sys.stderr, flush=True)
    return row


def honest_part(base: FedConfig, seeds: int, log: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for alpha in ALPHAS:
        rows = [_run(replace(base, alpha=alpha, seed=s, attack="none", attackers=0.0, defence="fedavg"), log) for s in range(seeds)]
        accused = [r["detection"]["honest_accused"] for r in rows]
        out[str(alpha)] = {
            "clients": base.clients,
            "honest_accused_per_seed": accused,
            "honest_accused_fraction_max": max(r["detection"]["honest_accused_fraction"] for r in rows),
            "accused_reasons": _merge([r["detection"]["accused_reasons"] for r in rows]),
            "accuracy_mean": round(statistics.mean(r["accuracy"] for r in rows), 4),
            "code": CODE,
        }
    return out


def _merge(ds: list[dict[str, int]]) -> dict[str, int]:
    out: dict[str, int] = {}
    for d in ds:
        for k, v in d.items():
            out[k] = out.get(k, 0) + v
    return out


def attack_part(
    base: FedConfig, seeds: int, fractions: tuple[float, ...], attacks: tuple[str, ...], log: Any,
    defences: tuple[str, ...] = DEFENCES,
) -> dict[str, Any]:
    clean = {s: _run(replace(base, seed=s, attack="none", attackers=0.0, defence="fedavg", detect=False), log)["accuracy"] for s in range(seeds)}
    clean_mean = statistics.mean(clean.values())
    out: dict[str, Any] = {"clean_accuracy": round(clean_mean, 4), "clean_per_seed": clean, "cases": {}}
    defences = ("fedavg",) + tuple(d for d in defences if d != "fedavg")  # detection is read off plain FedAvg
    for frac in fractions:
        for attack in attacks:
            acc: dict[str, list[float]] = {d: [] for d in defences}
            det_rows = []
            for s in range(seeds):
                for d in defences:
                    cfg = replace(base, seed=s, attack=attack, attackers=frac, defence=d, detect=d in ("fedavg", "swarmwatch"))
                    row = _run(cfg, log)
                    acc[d].append(row["accuracy"])
                    if d == "fedavg":
                        det_rows.append(row["detection"])
            lat = [r["median_latency_rounds"] for r in det_rows if r["median_latency_rounds"] is not None]
            fed_cost = clean_mean - statistics.mean(acc["fedavg"])
            out["cases"][f"{attack}@{frac}"] = {
                "attack": attack,
                "attackers": frac,
                "fedavg_cost_points": round(100 * fed_cost, 2),
                "accuracy": {d: round(statistics.mean(v), 4) for d, v in acc.items()},
                "accuracy_per_seed": acc,
                "recall_min": min(r["recall"] for r in det_rows),
                "recall_mean": round(statistics.mean(r["recall"] for r in det_rows), 4),
                "median_latency_rounds": statistics.median(lat) if lat else None,
                "honest_accused_fraction_max": max(r["honest_accused_fraction"] for r in det_rows),
                "accused_reasons": _merge([r["accused_reasons"] for r in det_rows]),
                "gated_vs_clean_points": round(100 * (statistics.mean(acc["swarmwatch"]) - clean_mean), 2) if "swarmwatch" in acc else None,
                "honest_accused_per_seed": [r["honest_accused"] for r in det_rows],
                "code": CODE,
            }
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--clients", type=int, default=50)
    ap.add_argument("--rounds", type=int, default=60)
    ap.add_argument("--honest-clients", type=int, default=100)
    ap.add_argument("--honest-rounds", type=int, default=80)
    ap.add_argument("--alpha", type=float, default=0.3, help="Dirichlet alpha of the attack runs")
    ap.add_argument("--part", choices=("honest", "attacks", "held_out", "held_out_data", "small_binary", "all"), default="all",
                    help="all: every part but small_binary (the tuning fleets)")
    ap.add_argument("--held-out-dataset", choices=tuple(d for d in DATASETS if d != "digits"), default="cancer")
    ap.add_argument("--datasets", default=",".join(SMALL_BINARY), help="the small_binary part's datasets (comma-separated)")
    ap.add_argument("--defences", default=",".join(DEFENCES), help="defences of the small_binary attack runs (comma-separated)")
    ap.add_argument("--held-out-data-clients", type=int, default=20)
    ap.add_argument("--held-out-data-rounds", type=int, default=40)
    ap.add_argument("--attacks", default=",".join(a for a in ATTACKS if a != "none"))
    ap.add_argument("--out", type=Path, default=None, help="write the JSON here as well")
    ap.add_argument("--update", action="store_true", help="merge into the existing --out file instead of replacing it")
    ap.add_argument("--jsonl", type=Path, default=None, help="append one line per run here")
    ap.add_argument("--resume", type=Path, nargs="*", default=[], help="reuse the runs these --jsonl logs hold")
    a = ap.parse_args()
    global CODE
    CODE = _commit()
    for path in a.resume:
        for line in path.read_text().splitlines():
            if line.strip():
                row = json.loads(line)
                old = _CACHE.get(_key(row))
                if old is None or old["detection"] is None:  # a run with detection serves both
                    _CACHE[_key(row)] = row
    attacks = tuple(x for x in a.attacks.split(",") if x)
    log = open(a.jsonl, "a") if a.jsonl else None
    result: dict[str, Any] = {"bench": "byzantine_real", "python": platform.python_version(), "numpy": np.__version__}
    tuned = FedConfig(dataset="digits", model="mlp", clients=a.clients, rounds=a.rounds, alpha=a.alpha)
    held = replace(tuned, model="softmax")
    result["setup"] = {k: v for k, v in asdict(tuned).items() if k not in ("detector",)} | {"seeds": a.seeds}
    t0 = time.perf_counter()
    if a.part in ("honest", "all"):
        hb = replace(tuned, clients=a.honest_clients, rounds=a.honest_rounds)
        result["honest"] = honest_part(hb, a.seeds, log)
    if a.part in ("attacks", "all"):
        result["attacks"] = attack_part(tuned, a.seeds, FRACTIONS, attacks, log)
    if a.part in ("held_out", "all"):
        hb = replace(held, clients=a.honest_clients, rounds=a.honest_rounds)
        result["held_out"] = {
            "model": "softmax",
            "honest": honest_part(hb, a.seeds, log),
            "attacks": attack_part(held, a.seeds, (0.2,), attacks, log),
        }
    if a.part in ("held_out_data", "all"):
        hd = replace(tuned, dataset=a.held_out_dataset, clients=a.held_out_data_clients, rounds=a.held_out_data_rounds)
        result["held_out_data"] = {
            "dataset": a.held_out_dataset,
            "model": hd.model,
            "clients": hd.clients,
            "rounds": hd.rounds,
            "honest": honest_part(hd, a.seeds, log),
            "attacks": attack_part(hd, a.seeds, (0.2,), attacks, log),
        }
    if a.part == "small_binary":
        datasets = tuple(x for x in a.datasets.split(",") if x)
        defences = tuple(x for x in a.defences.split(",") if x)
        for name in datasets + defences:
            if name not in DATASETS + DEFENCES or name == "cancer":
                ap.error(f"{name!r} is not a tuning dataset or defence (breast cancer is held out: --part held_out_data)")
        sb = replace(tuned, clients=a.held_out_data_clients, rounds=a.held_out_data_rounds)
        result["small_binary"] = {
            "clients": sb.clients,
            "rounds": sb.rounds,
            "model": sb.model,
            "datasets": {
                ds: {
                    "honest": honest_part(replace(sb, dataset=ds), a.seeds, log),
                    "attacks": attack_part(replace(sb, dataset=ds), a.seeds, (0.2,), attacks, log, defences) if attacks else {},
                }
                for ds in datasets
            },
        }
    result["seconds"] = round(time.perf_counter() - t0, 1)
    if a.update and a.out and a.out.is_file():
        result = _merge_into(json.loads(a.out.read_text()), result)
    text = json.dumps(result, indent=1, default=float)
    if a.out:
        a.out.write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
