"""The Byzantine detector over every scenario of the synthetic simulator (shared/evals/byzantine). Prints JSON.

    python bench/bench_byzantine_scenarios.py [--evals ../shared/evals/byzantine]

Each scenario of ``scenarios.json`` is simulated with ``sim.py``, fed to the
backtest (``processors.byzantine.backtest.run``, as ``swarmwatch backtest
byzantine`` does) and scored with ``score.py``. ``ok``: every Byzantine node
caught, no honest node accused, no attacker flagged before its attack.
"""
from __future__ import annotations

import argparse
import importlib.util
import io
import json
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Any

from processors.byzantine.backtest import run, to_event

DEFAULT_EVALS = Path(__file__).resolve().parents[2] / "shared" / "evals" / "byzantine"


def _load(path: Path, name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise SystemExit(f"cannot load {path}")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--evals", type=Path, default=DEFAULT_EVALS, help="folder with sim.py, score.py, scenarios.json")
    a = ap.parse_args()
    if not (a.evals / "scenarios.json").is_file():
        print(f"error: no scenarios.json in {a.evals}", file=sys.stderr)
        raise SystemExit(2)
    sim = _load(a.evals / "sim.py", "byz_sim")
    score = _load(a.evals / "score.py", "byz_score")
    rows: list[dict[str, Any]] = []
    for sc in json.loads((a.evals / "scenarios.json").read_text()):
        kw = {k: v for k, v in sc.items() if k != "name"}
        events, labels = sim.simulate(**kw)
        buf = io.StringIO()
        t = time.perf_counter()
        run((to_event(e) for e in events), buf)
        verdicts = [json.loads(line) for line in buf.getvalue().splitlines()]
        s = score.score(labels, verdicts)
        s["scenario"] = sc["name"]
        s["ok"] = s["recall"] >= 1.0 and s["false_accusations"] == 0 and s["early_flags"] == 0
        s["seconds"] = round(time.perf_counter() - t, 2)
        rows.append(s)
    print(json.dumps({"bench": "byzantine_scenarios", "all_ok": all(r["ok"] for r in rows), "scenarios": rows}, indent=1))


if __name__ == "__main__":
    main()
