"""Keeping channel secrets out of logs and errors.

Apprise URLs carry tokens and passwords. :class:`Redactor` replaces them with
``***`` in any text, also percent-encoded (``p%40ss``) or decoded (``p@ss``);
:func:`install_log_scrubber` applies it to the loggers of Apprise and of the
HTTP client it uses, which print URLs at DEBUG.
"""
from __future__ import annotations

import logging
import re
from urllib.parse import quote, quote_plus, unquote, unquote_plus
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

from sinks.notify.config import HOST_SAFE_SCHEMES

REDACTED = "***"
MIN_SECRET_LEN = 6  # shorter URL path parts ("hook", "api") are left readable; passwords and tokens never are
_WORD = "A-Za-z0-9"
_SECRET_KEY = re.compile(r"(?i)token|key|pass|secret|auth|sig|pwd|cred|access")  # query keys whose values are secret


def _variants(secret: str) -> set[str]:
    """The secret as written, decoded, and percent-encoded (upper and lower case hex)."""
    out = {secret}
    for raw in (unquote(secret), unquote_plus(secret)):
        out.add(raw)
        for enc in (quote(raw, safe=""), quote_plus(raw, safe="")):
            out.add(enc)
            out.add(re.sub(r"%[0-9A-F]{2}", lambda m: m.group(0).lower(), enc))
    return {v for v in out if v}


class Redactor:
    """Replaces secrets (channel URLs and their parts) with ``***`` in text."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._secrets: list[str] = []  # matched anywhere
        self._short: list[str] = []  # shorter than MIN_SECRET_LEN: matched as whole words only
        self._short_re: re.Pattern[str] | None = None
        for s in secrets:
            self.add(s)

    def add(self, url: str) -> None:
        """Treat ``url`` (or a bare secret value) and its user info, host token, path and query values as secret.

        Passwords, tokens in the host and values of query keys like ``token`` or
        ``apikey`` are secret at any length (short ones are matched as whole words, so ``pw`` does not
        blank every "pw" inside other words); path parts from MIN_SECRET_LEN up.
        """
        always = {url}
        scheme, _, rest = url.partition("://")
        maybe: set[str] = set()
        if rest:
            body = rest.split("?", 1)[0]
            userinfo = body.rsplit("@", 1)[0] if "@" in body else ""
            user, _, password = userinfo.partition(":")
            maybe.add(user)  # user names are secret only when long enough to be tokens
            always.add(password)
            hostpart, _, path = body.partition("/")
            if scheme.lower() not in HOST_SAFE_SCHEMES:
                always.add(hostpart.rsplit("@", 1)[-1])  # slack://TOKEN_A/..., tgram://BOT_TOKEN/...
            maybe.update(p for p in path.split("/") if p)  # webhook paths and service tokens
            for kv in rest.partition("?")[2].split("&"):
                k, _, v = kv.partition("=")
                (always if _SECRET_KEY.search(k) else maybe).add(v)
        always.discard("")
        found = {v for p in always for v in _variants(p)}
        found |= {v for p in maybe if len(p) >= MIN_SECRET_LEN for v in _variants(p)}
        for p in found:
            if len(p) >= MIN_SECRET_LEN:
                if p not in self._secrets:
                    self._secrets.append(p)
            elif p not in self._short:
                self._short.append(p)
        self._secrets.sort(key=len, reverse=True)
        self._short.sort(key=len, reverse=True)
        self._short_re = (
            re.compile(f"(?<![{_WORD}])(?:{'|'.join(map(re.escape, self._short))})(?![{_WORD}])") if self._short else None
        )

    def __call__(self, text: str) -> str:
        for s in self._secrets:
            if s in text:
                text = text.replace(s, REDACTED)
        if self._short_re is not None:
            text = self._short_re.sub(REDACTED, text)
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
