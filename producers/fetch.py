"""One HTTP(S) GET with its status, body, latency and the server certificate's expiry.

Shared by the Prometheus scrape bridge and the HTTP health checks. Runs the
standard library's ``http.client`` in a worker thread (no dependency, no
hand-written HTTP parsing); the caller bounds the whole call with
``asyncio.wait_for``.
"""
from __future__ import annotations

import asyncio
import http.client
import os
import socket
import ssl
import tempfile
import time
import urllib.parse
from dataclasses import dataclass

DEFAULT_MAX_BYTES = 16 * 2**20  # a larger body is refused (a runaway exporter must not eat the node's memory)
USER_AGENT = "swarmwatch-sidecar"


@dataclass(slots=True)
class Response:
    """What one GET gave: ``status`` 0 and ``error`` set when no HTTP answer came back."""

    status: int
    body: bytes
    latency_ms: float
    cert_expires_s: float | None = None  # UNIX time of the server certificate's notAfter (https only)
    error: str | None = None
    content_type: str = ""


def check_url(url: str, what: str = "url") -> urllib.parse.SplitResult:
    """Parse an http(s) URL; ValueError names a bad one."""
    parts = urllib.parse.urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{what} {url!r} is not an http:// or https:// URL with a host")
    try:
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        raise ValueError(f"{what} {url!r} has an invalid port") from None
    return parts


def tls_context(ca: str | None = None, verify: bool = True) -> ssl.SSLContext:
    """A client context: the system CAs (or ``ca``), or no verification at all when ``verify`` is False."""
    if ca is not None and not os.path.isfile(ca):
        raise ValueError(f"CA file {ca!r} does not exist")
    ctx = ssl.create_default_context(cafile=ca)
    if not verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


def _cert_expiry(sock: ssl.SSLSocket) -> float | None:
    cert = sock.getpeercert()
    if cert and "notAfter" in cert:
        return float(ssl.cert_time_to_seconds(str(cert["notAfter"])))
    der = sock.getpeercert(binary_form=True)  # unverified: decode it ourselves
    if not der:
        return None
    decode = getattr(ssl, "_ssl", None) and getattr(ssl._ssl, "_test_decode_cert", None)  # type: ignore[attr-defined]
    if decode is None:
        return None
    fd, path = tempfile.mkstemp(suffix=".pem")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(ssl.DER_cert_to_PEM_cert(der))
        info = decode(path)
        return float(ssl.cert_time_to_seconds(info["notAfter"])) if "notAfter" in info else None
    except Exception:  # noqa: BLE001 - expiry is a bonus, never a failure of the check
        return None
    finally:
        os.unlink(path)


def get(url: str, timeout_s: float, *, context: ssl.SSLContext | None = None, accept: str | None = None,
        max_bytes: int = DEFAULT_MAX_BYTES) -> Response:
    """GET ``url`` (blocking). Never raises for network trouble: the reason is in ``error``."""
    parts = check_url(url)
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    t0 = time.perf_counter()
    https = parts.scheme == "https"
    conn: http.client.HTTPConnection
    if https:
        conn = http.client.HTTPSConnection(parts.hostname or "", parts.port, timeout=timeout_s,
                                           context=context or ssl.create_default_context())
    else:
        conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=timeout_s)
    expires: float | None = None
    try:
        conn.connect()
        if https and isinstance(conn.sock, ssl.SSLSocket):
            expires = _cert_expiry(conn.sock)
        headers = {"User-Agent": USER_AGENT, "Connection": "close"}
        if accept:
            headers["Accept"] = accept
        conn.request("GET", path, headers=headers)
        resp = conn.getresponse()
        body = resp.read(max_bytes + 1)
        if len(body) > max_bytes:
            return Response(resp.status, b"", _ms(t0), expires, f"body larger than {max_bytes} bytes")
        return Response(resp.status, body, _ms(t0), expires, None, resp.getheader("Content-Type", "") or "")
    except ssl.SSLCertVerificationError as exc:
        return Response(0, b"", _ms(t0), expires, f"TLS certificate not trusted: {exc.verify_message}")
    except (socket.timeout, TimeoutError):
        return Response(0, b"", _ms(t0), expires, f"timed out after {timeout_s:g} s")
    except http.client.RemoteDisconnected:
        return Response(0, b"", _ms(t0), expires, "connection closed without a response")
    except (OSError, http.client.HTTPException) as exc:
        return Response(0, b"", _ms(t0), expires, f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)
    finally:
        conn.close()


async def aget(url: str, timeout_s: float, **kwargs: object) -> Response:
    """:func:`get` in a worker thread, bounded by ``timeout_s`` as a whole (a trickling server times out too)."""
    t0 = time.perf_counter()
    try:
        return await asyncio.wait_for(asyncio.to_thread(get, url, timeout_s, **kwargs), timeout_s + 0.05)  # type: ignore[arg-type]
    except asyncio.TimeoutError:
        return Response(0, b"", _ms(t0), None, f"timed out after {timeout_s:g} s")


def _ms(t0: float) -> float:
    return (time.perf_counter() - t0) * 1000.0
