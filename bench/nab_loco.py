"""Leave-one-category-out (LOCO) choice of every anomaly-detector constant on visible NAB.

    nice -n 10 python bench/nab_loco.py [--nab DIR] [--cache DIR] [--grid small|shipped] [--select pooled|worst|balanced]

Protocol (prints one JSON object):

1. The grid is a product of per-member parameter sets (``GRIDS``: the
   extremes member; the seasonal and sequence members, each possibly left
   out; the ensemble's constant/quantised alphabet), times a handful of alert thresholds and rest
   periods. Each member's scores per file are computed once with the
   product's own detector classes and cached on disk; a configuration's
   ensemble scores are the product's ``MaxEnsemble`` over those cached member
   scores (checked equal to ``default_detector`` for the shipped choice), and
   the rest period is applied per threshold by the product's ``RestPeriod``.
2. For each of the five visible categories C: the (configuration, threshold,
   rest period) with the best NAB standard score on the *other four*
   categories at that fixed threshold is chosen (ties: the higher
   threshold, then the earlier configuration), and C is scored at that fixed
   threshold with the independent scorer ``nabscore.py``. No sweep on C,
   nothing seen of C.
3. The shipped constants are the choice the folds agree on (the most frequent;
   ties go to the better worst training score). The whole visible set is then
   scored once at the shipped threshold, for the record only: it chooses
   nothing.

Training scores are NAB's standard score computed here from per-category
sums (raw, null and perfect scores add over categories), the same rules as
``nabscore.evaluate`` at a fixed threshold; every reported held-out figure
comes from ``nabscore.evaluate`` itself.

``artificialNoAnomaly`` has no windows, so NAB's normalised score is undefined
for it alone: its fold reports the raw score (0 = no false positive; each
false positive costs up to 0.11) and ``normalized`` as 100 + 100 * raw / files,
i.e. one would-be window per file. In training it adds its raw score (false
positives) to the sums of the other categories.
"""
from __future__ import annotations

import argparse
import hashlib
import importlib.util
import itertools
import json
import os
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from processors.anomaly.backtest import read_series
from processors.anomaly.base import DEFAULT_THRESHOLD, AnomalyDetector
from processors.anomaly.ensemble import MaxEnsemble
from processors.anomaly.registry import MEMBERS, default_detector, member_detector
from processors.anomaly.suppression import DEFAULT_REST, RestPeriod

STANDARD = {"tp": 1.0, "fp": 0.11, "fn": 1.0}
RESTS = (20, 40, 80)  # points muted after a detection (RestPeriod)
THRESHOLDS = (0.9995, 0.9998, 0.9999, 0.99995)  # all above 1 - 1.5 / (cap + 1): only points beyond the history page

# Each grid: per member a list of parameter sets (None: the member is left out), and the ensemble alphabets.
# Constants not in a grid keep the values the issue-10 LOCO run chose (prior 16 records, seasonal bins 10).
GRIDS: dict[str, dict[str, list[Any]]] = {
    "shipped": {"extremes": [{}], "seasonal": [{}], "sequence": [{}], "alphabet": [None]},
    "small": {
        "extremes": [{"scale": es, "lag_blocks": lag} for es, lag in itertools.product((0.02, 0.05, 0.1), (4, 8))],
        "seasonal": [
            {"scale": rs, "smooth": sm, "min_cycles": mc, "calib_cycles": cc, "buckets": bk}
            for rs, sm, mc, cc, bk in itertools.product((0.05, 0.1, 0.25), (12, 24), (3,), (1,), (12, 24))
        ] + [None],
        "sequence": [None] + [{"scale": rs, "smooth": sm, "bins": bn} for rs, sm, bn in itertools.product((0.05, 0.1, 0.25), (12, 24), (6, 10))],
        "alphabet": [1, 2],
    },
}


def configs_of(grid: dict[str, list[Any]]) -> list[dict[str, Any]]:
    """Every ``default_detector`` keyword set of a grid (a member whose parameters are None is left out)."""
    names = [m for m in grid if m != "alphabet"]
    out = []
    for combo in itertools.product(*(grid[m] for m in names), grid["alphabet"]):
        cfg: dict[str, Any] = {}
        members = []
        for name, params in zip(names, combo[:-1]):
            if params is None:
                continue
            members.append(name)
            if params:
                cfg[name] = params
        if tuple(members) != MEMBERS:
            cfg["members"] = members
        if combo[-1] is not None:
            cfg["alphabet"] = combo[-1]
        out.append(cfg)
    return out


def _nab_dir(arg: Path | None) -> Path:
    if arg is not None:
        return arg
    env = os.environ.get("NAB_DIR")
    if env:
        return Path(env)
    here = Path(__file__).resolve()
    for up in here.parents:
        cand = up / "shared" / "evals" / "nab"
        if cand.is_dir():
            return cand
    raise SystemExit("NAB directory not found; pass --nab DIR or set NAB_DIR")


def _load_scorer(nab: Path) -> Any:
    spec = importlib.util.spec_from_file_location("nabscore", nab / "nabscore.py")
    mod = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(mod)  # type: ignore[union-attr]
    return mod


class _Cached(AnomalyDetector):
    """Replays precomputed scores (a member's, or an ensemble's) through the product's combinators."""

    def __init__(self, scores: np.ndarray) -> None:
        self.scores = scores

    def score_one(self, x: float, ts: float | None = None) -> float:  # pragma: no cover - not used
        raise NotImplementedError

    def learn_one(self, x: float, ts: float | None = None) -> None:  # pragma: no cover - not used
        raise NotImplementedError

    def score_many(self, values: Any, ts: Any = None) -> np.ndarray:
        return self.scores


class Corpus:
    """The visible files: values, timestamps, label windows (rows), probation and NAB row values per file."""

    def __init__(self, nab: Path) -> None:
        self.sc = _load_scorer(nab)
        windows = self.sc.load_windows(str(nab / "labels" / "combined_windows.json"))
        self.files: list[dict[str, Any]] = []
        for rel in sorted(windows):
            stamps, ts, values = read_series(nab / "data" / rel)
            dts = [self.sc.parse_ts(t) for t in stamps]
            rows = self.sc.window_rows(rel, dts, windows[rel])
            n = len(stamps)
            prob = self.sc.probation_rows(n)
            val, wid = self.sc.row_values(n, rows, STANDARD)
            val, wid = val[prob:], wid[prob:]
            scorable = [k for k, (a, b) in enumerate(rows) if b >= prob]
            spans = [(max(a, prob) - prob, b - prob + 1) for k, (a, b) in enumerate(rows) if k in scorable]
            self.files.append({
                "rel": rel, "cat": rel.split("/")[0], "ts": ts, "v": values, "rows": rows, "prob": prob,
                "val": val, "out": wid < 0, "spans": spans, "n_windows": len(rows), "n_scorable": len(scorable),
            })
        self.categories = sorted({f["cat"] for f in self.files})

    @staticmethod
    def file_raw(f: dict[str, Any], flagged: np.ndarray) -> tuple[float, int]:
        """(NAB standard raw score, windows detected) of one file's flagged rows (nabscore.score_file_at's rules)."""
        fl = flagged[f["prob"]:]
        score = float(f["val"][fl & f["out"]].sum())
        det = 0
        for a, b in f["spans"]:
            hit = fl[a:b]
            if hit.any():
                score += float(f["val"][a:b][hit].max())
                det += 1
            else:
                score -= STANDARD["fn"]
        return score, det

    def sums(self, flagged: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Per category: [raw, null, perfect, files, detected, fp_rows] (additive over categories)."""
        out = {c: np.zeros(6) for c in self.categories}
        for f in self.files:
            fl = flagged[f["rel"]]
            raw, det = self.file_raw(f, fl)
            out[f["cat"]] += (raw, -STANDARD["fn"] * f["n_scorable"], STANDARD["tp"] * f["n_windows"], 1, det, int((fl[f["prob"]:] & f["out"]).sum()))
        return out

    @staticmethod
    def normalized(sums: dict[str, np.ndarray], cats: list[str]) -> float:
        """NAB's normalised standard score of ``cats`` from their sums (100 + 100 raw / files without windows)."""
        raw, null, perfect, files = (sum(sums[c][i] for c in cats) for i in range(4))
        if perfect == 0:
            return 100.0 + 100.0 * raw / files
        return 100.0 * (raw - null) / (perfect - null)

    def score(self, flagged_scores: dict[str, np.ndarray], cats: list[str], threshold: float) -> dict[str, Any]:
        """NAB standard score of the files of ``cats`` at a fixed threshold (nabscore's own evaluate)."""
        fes = [self.sc.FileEval(f["rel"], flagged_scores[f["rel"]], f["rows"], f["prob"]) for f in self.files if f["cat"] in cats]
        if not any(f.windows for f in fes):  # no windows: NAB's normalisation is undefined
            for f in fes:
                f.prepare(STANDARD)
            per = [self.sc.score_file_at(f, STANDARD, threshold) for f in fes]
            raw = sum(r["score"] for r in per)
            return {"normalized": 100.0 + 100.0 * raw / len(fes), "raw": raw, "detected": 0, "windows": 0, "fp_rows": sum(r["fp_rows"] for r in per)}
        res = self.sc.evaluate(fes, STANDARD, fixed_threshold=threshold)
        norm = res["normalized_score"]
        return {"normalized": norm, "raw": res["raw_score"], "detected": res["windows_detected"], "windows": res["windows"], "fp_rows": res["fp_rows"]}


def _per_cat(corpus: Corpus, sums: dict[str, np.ndarray], cats: list[str]) -> list[float]:
    return [corpus.normalized(sums, [c]) for c in cats if sums[c][2] > 0]


# How a fold ranks candidates on its four training categories: NAB's score of the four pooled,
# the worst of the four (those with windows), or the mean of the worst and the pooled.
SELECT: dict[str, Any] = {
    "pooled": lambda corpus, sums, cats: corpus.normalized(sums, cats),
    "worst": lambda corpus, sums, cats: min(_per_cat(corpus, sums, cats)),
    "balanced": lambda corpus, sums, cats: 0.5 * (corpus.normalized(sums, cats) + min(_per_cat(corpus, sums, cats))),
}


def _stamp() -> str:
    src = Path(__file__).resolve().parents[1] / "processors" / "anomaly"
    h = hashlib.sha1()
    for p in sorted(src.glob("*.py")):
        if p.name not in ("operator.py", "robust_z.py", "backtest.py", "__init__.py"):
            h.update(p.read_bytes())
    return h.hexdigest()[:12]


def member_scores(corpus: Corpus, name: str, params: dict[str, Any], cache: Path, stamp: str) -> dict[str, np.ndarray]:
    """Per-file scores of one member (the product's class, fresh per file), cached on disk per code version."""
    key = hashlib.sha1(json.dumps({"m": name, "p": params, "code": stamp}, sort_keys=True).encode()).hexdigest()[:16]
    path = cache / f"m-{key}.npz"
    if path.exists():
        with np.load(path) as z:
            return {f["rel"]: z[f"f{i}"] for i, f in enumerate(corpus.files)}
    out = {f["rel"]: member_detector(name, params).score_many(f["v"], f["ts"]) for f in corpus.files}
    cache.mkdir(parents=True, exist_ok=True)
    np.savez(path, **{f"f{i}": out[f["rel"]] for i, f in enumerate(corpus.files)})
    return out


def ensemble_scores(corpus: Corpus, config: dict[str, Any], cache: Path, stamp: str) -> dict[str, np.ndarray]:
    """Per-file ensemble scores (before the rest period): the product's MaxEnsemble over cached member scores."""
    members = config.get("members", MEMBERS)
    per = {m: member_scores(corpus, m, dict(config.get(m) or {}), cache, stamp) for m in members}
    guards = {k: config[k] for k in ("alphabet",) if k in config}
    return {f["rel"]: MaxEnsemble([_Cached(per[m][f["rel"]]) for m in members], **guards).score_many(f["v"], f["ts"]) for f in corpus.files}


def with_rest(raw: dict[str, np.ndarray], corpus: Corpus, threshold: float, rest: int = DEFAULT_REST) -> dict[str, np.ndarray]:
    """The product's RestPeriod at ``threshold`` over cached ensemble scores."""
    return {f["rel"]: RestPeriod(_Cached(raw[f["rel"]]), threshold=threshold, rest=rest).score_many(f["v"]) for f in corpus.files}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nab", type=Path, default=None)
    ap.add_argument("--cache", type=Path, default=Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "swarmwatch-nab-loco")
    ap.add_argument("--grid", choices=sorted(GRIDS), default="small")
    ap.add_argument("--select", choices=sorted(SELECT), default="pooled", help="training criterion (see SELECT)")
    args = ap.parse_args()
    t0 = time.perf_counter()
    corpus = Corpus(_nab_dir(args.nab))
    stamp = _stamp()
    configs = configs_of(GRIDS[args.grid])
    cands = []  # one per (configuration, threshold, rest): per-category sums
    for ci, cfg in enumerate(configs):
        raw = ensemble_scores(corpus, cfg, args.cache, stamp)
        for thr in THRESHOLDS:
            for rest in RESTS:
                flagged = {k: v >= thr for k, v in with_rest(raw, corpus, thr, rest).items()}
                cands.append({"config": ci, "threshold": thr, "rest": rest, "sums": corpus.sums(flagged)})
        if (ci + 1) % 25 == 0 or ci + 1 == len(configs):
            print(f"config {ci + 1}/{len(configs)} done ({time.perf_counter() - t0:.0f} s)", file=sys.stderr)

    def rescore(ci: int, thr: float, rest: int, cats: list[str]) -> dict[str, Any]:
        flagged = with_rest(ensemble_scores(corpus, configs[ci], args.cache, stamp), corpus, thr, rest)
        return corpus.score(flagged, cats, thr)

    folds = []
    for held in corpus.categories:
        train = [c for c in corpus.categories if c != held]
        best = max(cands, key=lambda k: (round(SELECT[args.select](corpus, k["sums"], train), 9), k["threshold"], -k["config"]))
        held_score = rescore(best["config"], best["threshold"], best["rest"], [held])
        fast = corpus.normalized(best["sums"], [held])
        if abs(fast - held_score["normalized"]) > 1e-6:
            raise RuntimeError(f"fast scorer disagrees with nabscore on {held}: {fast} vs {held_score['normalized']}")
        folds.append({
            "held_out": held,
            "config": best["config"],
            "threshold": best["threshold"],
            "rest": best["rest"],
            "train_score": round(corpus.normalized(best["sums"], train), 2),
            "train_criterion": round(SELECT[args.select](corpus, best["sums"], train), 2),
            "held_out_score": held_score,
        })
    votes = Counter((f["config"], f["threshold"], f["rest"]) for f in folds)
    top = max(votes.values())
    tied = [k for k, n in votes.items() if n == top]
    shipped_key = max(tied, key=lambda k: min(f["train_score"] for f in folds if (f["config"], f["threshold"], f["rest"]) == k))
    ci, thr, rest = shipped_key
    # the cached combination is the product's detector: check it on the shipped choice
    comb = ensemble_scores(corpus, configs[ci], args.cache, stamp)
    for f in corpus.files:
        direct = default_detector(**configs[ci]).inner.score_many(f["v"], f["ts"])
        if not np.allclose(direct, comb[f["rel"]], atol=1e-9):
            raise RuntimeError(f"cached member scores do not reproduce default_detector on {f['rel']}")
    full = rescore(ci, thr, rest, corpus.categories)
    shipped_sums = next(k["sums"] for k in cands if (k["config"], k["threshold"], k["rest"]) == shipped_key)
    windowed = [f["held_out_score"]["normalized"] for f in folds if f["held_out_score"]["windows"]]
    print(json.dumps({
        "grid": args.grid,
        "select": args.select,
        "configs": len(configs),
        "thresholds": list(THRESHOLDS),
        "rests": list(RESTS),
        "folds": [{**f, "config": configs[f["config"]], "config_index": f["config"],
                   "held_out_score": {k: (round(v, 3) if isinstance(v, float) else v) for k, v in f["held_out_score"].items()}} for f in folds],
        "loco_mean_windowed": round(float(np.mean(windowed)), 2),
        "loco_worst_windowed": round(float(np.min(windowed)), 2),
        "loco_mean_all5": round(float(np.mean([f["held_out_score"]["normalized"] for f in folds])), 2),
        "shipped": {
            "config": configs[ci],
            "threshold": thr,
            "rest": rest,
            "votes": top,
            "product_default_threshold": DEFAULT_THRESHOLD,
            "product_default_rest": DEFAULT_REST,
        },
        "full_visible_at_shipped": {k: (round(v, 3) if isinstance(v, float) else v) for k, v in full.items()},
        "per_category_at_shipped": {c: round(corpus.normalized(shipped_sums, [c]), 2) for c in corpus.categories},
        "seconds": round(time.perf_counter() - t0, 1),
    }, indent=1))


if __name__ == "__main__":
    main()
