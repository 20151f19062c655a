"""Keeping channel secrets out of logs and errors.

Apprise URLs carry tokens and passwords. :class:`Redactor` replaces them with
``***`` in any text; :func:`install_log_scrubber` applies it to the loggers of
Apprise and of the HTTP client it uses, which print URLs at DEBUG.
"""
from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

from sinks.notify.config import HOST_SAFE_SCHEMES

REDACTED = "***"
MIN_SECRET_LEN = 6  # shorter URL parts ("hook", "api") are left readable


class Redactor:
    """Replaces secrets (channel URLs and their parts) with ``***`` in text."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._secrets: list[str] = []
        for s in secrets:
            self.add(s)

    def add(self, url: str) -> None:
        """Treat ``url`` (or a bare secret value) and its user info, host token, path and query values as secret."""
        parts = {url}
        scheme, _, rest = url.partition("://")
        if rest:
            body = rest.split("?", 1)[0]
            userinfo = body.rsplit("@", 1)[0] if "@" in body else ""
            parts.update(p for p in userinfo.split(":") if p)
            hostpart, _, path = body.partition("/")
            if scheme.lower() not in HOST_SAFE_SCHEMES:
                parts.add(hostpart.rsplit("@", 1)[-1])  # slack://TOKEN_A/..., tgram://BOT_TOKEN/...
            parts.update(p for p in path.split("/") if p)  # webhook paths and service tokens
            parts.update(v for kv in rest.partition("?")[2].split("&") for v in [kv.partition("=")[2]] if v)
        for p in parts:
            if len(p) >= MIN_SECRET_LEN and p not in self._secrets:
                self._secrets.append(p)
        self._secrets.sort(key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for s in self._secrets:
            if s in text:
                text = text.replace(s, REDACTED)
        return text


class _ScrubFilter(logging.Filter):
    """Scrubs secrets from Apprise's own log records."""

    def __init__(self, redactor: Redactor) -> None:
        super().__init__()
        self.redactor = redactor

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            msg = record.getMessage()
        except Exception:
            return True
        record.msg, record.args = self.redactor(msg), None
        return True


SCRUBBED_LOGGERS = ("apprise", "urllib3.connectionpool", "urllib3", "requests")
"""Loggers that may print a channel URL (Apprise and the HTTP client it uses, at DEBUG)."""


def install_log_scrubber(redactor: Redactor) -> logging.Filter:
    """Attach a scrubbing filter to each of SCRUBBED_LOGGERS; return it for :func:`remove_log_scrubber`.

    (A logger's filters see only records logged to that very logger, hence one per name.)
    """
    f = _ScrubFilter(redactor)
    for name in SCRUBBED_LOGGERS:
        logging.getLogger(name).addFilter(f)
    return f


def remove_log_scrubber(f: logging.Filter) -> None:
    for name in SCRUBBED_LOGGERS:
        logging.getLogger(name).removeFilter(f)




@contextmanager
def scrubbed_logs(secrets: Iterable[str]) -> Iterator[Redactor]:
    """Scrub ``secrets`` from Apprise/HTTP logs inside the block."""
    r = Redactor(secrets)
    f = install_log_scrubber(r)
    try:
        yield r
    finally:
        remove_log_scrubber(f)
