"""Latency from an alert published on JetStream to its notification at a local webhook.

Runs an embedded nats-server, a NotifySink with one Apprise ``json://`` channel
pointing at a local HTTP receiver, and publishes critical alerts (default
grouping: group_wait 0 s). Each alert has its own rule, so each makes its own
message; the latency is receiver arrival time minus the time just before
``js.publish``. (A critical's latency includes ``group_wait_s``.) A second phase publishes a burst of alerts of one rule on many
nodes and reports how many messages it made.

    python bench/bench_notify.py --alerts 300 --interval-ms 20 --burst 100

Prints one JSON object.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import re
import statistics
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import nats

from processors.alerting import AlertTracker
from schemas import AlertKind, Severity, codec
from sinks.notify import NotifySink, parse_config
from swarmwatch.server import EmbeddedServer
from swarmwatch.streams import ensure_streams

_ID_RE = re.compile(r"id=([0-9a-f]+)")


class Receiver:
    def __init__(self) -> None:
        self.arrivals: list[tuple[float, str]] = []
        rec = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                rec.arrivals.append((time.time(), body.decode()))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()


def pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(p / 100 * (len(s) - 1))))]


async def run(n_alerts: int, interval_s: float, burst: int, critical_wait_s: float | None) -> dict[str, Any]:
    rec = Receiver()
    with tempfile.TemporaryDirectory() as tmp, EmbeddedServer(Path(tmp) / "nats", port=0) as srv:
        nc = await nats.connect(srv.url)
        js = nc.jetstream()
        await ensure_streams(js)
        doc: dict[str, Any] = {"channels": [{"name": "hook", "url": f"json://127.0.0.1:{rec.server.server_port}/hook"}]}
        if critical_wait_s is not None:
            doc["grouping"] = {"critical": {"group_wait_s": critical_wait_s, "group_interval_s": 10, "repeat_interval_s": 3600}}
        cfg = parse_config(doc)
        timing = cfg.grouping.critical
        sink = NotifySink(nc, cfg)
        await sink.start()
        published: dict[str, float] = {}
        now = time.time()
        for i in range(n_alerts):
            tr = AlertTracker(f"bench_rule_{i}", kind=AlertKind.THRESHOLD, severity=Severity.CRITICAL)
            (emit,) = tr.update("c1", "n1", True, now + i * interval_s, 99.0, summary="bench")
            published[emit.message.id] = time.time()
            await js.publish(emit.subject, codec.encode(emit.message), headers={"Nats-Msg-Id": emit.msg_id})
            await asyncio.sleep(interval_s)
        deadline = time.monotonic() + 30
        while len(rec.arrivals) < n_alerts and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        lat_ms = []
        for at, body in rec.arrivals:
            for aid in _ID_RE.findall(json.loads(body)["message"]):
                if aid in published:
                    lat_ms.append((at - published[aid]) * 1000)
        single = {
            "alerts": n_alerts,
            "delivered": len(lat_ms),
            "p50_ms": round(pct(lat_ms, 50), 2) if lat_ms else None,
            "p99_ms": round(pct(lat_ms, 99), 2) if lat_ms else None,
            "max_ms": round(max(lat_ms), 2) if lat_ms else None,
            "mean_ms": round(statistics.fmean(lat_ms), 2) if lat_ms else None,
        }
        # burst: one rule crossing on many nodes at once
        before = len(rec.arrivals)
        tr = AlertTracker("bench_burst", kind=AlertKind.THRESHOLD, severity=Severity.CRITICAL)
        t0 = time.time()
        for k in range(burst):
            for e in tr.update("c1", f"n{k}", True, time.time(), 99.0, summary="bench"):
                await js.publish(e.subject, codec.encode(e.message), headers={"Nats-Msg-Id": e.msg_id})
        seen: set[str] = set()
        deadline = time.monotonic() + 30
        while len(seen) < burst and time.monotonic() < deadline:
            seen = {aid for _, b in rec.arrivals[before:] for aid in _ID_RE.findall(json.loads(b)["message"])}
            await asyncio.sleep(0.05)
        burst_msgs = rec.arrivals[before:]
        burst_res = {
            "alerts": burst,
            "messages": len(burst_msgs),
            "first_message_title": json.loads(burst_msgs[0][1])["title"] if burst_msgs else None,
            "first_message_ms": round((burst_msgs[0][0] - t0) * 1000, 2) if burst_msgs else None,
            "all_delivered_ms": round((burst_msgs[-1][0] - t0) * 1000, 2) if burst_msgs else None,
        }
        await sink.stop()
        await nc.close()
    rec.close()
    return {"bench": "notify_publish_to_webhook", "single": single, "burst": burst_res,
            "critical_timing": timing.model_dump()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--alerts", type=int, default=300, help="alerts in the latency phase (each its own group)")
    ap.add_argument("--interval-ms", type=float, default=20.0, help="gap between alerts (ms)")
    ap.add_argument("--burst", type=int, default=100, help="alerts of one rule published at once")
    ap.add_argument("--critical-wait-s", type=float, default=None, help="override the default critical group_wait_s")
    a = ap.parse_args()
    print(json.dumps(asyncio.run(run(a.alerts, a.interval_ms / 1000, a.burst, a.critical_wait_s))))


if __name__ == "__main__":
    main()
