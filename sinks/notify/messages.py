"""The text of a notification: title, body and Apprise notify type (plain ASCII, SMS-friendly)."""
from __future__ import annotations

import time

from schemas import Alert

from sinks.notify.grouping import Notification

DEFAULT_MAX_LINES = 20  # alerts listed per section; the rest are counted


def _clock(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(ts))


def _duration(seconds: float) -> str:
    s = max(0, int(seconds))
    h, rem = divmod(s, 3600)
    m, sec = divmod(rem, 60)
    return f"{h}h{m:02d}m" if h else (f"{m}m{sec:02d}s" if m else f"{sec}s")


def _line(a: Alert) -> str:
    parts = [f"- {a.cluster}/{a.node} {a.rule}: {a.summary}"]
    if a.value is not None:
        v = f"value {a.value:g}"
        if a.threshold is not None:
            v += f" (threshold {a.threshold:g})"
        parts.append(v)
    if a.ended_at is not None:
        parts.append(f"lasted {_duration(a.ended_at - a.started_at)}")
    else:
        parts.append(f"since {_clock(a.started_at)}")
    parts.append(f"id={a.id}")
    return " | ".join(parts)


def _section(name: str, alerts: list[Alert], max_lines: int) -> list[str]:
    if not alerts:
        return []
    out = [f"{name} ({len(alerts)}):"]
    out += [_line(a) for a in alerts[:max_lines]]
    if len(alerts) > max_lines:
        out.append(f"... and {len(alerts) - max_lines} more")
    return out


def notify_type(n: Notification) -> str:
    """Apprise type: failure (critical firing), warning, info, or success (only resolves)."""
    if n.firing or n.flapping:
        sev = n.severity
        return "failure" if sev == "critical" else ("warning" if sev == "warning" else "info")
    return "success"


def render(n: Notification, *, max_lines: int = DEFAULT_MAX_LINES, flap_quiet_s: float | None = None) -> tuple[str, str]:
    """(title, body) of ``n``: counts and group labels in the title, one line per alert in the body."""
    counts = []
    if n.firing:
        counts.append(f"FIRING:{len(n.firing)}")
    if n.resolved:
        counts.append(f"RESOLVED:{len(n.resolved)}")
    if n.flapping:
        counts.append(f"FLAPPING:{len(n.flapping)}")
    if n.repeat:
        counts.append("reminder")
    labels = " ".join(f"{k}={v}" for k, v in n.labels.items())
    title = f"[{', '.join(counts)}] {labels}".strip()
    body: list[str] = []
    body += _section("Firing", n.firing, max_lines)
    body += _section("Resolved", n.resolved, max_lines)
    if n.flapping:
        hold = f" until quiet for {_duration(flap_quiet_s)}" if flap_quiet_s else ""
        body += _section(f"Flapping, further changes held{hold}", n.flapping, max_lines)
    return title, "\n".join(body)
