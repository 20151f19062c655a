"""HTTP health checks from the sidecar: is each endpoint up, how fast, and when does its certificate expire.

Each check GETs its URL every ``interval_s`` and yields, per target (label
``target``, the check's name):

- ``http.up``: 1 when the answer came within ``timeout_s`` with an expected
  status (``expect_status``; default any 2xx or 3xx) and, when set, a body
  matching ``body_match`` (a regular expression); else 0;
- ``http.status_code``: the HTTP status (0 when none came: refused, timed out,
  connection closed);
- ``http.latency_ms``: time to the full answer (or to the failure);
- ``http.tls_days_left``: days until the server certificate's notAfter (https).

Each result is published once, in the next batch. The built-in
``endpoint_down`` rule (processors/rules.py) fires on ``http.up < 0.5`` held
for its ``for``.
"""
from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from producers.fetch import Response, aget, check_url, tls_context
from producers.options import entry_timing
from producers.schedule import run_every
from schemas.models import MAX_LABEL_VALUE_LEN, Sample

if TYPE_CHECKING:
    from producers.publisher import Publisher

log = logging.getLogger("swarmwatch.producer.checks")

DEFAULT_CHECK_INTERVAL_S = 10.0
DEFAULT_CHECK_TIMEOUT_S = 5.0  # capped at the interval
DEFAULT_MAX_BODY_BYTES = 1 * 2**20
_CHECK_KEYS = {"url", "interval", "timeout", "name", "expect_status", "body_match", "tls_verify", "ca"}


@dataclass(frozen=True, slots=True)
class HttpCheck:
    """One endpoint to check; ``expect_status`` empty means any 2xx or 3xx."""

    url: str
    interval_s: float = DEFAULT_CHECK_INTERVAL_S
    timeout_s: float = DEFAULT_CHECK_TIMEOUT_S
    name: str = ""
    expect_status: tuple[int, ...] = ()
    body_match: str | None = None
    tls_verify: bool = True
    ca: str | None = None

    def __post_init__(self) -> None:
        parts = check_url(self.url, "http check url")
        if not self.name:
            object.__setattr__(self, "name", (parts.netloc + parts.path)[:MAX_LABEL_VALUE_LEN])
        if len(self.name) > MAX_LABEL_VALUE_LEN:
            raise ValueError(f"http check name {self.name[:40]!r}... is longer than {MAX_LABEL_VALUE_LEN} characters")
        if not self.timeout_s > 0:
            raise ValueError(f"http check timeout {self.timeout_s!r} must be > 0")
        object.__setattr__(self, "timeout_s", min(self.timeout_s, self.interval_s))
        for code in self.expect_status:
            if not 100 <= code <= 599:
                raise ValueError(f"http check expect_status {code!r} is not an HTTP status (100-599)")
        if self.body_match is not None:
            try:
                re.compile(self.body_match)
            except re.error as exc:
                raise ValueError(f"http check body_match {self.body_match!r} is not a regular expression: {exc}") from None
        if self.ca is not None or not self.tls_verify:
            tls_context(self.ca, self.tls_verify)

    @classmethod
    def from_config(cls, raw: str | Mapping[str, Any], default_interval_s: float = DEFAULT_CHECK_INTERVAL_S) -> HttpCheck:
        """A check from a URL or a mapping (``url``, ``interval``, ``timeout``, ``expect_status``, ...); ValueError names a bad key."""
        if isinstance(raw, str):
            return cls(raw, default_interval_s, min(DEFAULT_CHECK_TIMEOUT_S, default_interval_s))
        interval, timeout = entry_timing(raw, "check", _CHECK_KEYS, default_interval_s, DEFAULT_CHECK_TIMEOUT_S)
        status = raw.get("expect_status")
        if status is None:
            codes: tuple[int, ...] = ()
        else:
            try:
                codes = tuple(int(c) for c in (status if isinstance(status, list) else [status]))
            except (TypeError, ValueError):
                raise ValueError(f"check 'expect_status' must be a status or a list of them, got {status!r}") from None
        body = raw.get("body_match")
        return cls(
            url=str(raw["url"]),
            interval_s=interval,
            timeout_s=timeout,
            name=str(raw.get("name") or ""),
            expect_status=codes,
            body_match=None if body is None else str(body),
            tls_verify=bool(raw.get("tls_verify", True)),
            ca=raw.get("ca"),
        )

    def judge(self, resp: Response) -> tuple[bool, str]:
        """Whether ``resp`` means up, and why not."""
        if resp.error is not None:
            return False, resp.error
        if self.expect_status:
            if resp.status not in self.expect_status:
                return False, f"status {resp.status}, expected {list(self.expect_status)}"
        elif not 200 <= resp.status < 400:
            return False, f"status {resp.status}"
        if self.body_match is not None and not re.search(self.body_match, resp.body.decode("utf-8", "replace")):
            return False, f"body does not match {self.body_match!r}"
        return True, "ok"


@dataclass(slots=True)
class CheckResult:
    """The latest outcome of one check."""

    up: bool
    status: int
    latency_ms: float
    tls_days_left: float | None
    reason: str
    at_s: float  # UNIX time


class HealthChecker:
    """Runs its checks on their own intervals; :meth:`samples` hands each finished result to the next batch.

    ``samples`` is a :data:`producers.sidecar.SampleSource` and :meth:`run` a
    :data:`producers.sidecar.SidecarTask`.
    """

    def __init__(self, checks: Iterable[HttpCheck], max_pending: int = 8) -> None:
        self.checks = list(checks)
        self.latest: dict[str, CheckResult] = {}
        self._pending: list[Sample] = []
        self.max_pending = max_pending * 4 * max(1, len(self.checks))
        self.overflow = 0
        self.runs = 0

    def samples(self) -> list[Sample]:
        """Every result since the last call (the sidecar calls this once per tick)."""
        out, self._pending = self._pending, []
        return out

    async def check_once(self, i: int) -> CheckResult:
        """Run check ``i`` now, queue its samples and return the result."""
        c = self.checks[i]
        ctx = tls_context(c.ca, c.tls_verify) if c.url.startswith("https") else None
        resp = await aget(c.url, c.timeout_s, context=ctx, max_bytes=DEFAULT_MAX_BODY_BYTES)
        up, reason = c.judge(resp)
        days = None if resp.cert_expires_s is None else (resp.cert_expires_s - time.time()) / 86_400.0
        result = CheckResult(up, resp.status, resp.latency_ms, days, reason, time.time())
        prev = self.latest.get(c.name)
        if prev is None or prev.up != up:
            log.log(logging.INFO if up else logging.WARNING, "http check %s is %s (%s)", c.name, "up" if up else "down", reason)
        self.latest[c.name] = result
        self.runs += 1
        target = {"target": c.name}
        self._pending += [
            Sample("http.up", 1.0 if up else 0.0, None, target),
            Sample("http.status_code", float(resp.status), None, target),
            Sample("http.latency_ms", resp.latency_ms, "ms", target),
        ]
        if days is not None:
            self._pending.append(Sample("http.tls_days_left", days, "d", target))
        if len(self._pending) > self.max_pending:
            cut = len(self._pending) - self.max_pending
            self.overflow += cut
            del self._pending[:cut]
        return result

    async def _loop(self, i: int, stop: asyncio.Event) -> None:
        def failed() -> None:
            log.exception("http check %s failed", self.checks[i].url)

        await run_every(self.checks[i].interval_s, stop, lambda: self.check_once(i), failed)

    async def run(self, publisher: Publisher | None, stop: asyncio.Event) -> None:
        """Run every check until ``stop`` (a sidecar task; the publisher is not needed)."""
        await asyncio.gather(*(self._loop(i, stop) for i in range(len(self.checks))))
