"""Leave-one-category-out (LOCO) choice of every anomaly-detector constant on visible NAB.

    nice -n 10 python bench/nab_loco.py [--nab DIR] [--cache DIR] [--grid small|shipped]

Protocol (prints one JSON object):

1. The grid is a handful of detector configurations (``GRIDS``) times a
   handful of alert thresholds and rest periods. Each configuration's scores per file are
   computed once with the product's own ``default_detector`` (the ensemble
   score before the rest period), cached on disk, and the rest period is
   applied per threshold by the product's ``RestPeriod``.
2. For each of the five visible categories C: the (configuration, threshold,
   rest period) with the best NAB standard score on the *other four* categories at that
   fixed threshold is chosen, and C is scored at that fixed threshold with the
   independent scorer ``nabscore.py``. No sweep on C, nothing seen of C.
3. The shipped constants are the choice the folds agree on (the most frequent;
   ties go to the better worst training score). The whole visible set is then
   scored once at the shipped threshold, for the record only: it chooses
   nothing.

``artificialNoAnomaly`` has no windows, so NAB's normalised score is undefined
for it alone: its fold reports the raw score (0 = no false positive; each
false positive costs up to 0.11) and ``normalized`` as 100 + 100 * raw / files,
i.e. one would-be window per file.
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
from processors.anomaly.registry import default_detector
from processors.anomaly.suppression import DEFAULT_REST, RestPeriod

STANDARD = {"tp": 1.0, "fp": 0.11, "fn": 1.0}
RESTS = (20, 40, 80)  # points muted after a detection (RestPeriod)
THRESHOLDS = (0.9995, 0.9998, 0.9999, 0.99995)  # all above 1 - 1.5 / (cap + 1): only points beyond the history page

# Each entry: default_detector keyword arguments other than threshold and rest.
GRIDS: dict[str, list[dict[str, Any]]] = {
    "shipped": [{}],
    "small": [
        {
            "extremes": {"scale": es, "prior_n": k, "lag_blocks": lag},
            "seasonal": {"scale": rs, "prior_n": k, "smooth": sm, "bins": bn},
            "sequence": {"scale": rs, "prior_n": k, "smooth": sm, "bins": bn},
            "alphabet": al,
        }
        for es, rs, k, sm, bn, lag, al in itertools.product(
            (0.02, 0.05, 0.1), (0.05, 0.1, 0.25), (1.0, 4.0, 16.0), (12, 24), (6, 10), (8,), (1, 2)
        )
    ],
}


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
    """Replays precomputed ensemble scores so the product's RestPeriod can be applied per threshold."""

    def __init__(self, scores: np.ndarray) -> None:
        self.scores = scores

    def score_one(self, x: float, ts: float | None = None) -> float:  # pragma: no cover - not used
        raise NotImplementedError

    def learn_one(self, x: float, ts: float | None = None) -> None:  # pragma: no cover - not used
        raise NotImplementedError

    def score_many(self, values: Any, ts: Any = None) -> np.ndarray:
        return self.scores


class Corpus:
    """The visible files: values, timestamps, label windows (rows) and probation per file."""

    def __init__(self, nab: Path) -> None:
        self.sc = _load_scorer(nab)
        windows = self.sc.load_windows(str(nab / "labels" / "combined_windows.json"))
        self.files: list[dict[str, Any]] = []
        for rel in sorted(windows):
            stamps, ts, values = read_series(nab / "data" / rel)
            dts = [self.sc.parse_ts(t) for t in stamps]
            rows = self.sc.window_rows(rel, dts, windows[rel])
            n = len(stamps)
            self.files.append({"rel": rel, "cat": rel.split("/")[0], "ts": ts, "v": values, "rows": rows, "prob": self.sc.probation_rows(n)})
        self.categories = sorted({f["cat"] for f in self.files})

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


def ensemble_scores(corpus: Corpus, config: dict[str, Any], cache: Path) -> dict[str, np.ndarray]:
    """Per-file ensemble scores (before the rest period) of one configuration, cached on disk."""
    key = hashlib.sha1(json.dumps(config, sort_keys=True).encode()).hexdigest()[:16]
    path = cache / f"{key}.npz"
    src = [Path(__file__).resolve().parents[1] / "processors" / "anomaly" / p for p in ("base.py", "calibration.py", "ensemble.py", "extremes.py", "rarity.py", "registry.py")]
    stamp = max(p.stat().st_mtime for p in src)
    if path.exists() and path.stat().st_mtime > stamp:
        with np.load(path) as z:
            return {f["rel"]: z[f"f{i}"] for i, f in enumerate(corpus.files)}
    out = {}
    for f in corpus.files:
        det = default_detector(**config)
        out[f["rel"]] = det.inner.score_many(f["v"], f["ts"])  # the ensemble, before RestPeriod
    cache.mkdir(parents=True, exist_ok=True)
    np.savez(path, **{f"f{i}": out[f["rel"]] for i, f in enumerate(corpus.files)})
    return out


def with_rest(raw: dict[str, np.ndarray], corpus: Corpus, threshold: float, rest: int = DEFAULT_REST) -> dict[str, np.ndarray]:
    """The product's RestPeriod at ``threshold`` over cached ensemble scores."""
    return {f["rel"]: RestPeriod(_Cached(raw[f["rel"]]), threshold=threshold, rest=rest).score_many(f["v"]) for f in corpus.files}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nab", type=Path, default=None)
    ap.add_argument("--cache", type=Path, default=Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "swarmwatch-nab-loco")
    ap.add_argument("--grid", choices=sorted(GRIDS), default="small")
    args = ap.parse_args()
    t0 = time.perf_counter()
    corpus = Corpus(_nab_dir(args.nab))
    configs = GRIDS[args.grid]
    cands = []  # (config index, threshold) -> per-category score
    for ci, cfg in enumerate(configs):
        raw = ensemble_scores(corpus, cfg, args.cache)
        for thr in THRESHOLDS:
            for rest in RESTS:
                flagged = with_rest(raw, corpus, thr, rest)
                per_cat = {c: corpus.score(flagged, [c], thr) for c in corpus.categories}
                cands.append({"config": ci, "threshold": thr, "rest": rest, "flagged": flagged, "per_cat": per_cat})
        print(f"config {ci + 1}/{len(configs)} done ({time.perf_counter() - t0:.0f} s)", file=sys.stderr)
    folds = []
    for held in corpus.categories:
        train = [c for c in corpus.categories if c != held]
        best = max(cands, key=lambda k: (corpus.score(k["flagged"], train, k["threshold"])["normalized"], k["threshold"]))
        tr = corpus.score(best["flagged"], train, best["threshold"])
        folds.append(
            {
                "held_out": held,
                "config": best["config"],
                "threshold": best["threshold"],
                "rest": best["rest"],
                "train_score": round(tr["normalized"], 2),
                "held_out_score": best["per_cat"][held],
            }
        )
    votes = Counter((f["config"], f["threshold"], f["rest"]) for f in folds)
    top = max(votes.values())
    tied = [k for k, n in votes.items() if n == top]
    shipped_key = max(tied, key=lambda k: min(f["train_score"] for f in folds if (f["config"], f["threshold"], f["rest"]) == k))
    shipped = next(k for k in cands if (k["config"], k["threshold"], k["rest"]) == shipped_key)
    full = corpus.score(shipped["flagged"], corpus.categories, shipped["threshold"])
    windowed = [f["held_out_score"]["normalized"] for f in folds if f["held_out_score"]["windows"]]
    print(json.dumps({
        "grid": args.grid,
        "configs": len(configs),
        "thresholds": list(THRESHOLDS),
        "rests": list(RESTS),
        "folds": [{**f, "held_out_score": {k: (round(v, 3) if isinstance(v, float) else v) for k, v in f["held_out_score"].items()}} for f in folds],
        "loco_mean_windowed": round(float(np.mean(windowed)), 2),
        "loco_worst_windowed": round(float(np.min(windowed)), 2),
        "loco_mean_all5": round(float(np.mean([f["held_out_score"]["normalized"] for f in folds])), 2),
        "shipped": {
            "config": configs[shipped_key[0]],
            "threshold": shipped_key[1],
            "rest": shipped_key[2],
            "votes": top,
            "product_default_threshold": DEFAULT_THRESHOLD,
            "product_default_rest": DEFAULT_REST,
        },
        "full_visible_at_shipped": {k: (round(v, 3) if isinstance(v, float) else v) for k, v in full.items()},
        "per_category_at_shipped": {c: round(shipped["per_cat"][c]["normalized"], 2) for c in corpus.categories},
        "seconds": round(time.perf_counter() - t0, 1),
    }, indent=1))


if __name__ == "__main__":
    main()
