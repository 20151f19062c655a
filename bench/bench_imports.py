"""Import cost of the entry points a sidecar, a sink or a user's operator starts with (issue 15).

Each statement runs in a fresh interpreter ``--runs`` times; the figure is the
median of the time the import itself took (perf_counter inside the child) and
the median wall time of the whole child, next to a bare ``python -c pass``.
Prints JSON.

    python bench/bench_imports.py --runs 7
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

STATEMENTS = {
    "produce_sidecar": "import producers.sidecar",  # what `python -m producers` (swarmwatch produce) imports
    "operator_contract": "import processors.operator",
    "operator_from_package": "from processors import Emit, Operator, operator",
    "sink_files": "import sinks.files",
    "sdk": "from producers import counter, gauge, timed",
    "scrape_bridge": "import producers.scrape",
    "http_checks": "import producers.checks",
    "otlp_receiver": "import producers.otlp",
}

HEAVY = ("nats", "numpy", "fastapi", "pydantic", "processors.byzantine", "prometheus_client", "google.protobuf")


def _one(statement: str) -> tuple[float, float, list[str]]:
    code = (f"import time, sys\nt = time.perf_counter()\n{statement}\n"
            "dt = time.perf_counter() - t\n"
            f"print(dt, [m for m in {HEAVY!r} if m in sys.modules])")
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    wall = time.perf_counter() - t0
    line = out.stdout.strip().splitlines()[-1]
    dt, _, heavy = line.partition(" ")
    return float(dt), wall, eval(heavy)  # noqa: S307 - our own child's list literal


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=7)
    args = ap.parse_args()
    base = [(lambda t0: (subprocess.run([sys.executable, "-c", "pass"], check=True), time.perf_counter() - t0)[1])(
        time.perf_counter()) for _ in range(args.runs)]
    result: dict[str, object] = {"runs": args.runs, "python_startup_ms": round(statistics.median(base) * 1000, 1)}
    for key, stmt in STATEMENTS.items():
        try:
            rows = [_one(stmt) for _ in range(args.runs)]
        except subprocess.CalledProcessError as exc:
            result[key] = {"statement": stmt, "error": exc.stderr.strip().splitlines()[-1]}
            continue
        result[key] = {
            "statement": stmt,
            "import_ms": round(statistics.median(r[0] for r in rows) * 1000, 1),
            "process_wall_ms": round(statistics.median(r[1] for r in rows) * 1000, 1),
            "heavy_loaded": rows[-1][2],
        }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
