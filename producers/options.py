"""Producer options from user input: intervals, node names, NATS auth and TLS.

Kept free of heavy imports so the CLI can check a user's options (and say
clearly what is wrong) before anything starts.
"""
from __future__ import annotations

import os
import re
import socket
from collections.abc import Collection, Mapping
from typing import Any

DEFAULT_INTERVAL_S = 1.0
MIN_INTERVAL_S = 0.05



def parse_interval(text: str | float) -> float:
    """``"1s"``, ``"500ms"``, ``"2"`` (seconds), ``"1m30s"`` -> seconds (the one grammar); ValueError names a bad value."""
    from schemas.durations import parse_duration

    value = parse_duration(text, "interval")
    if not value >= MIN_INTERVAL_S:
        raise ValueError(f"interval {text!r} is too short; the minimum is {MIN_INTERVAL_S * 1000:g}ms")
    return value


def entry_timing(raw: Any, what: str, keys: Collection[str], default_interval_s: float,
                 default_timeout_s: float) -> tuple[float, float]:
    """(interval, timeout) in seconds of a mapping config entry (a ``scrape:`` target, a ``checks:`` check).

    The entry needs a ``url`` and only ``keys``; a missing interval is ``default_interval_s``, a
    missing timeout ``default_timeout_s`` capped at the interval. ValueError names what is wrong.
    """
    if not isinstance(raw, Mapping) or "url" not in raw:
        raise ValueError(f"a {what} entry needs at least a 'url', got {raw!r}")
    unknown = set(raw) - set(keys)
    if unknown:
        raise ValueError(f"{what} entry {raw['url']!r}: unknown key(s) {sorted(unknown)}; expected {sorted(keys)}")
    interval = parse_interval(raw["interval"]) if raw.get("interval") is not None else default_interval_s
    timeout = parse_interval(raw["timeout"]) if raw.get("timeout") is not None else min(default_timeout_s, interval)
    return interval, timeout


def default_node_name() -> str:
    """This host's short name made into a valid node token (``web-1.example.com`` -> ``web-1``)."""
    host = socket.gethostname().split(".")[0]
    name = re.sub(r"[^A-Za-z0-9_-]+", "-", host).strip("-")[:64]
    return name or "node"


def inbox_prefix(user: str) -> str:
    """``_INBOX_<user>``: replies and JetStream acks to this user land where only it may subscribe."""
    return "_INBOX_" + "".join(c if c.isalnum() or c in "_-" else "_" for c in user)


def creds_options(path: str) -> dict[str, Any]:
    """``nats.connect`` options for a credentials file: a node's nkey seed (``swarmwatch creds issue``,
    replies under ``_INBOX_<public key>``) or a JWT ``.creds`` file. ValueError names a bad file."""
    if not os.path.isfile(path):
        raise ValueError(f"credentials file {path!r} does not exist")
    with open(path, "rb") as f:
        head = f.read(4096)
    if not head.startswith(b"SU"):
        return {"user_credentials": path}
    import nkeys

    try:
        public_key = nkeys.from_seed(bytearray(head.strip())).public_key.decode()
    except Exception as exc:  # noqa: BLE001 - nkeys raises several types for one cause
        raise ValueError(f"credentials file {path!r} is not a valid nkey user seed: {exc}") from None
    return {"nkeys_seed": path, "inbox_prefix": f"_INBOX_{public_key}"}


def connect_options(
    *,
    creds: str | None = None,
    token: str | None = None,
    user: str | None = None,
    password: str | None = None,
    tls_ca: str | None = None,
    tls_cert: str | None = None,
    tls_key: str | None = None,
    tls_hostname: str | None = None,
) -> dict[str, Any]:
    """Keyword arguments for ``nats.connect`` from CLI-style security options (files are checked now)."""
    opts: dict[str, Any] = {}
    if creds:
        opts.update(creds_options(creds))
    if token:
        opts["token"] = token
    if user:
        opts["user"] = user
        opts["inbox_prefix"] = inbox_prefix(user)
    if password:
        opts["password"] = password
    if tls_ca or tls_cert or tls_key:
        import ssl

        for what, path in (("TLS CA", tls_ca), ("TLS certificate", tls_cert), ("TLS key", tls_key)):
            if path and not os.path.isfile(path):
                raise ValueError(f"{what} file {path!r} does not exist")
        if bool(tls_cert) != bool(tls_key):
            raise ValueError("TLS client auth needs both a certificate and a key")
        try:
            ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=tls_ca)
            if tls_cert and tls_key:
                ctx.load_cert_chain(tls_cert, tls_key)
        except (ssl.SSLError, OSError) as exc:
            raise ValueError(f"TLS files could not be loaded (ca={tls_ca!r}, cert={tls_cert!r}): {exc}") from None
        opts["tls"] = ctx
    if tls_hostname:
        opts["tls_hostname"] = tls_hostname
    return opts


SIDECAR_CONFIG_KEYS = ("scrape", "checks")


def read_sidecar_config(path: str) -> dict[str, Any]:
    """The ``scrape:`` and ``checks:`` lists of a sidecar config file (YAML or TOML); ValueError names the problem."""
    import tomllib

    if not os.path.isfile(path):
        raise ValueError(f"sidecar config {path!r} does not exist")
    try:
        with open(path, "rb") as f:
            data = f.read()
        if path.endswith(".toml"):
            raw: Any = tomllib.loads(data.decode("utf-8"))
        else:
            import yaml

            raw = yaml.safe_load(data)
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError, RecursionError) as exc:
        raise ValueError(f"sidecar config {path!r} could not be read: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - yaml.YAMLError without importing yaml up front
        raise ValueError(f"sidecar config {path!r} is not valid YAML: {exc}") from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ValueError(f"sidecar config {path!r}: expected a mapping with 'scrape' and/or 'checks', got {type(raw).__name__}")
    unknown = set(raw) - set(SIDECAR_CONFIG_KEYS)
    if unknown:
        raise ValueError(f"sidecar config {path!r}: unknown key(s) {sorted(unknown)}; expected {list(SIDECAR_CONFIG_KEYS)}")
    for key in SIDECAR_CONFIG_KEYS:
        if raw.get(key) is not None and not isinstance(raw[key], list):
            raise ValueError(f"sidecar config {path!r}: {key!r} must be a list, got {type(raw[key]).__name__}")
    return raw


def sidecar_sources(
    config: str | None = None,
    scrape_urls: list[str] | tuple[str, ...] = (),
    check_urls: list[str] | tuple[str, ...] = (),
    scrape_interval: str | float | None = None,
    check_interval: str | float | None = None,
) -> tuple[list[Any], list[Any]]:
    """Scrape targets and HTTP checks from a sidecar config file plus ``--scrape``/``--http-check`` URLs.

    Returns ``(targets, checks)`` (:class:`producers.scrape.ScrapeTarget`,
    :class:`producers.checks.HttpCheck`); ValueError names the bad entry.
    """
    s_int = parse_interval(scrape_interval) if scrape_interval is not None else None
    c_int = parse_interval(check_interval) if check_interval is not None else None
    raw = read_sidecar_config(config) if config else {}
    return sources_from_entries([*(raw.get("scrape") or []), *scrape_urls], [*(raw.get("checks") or []), *check_urls],
                                s_int, c_int)


def sources_from_entries(
    scrape: list[Any] | tuple[Any, ...],
    checks: list[Any] | tuple[Any, ...],
    scrape_interval_s: float | None = None,
    check_interval_s: float | None = None,
) -> tuple[list[Any], list[Any]]:
    """Scrape targets and HTTP checks from config entries (a URL or a mapping each); ValueError names a bad one."""
    from producers.checks import DEFAULT_CHECK_INTERVAL_S, HttpCheck
    from producers.scrape import DEFAULT_SCRAPE_INTERVAL_S, ScrapeTarget

    s_int = DEFAULT_SCRAPE_INTERVAL_S if scrape_interval_s is None else scrape_interval_s
    c_int = DEFAULT_CHECK_INTERVAL_S if check_interval_s is None else check_interval_s
    targets = [ScrapeTarget.from_config(e, s_int) for e in scrape]
    checks_out = [HttpCheck.from_config(e, c_int) for e in checks]
    for what, items in (("scrape target", targets), ("http check", checks_out)):
        names = [x.name for x in items]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"{what} name(s) {dup} appear more than once; give each a distinct 'name'")
    return targets, checks_out
