"""Value change on a node -> notification at a webhook: swarmwatch defaults against tuned Prometheus + Alertmanager.

    python bench/bench_e2e.py --trials 50 --cpu-trials 50

One run, both pipelines side by side, fed by the same flips:

- an app process holds one swarmwatch SDK gauge (``bench.value``, published by
  an in-process producer at the default 1 s tick with edge sampling) and the
  same value as a ``prometheus_client`` gauge (``bench_value``) that
  Prometheus scrapes. One command sets both at the same instant, T0, at a
  random phase of both ticks. T1 is the POST at a local webhook.
- real CPU load: T0 is when busy-loop processes (one per core) start; swarmwatch
  reads ``cpu.percent`` (its sidecar, /proc/stat deltas), Prometheus
  ``irate(node_cpu_seconds_total)`` over 1 s scrapes of node_exporter.

swarmwatch: ``process --operators rules``, ``sink notify`` with one json://
webhook channel and the default grouping (critical: leading edge, group_wait
0.5 s, group_interval 10 s); flap damping is set out of reach (50 incidents on
one series in minutes would otherwise be held as flapping, as they should be).
Prometheus 1 s scrape and evaluation, Alertmanager group_wait 0, group_interval 1 s.
Every trial is a new incident (new group) on both sides: gauge trials rotate
over ``--slots`` labelled series/rules; CPU trials are spaced so the previous
group is gone (``--cpu-spacing-s``).

Prometheus, Alertmanager and node_exporter are the Debian packages
``prometheus``, ``prometheus-alertmanager`` and ``prometheus-node-exporter``:
found on PATH, else installed with apt-get when running as root; if they cannot
be had the JSON says so and only swarmwatch is measured.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from swarmwatch.server import free_port  # noqa: E402

GAUGE = "bench.value"
PROM_GAUGE = "bench_value"
HIGH, LOW = 97.0, 50.0
BINARIES = {"prometheus": "prometheus", "alertmanager": "prometheus-alertmanager",
            "node_exporter": "prometheus-node-exporter"}
PACKAGES = ("prometheus", "prometheus-alertmanager", "prometheus-node-exporter")


# --------------------------------------------------------------------------- the app (a node)
def app_main(nats_url: str, prom_port: int) -> None:
    """A node's app: an SDK gauge published by an in-process producer, the same value for Prometheus."""
    import prometheus_client

    from producers.sdk import REGISTRY
    from producers.sidecar import BackgroundProducer

    sw_gauge = REGISTRY.gauge(GAUGE)
    prom_gauge = prometheus_client.Gauge(PROM_GAUGE, "bench value", ["slot"])
    prometheus_client.start_http_server(prom_port, addr="127.0.0.1")
    bg = BackgroundProducer(nats_url, "bench", "e2e", 1.0, gpu=False, per_core=False).start()
    print("ready", flush=True)
    for line in sys.stdin:
        parts = line.split()
        if parts[:1] == ["set"]:
            slot, value = parts[1], float(parts[2])
            t0 = time.time()
            sw_gauge.set(value, {"slot": slot})
            prom_gauge.labels(slot=slot).set(value)
            print(f"t0 {t0:.6f}", flush=True)
        elif parts[:1] == ["quit"]:
            break
    bg.stop()


# --------------------------------------------------------------------------- helpers
class Webhook:
    """Records (arrival time, path, body) of every POST."""

    def __init__(self) -> None:
        self.arrivals: list[tuple[float, str, str]] = []
        self.lock = threading.Lock()
        rec = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                t = time.time()
                body = self.rfile.read(int(self.headers.get("content-length", 0))).decode(errors="replace")
                with rec.lock:
                    rec.arrivals.append((t, self.path, body))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_port
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def last(self, path: str, match: str) -> tuple[float, str] | None:
        """(time, body) of the newest POST to ``path`` matching ``match``."""
        with self.lock:
            for t, p, body in reversed(self.arrivals):
                if p == path and re.search(match, body):
                    return t, body
        return None

    def first(self, path: str, after: float, match: str) -> float | None:
        with self.lock:
            for t, p, body in self.arrivals:
                if p == path and t >= after and re.search(match, body):
                    return t
        return None


def find_binaries() -> tuple[dict[str, str], str]:
    """Paths of the Prometheus side's binaries, installing the Debian packages if missing and allowed."""
    found = {k: shutil.which(v) for k, v in BINARIES.items()}
    note = "found on PATH"
    if not all(found.values()):
        if os.geteuid() == 0 and shutil.which("apt-get"):
            r = subprocess.run(["apt-get", "install", "-y", "--no-install-recommends", *PACKAGES],
                               capture_output=True, text=True, env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
            note = "installed with apt-get" if r.returncode == 0 else f"apt-get install failed: {r.stderr.strip()[-300:]}"
            found = {k: shutil.which(v) for k, v in BINARIES.items()}
        else:
            note = "not found, and not root to apt-get install " + " ".join(PACKAGES)
    missing = [BINARIES[k] for k, v in found.items() if not v]
    if missing:
        return {}, f"{note}; missing: {', '.join(missing)}"
    return {k: str(v) for k, v in found.items()}, note


def version(path: str) -> str:
    try:
        r = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=10)
        return (r.stdout + r.stderr).splitlines()[0].strip()
    except Exception:  # noqa: BLE001
        return "unknown"


def stats(xs: list[float]) -> dict[str, Any]:
    if not xs:
        return {"n": 0}
    s = sorted(xs)

    def q(p: float) -> float:
        return s[min(len(s) - 1, int(round(p * (len(s) - 1))))]

    return {"n": len(s), "median_ms": round(q(0.5) * 1000, 1), "p95_ms": round(q(0.95) * 1000, 1),
            "max_ms": round(s[-1] * 1000, 1), "min_ms": round(s[0] * 1000, 1)}


def cpu_busy_percent(window_s: float = 1.0) -> float:
    import psutil

    return float(psutil.cpu_percent(interval=window_s))


# --------------------------------------------------------------------------- the run
async def run(args: argparse.Namespace) -> dict[str, Any]:
    import nats

    from swarmwatch.server import EmbeddedServer
    from swarmwatch.streams import ensure_streams

    bins, bin_note = find_binaries()
    result: dict[str, Any] = {"bench": "e2e_value_change_to_webhook", "prometheus_side": bin_note}
    tmp = Path(tempfile.mkdtemp(prefix="sw-e2e-"))
    hook = Webhook()
    procs: list[subprocess.Popen[Any]] = []
    logs = []

    def start(name: str, cmd: list[str], **kw: Any) -> subprocess.Popen[Any]:
        fh = (tmp / f"{name}.log").open("wb")
        logs.append(fh)
        p = subprocess.Popen(cmd, stdout=kw.pop("stdout", fh), stderr=fh, **kw)
        procs.append(p)
        return p

    srv = EmbeddedServer(tmp / "nats", port=0)
    srv.start()
    try:
        nc = await nats.connect(srv.url)
        await ensure_streams(nc.jetstream())
        await nc.close()
        slots = [str(i) for i in range(args.slots)]
        rules = ["defaults: false", "rules:"]
        for s in slots:
            rules.append(f'  - {{name: bench_slot_{s}, metric: {GAUGE}, op: ">", threshold: 90, severity: critical, labels: {{slot: "{s}"}}}}')
        rules.append(f'  - {{name: bench_cpu, metric: cpu.percent, op: ">", threshold: {args.cpu_threshold}, severity: critical, labels: {{}}}}')
        (tmp / "rules.yaml").write_text("\n".join(rules) + "\n")
        (tmp / "notify.yaml").write_text(
            "notify:\n"
            f"  channels: [{{name: hook, url: 'json://127.0.0.1:{hook.port}/sw'}}]\n"
            "  flap: {firings: 1000000}\n"
        )
        py = [sys.executable, "-m", "swarmwatch"]
        start("process", [*py, "process", "--nats", srv.url, "--rules", str(tmp / "rules.yaml"), "--operators", "rules"])
        start("notify", [*py, "sink", "notify", "--nats", srv.url, "--config", str(tmp / "notify.yaml")])
        prom_port = free_port()
        app = start("app", [sys.executable, __file__, "--role", "app", "--nats", srv.url, "--prom-port", str(prom_port)],
                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert app.stdout is not None and app.stdin is not None
        if app.stdout.readline().strip() != "ready":
            raise SystemExit(f"app did not start: {(tmp / 'app.log').read_text()[-2000:]}")
        if bins:
            ne_port, pm_port, am_port = free_port(), free_port(), free_port()
            (tmp / "prom_rules.yml").write_text(
                "groups:\n- name: bench\n  interval: 1s\n  rules:\n"
                f"  - alert: BenchValue\n    expr: {PROM_GAUGE} > 90\n    labels: {{severity: critical}}\n"
                "  - alert: BenchCpu\n"
                "    expr: 100 * (1 - sum(irate(node_cpu_seconds_total{mode=~\"idle|iowait\"}[5s]))"
                f" / count(node_cpu_seconds_total{{mode=\"idle\"}})) > {args.cpu_threshold}\n"
                "    labels: {severity: critical}\n"
            )
            (tmp / "prom.yml").write_text(
                "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
                "rule_files: [prom_rules.yml]\n"
                f"alerting: {{alertmanagers: [{{static_configs: [{{targets: ['127.0.0.1:{am_port}']}}]}}]}}\n"
                "scrape_configs:\n"
                f"- {{job_name: app, static_configs: [{{targets: ['127.0.0.1:{prom_port}']}}]}}\n"
                f"- {{job_name: node, static_configs: [{{targets: ['127.0.0.1:{ne_port}']}}]}}\n"
            )
            (tmp / "am.yml").write_text(
                "route: {receiver: hook, group_by: [alertname, slot], group_wait: 0s, group_interval: 1s, repeat_interval: 1h}\n"
                f"receivers: [{{name: hook, webhook_configs: [{{url: 'http://127.0.0.1:{hook.port}/am', send_resolved: true}}]}}]\n"
            )
            start("node_exporter", [bins["node_exporter"], f"--web.listen-address=127.0.0.1:{ne_port}",
                                    "--collector.disable-defaults", "--collector.cpu"])
            start("alertmanager", [bins["alertmanager"], f"--config.file={tmp / 'am.yml'}", f"--storage.path={tmp / 'am'}",
                                   f"--web.listen-address=127.0.0.1:{am_port}", "--cluster.listen-address="])
            start("prometheus", [bins["prometheus"], f"--config.file={tmp / 'prom.yml'}", f"--storage.tsdb.path={tmp / 'prom'}",
                                 f"--web.listen-address=127.0.0.1:{pm_port}"], cwd=str(tmp))
            result["versions"] = {k: version(v) for k, v in bins.items()}
        await asyncio.sleep(args.warmup)
        for p in procs:
            if p.poll() is not None:
                name = Path(str(p.args[0])).name if isinstance(p.args, list) else "?"
                raise SystemExit(f"{name} exited early; logs in {tmp}")

        def flip(slot: str, value: float) -> float:
            app.stdin.write(f"set {slot} {value}\n")
            app.stdin.flush()
            line = app.stdout.readline().split()
            return float(line[1])

        async def wait_both(t0: float, sw_match: str, am_match: str | None, timeout_s: float) -> tuple[float | None, float | None]:
            end = time.time() + timeout_s
            sw = am = None
            while time.time() < end:
                sw = sw or hook.first("/sw", t0, sw_match)
                am = am or (hook.first("/am", t0, am_match) if am_match else None)
                if sw is not None and (am is not None or not am_match):
                    break
                await asyncio.sleep(0.01)
            return sw, am

        rng = random.Random(args.seed)
        sw_g: list[float] = []
        am_g: list[float] = []
        missed = {"sw_gauge": 0, "prom_gauge": 0, "sw_cpu": 0, "prom_cpu": 0}
        for k in range(args.trials):
            slot = slots[k % len(slots)]
            await asyncio.sleep(rng.uniform(0.0, 1.0))  # a random phase of the 1 s producer tick and scrape
            t0 = flip(slot, HIGH)
            sw, am = await wait_both(t0, rf"FIRING:\d+\] rule=bench_slot_{slot}\b", rf'^\{{"receiver":"hook","status":"firing".*"slot":"{slot}"' if bins else None,
                                     args.timeout_s)
            if sw is None:
                missed["sw_gauge"] += 1
            else:
                sw_g.append(sw - t0)
            if bins:
                if am is None:
                    missed["prom_gauge"] += 1
                else:
                    am_g.append(am - t0)
            flip(slot, LOW)
            await asyncio.sleep(0.5)
        result["gauge"] = {"swarmwatch": stats(sw_g), "prometheus_alertmanager": stats(am_g) if bins else None}
        if bins and sw_g and am_g:
            result["gauge"]["ratio_median"] = round(stats(sw_g)["median_ms"] / stats(am_g)["median_ms"], 3)
        sw_c: list[float] = []
        am_c: list[float] = []
        baseline: list[float] = []
        ncpu = os.cpu_count() or 1
        skipped = 0
        cpu_deadline = time.time() + args.cpu_budget_s
        k = 0
        while len(baseline) < args.cpu_trials and time.time() < cpu_deadline:
            k += 1
            quiet_until = min(cpu_deadline, time.time() + 60)
            while True:  # start from a quiet machine with no CPU alert firing and the last group gone on both sides
                b = cpu_busy_percent(1.0)
                sw_last = hook.last("/sw", r"rule=bench_cpu\b")
                am_last = hook.last("/am", r'"alertname":"BenchCpu"')
                sw_firing = sw_last is not None and "[FIRING" in sw_last[1]
                am_firing = am_last is not None and '"status":"firing"' in am_last[1][:60]
                spaced = sw_last is None or time.time() - sw_last[0] >= args.cpu_spacing_s
                if b < args.cpu_threshold - 20 and not sw_firing and not am_firing and spaced:
                    break
                if time.time() > quiet_until:
                    break
            if sw_firing or am_firing or b >= args.cpu_threshold - 20:
                print(f"cpu trial {k} skipped: busy {b:.0f} %, swarmwatch firing {sw_firing}, prometheus firing {am_firing}",
                      file=sys.stderr)
                skipped += 1  # the shared machine itself was over the threshold: not a clean incident
                continue
            baseline.append(b)
            await asyncio.sleep(rng.uniform(0.0, 1.0))
            t0 = time.time()
            stop_at = t0 + args.cpu_load_s
            # nice 10: the load takes only what the machine leaves idle (trials start only on a quiet machine)
            loaders = [subprocess.Popen([sys.executable, "-c", f"import time\nwhile time.time() < {stop_at}: pass"],
                                        preexec_fn=lambda: os.nice(10)) for _ in range(ncpu)]
            sw, am = await wait_both(t0, r"FIRING:\d+\] rule=bench_cpu\b",
                                     r'^\{"receiver":"hook","status":"firing".*BenchCpu' if bins else None, args.cpu_load_s)
            for p in loaders:
                p.wait()
            if sw is None:
                missed["sw_cpu"] += 1
            else:
                sw_c.append(sw - t0)
            if bins:
                if am is None:
                    missed["prom_cpu"] += 1
                else:
                    am_c.append(am - t0)
        if args.cpu_trials:
            result["cpu_load"] = {"swarmwatch": stats(sw_c), "prometheus_alertmanager": stats(am_c) if bins else None,
                                  "threshold_percent": args.cpu_threshold, "load_processes": ncpu, "skipped_machine_already_over_threshold": skipped,
                                  "baseline_busy_percent_median": round(sorted(baseline)[len(baseline) // 2], 1) if baseline else None}
            if bins and sw_c and am_c:
                result["cpu_load"]["ratio_median"] = round(stats(sw_c)["median_ms"] / stats(am_c)["median_ms"], 3)
        result["missed_within_timeout"] = missed
        app.stdin.write("quit\n")
        app.stdin.flush()
    finally:
        for p in reversed(procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()
        for fh in logs:
            fh.close()
        srv.stop()
        hook.server.shutdown()
        if args.keep:
            (tmp / "webhook.json").write_text(json.dumps(hook.arrivals, indent=1))
            print(f"kept {tmp}", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    result.update({
        "trials": args.trials, "cpu_trials_wanted": args.cpu_trials,
        "swarmwatch_config": "defaults: 1 s producer tick, edge sampling 10 Hz, process --operators rules, "
                             "sink notify default grouping (critical leading edge, group_wait 0.5 s); flap damping off",
        "prometheus_config": "1 s scrape + evaluation, Alertmanager group_wait 0s, group_interval 1s; gauge via prometheus_client, "
                             "CPU via node_exporter irate over 5 s of 1 s scrapes",
        "machine": f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}",
    })
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--role", default="bench", choices=["bench", "app"], help=argparse.SUPPRESS)
    ap.add_argument("--nats", default="", help=argparse.SUPPRESS)
    ap.add_argument("--prom-port", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--trials", type=int, default=50, help="gauge flips")
    ap.add_argument("--cpu-trials", type=int, default=50, help="CPU load starts")
    ap.add_argument("--slots", type=int, default=20, help="gauge series/rules rotated so every flip is a new group")
    ap.add_argument("--cpu-threshold", type=float, default=95.0, help="busy %% that pages")
    ap.add_argument("--cpu-budget-s", type=float, default=1200.0,
                    help="give up on CPU trials after this long (a trial starts only when the machine is quiet)")
    ap.add_argument("--cpu-load-s", type=float, default=4.0, help="how long each CPU load lasts")
    ap.add_argument("--cpu-spacing-s", type=float, default=11.0,
                    help="quiet time after the last swarmwatch CPU message: more than the critical group_interval, so each load is a new group")
    ap.add_argument("--timeout-s", type=float, default=8.0, help="wait this long for both webhooks per gauge flip")
    ap.add_argument("--warmup", type=float, default=10.0)
    ap.add_argument("--seed", type=int, default=12)
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory (logs, configs)")
    args = ap.parse_args()
    if args.role == "app":
        app_main(args.nats, args.prom_port)
        return
    print(json.dumps(asyncio.run(run(args)), indent=2))


if __name__ == "__main__":
    main()
