"""Producer options from user input: intervals, node names, NATS auth and TLS.

Kept free of heavy imports so the CLI can check a user's options (and say
clearly what is wrong) before anything starts.
"""
from __future__ import annotations

import os
import re
import socket
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


def default_node_name() -> str:
    """This host's short name made into a valid node token (``web-1.example.com`` -> ``web-1``)."""
    host = socket.gethostname().split(".")[0]
    name = re.sub(r"[^A-Za-z0-9_-]+", "-", host).strip("-")[:64]
    return name or "node"


def inbox_prefix(user: str) -> str:
    """``_INBOX_<user>``: replies and JetStream acks to this user land where only it may subscribe."""
    return "_INBOX_" + "".join(c if c.isalnum() or c in "_-" else "_" for c in user)


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
        if not os.path.isfile(creds):
            raise ValueError(f"credentials file {creds!r} does not exist")
        opts["user_credentials"] = creds
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
