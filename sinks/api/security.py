"""Who may talk to the API: token checks, Host and Origin checks, failed-login throttling.

Threats this answers (see docs/security.md): a web page the user opens while
``swarmwatch up`` runs could read the API by DNS rebinding (a foreign Host) or
open the WebSocket (browsers do not apply the same-origin policy to WebSockets);
a short token can be guessed; a token in a URL leaks into logs and history.

- :class:`OriginGuard` (ASGI middleware) refuses HTTP requests and WebSocket
  handshakes whose ``Origin`` is neither the API's own origin nor listed.
- Starlette's ``TrustedHostMiddleware`` refuses unknown ``Host`` headers
  (:func:`default_allowed_hosts`: loopback names for a loopback bind).
- :func:`check_token_strength`: at least MIN_TOKEN_LEN characters.
- :func:`token_of`: from ``Authorization: Bearer``, ``X-Swarmwatch-Token`` or,
  for browser WebSockets, the subprotocol ``bearer.<base64url(token)>``; never
  from the URL.
- :class:`LoginLimiter`: after MAX_FAILURES wrong tokens within WINDOW_S a
  client address gets 429 until the window passes.
"""
from __future__ import annotations

import base64
import binascii
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable, Iterable, MutableMapping, Sequence
from typing import Any
from urllib.parse import urlsplit

MIN_TOKEN_LEN = 16
MAX_FAILURES = 10  # wrong tokens per client address within WINDOW_S before it is refused
WINDOW_S = 60.0
MAX_TRACKED_CLIENTS = 10_000
WS_PROTOCOL = "swarmwatch"  # the subprotocol the server selects when a browser sends its token as one
WS_TOKEN_PREFIX = "bearer."
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1", "[::1]")

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def check_token_strength(token: str | None) -> None:
    """Refuse an API token shorter than MIN_TOKEN_LEN (None means no authentication)."""
    if token is None:
        return
    if len(token) < MIN_TOKEN_LEN:
        raise ValueError(
            f"the API token is {len(token)} characters; use at least {MIN_TOKEN_LEN} "
            "(e.g. python -c 'import secrets; print(secrets.token_urlsafe(24))')"
        )


def default_allowed_hosts(bind_host: str) -> list[str]:
    """Host headers accepted by default: loopback names for a loopback bind, else any (a token is required there)."""
    from sinks.api.server import is_loopback

    if is_loopback(bind_host):
        return [*LOOPBACK_HOSTS, bind_host]
    return ["*"]


def ws_token_protocol(token: str) -> str:
    """The subprotocol a browser offers to carry ``token``: ``bearer.<base64url, no padding>``."""
    return WS_TOKEN_PREFIX + base64.urlsafe_b64encode(token.encode()).decode().rstrip("=")


def _ws_protocol_token(header: str | None) -> str | None:
    if not header:
        return None
    for proto in header.split(","):
        p = proto.strip()
        if p.startswith(WS_TOKEN_PREFIX):
            raw = p[len(WS_TOKEN_PREFIX):]
            try:
                return base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)).decode()
            except (binascii.Error, ValueError):
                return None
    return None


def token_of(headers: Any) -> str | None:
    """The token a client sent in a header (never from the URL); None if none."""
    auth = headers.get("authorization")
    if auth and auth.lower().startswith("bearer "):
        return str(auth[7:].strip())
    return headers.get("x-swarmwatch-token") or _ws_protocol_token(headers.get("sec-websocket-protocol"))


class LoginLimiter:
    """Counts wrong tokens per client address; refuses a client with MAX_FAILURES in WINDOW_S."""

    def __init__(self, max_failures: int = MAX_FAILURES, window_s: float = WINDOW_S, max_clients: int = MAX_TRACKED_CLIENTS) -> None:
        if max_failures < 1 or window_s <= 0:
            raise ValueError(f"max_failures ({max_failures!r}) must be >= 1 and window_s ({window_s!r}) > 0")
        self.max_failures = max_failures
        self.window_s = window_s
        self.max_clients = max_clients
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()
        self.refused = 0  # requests answered 429
        self.failed = 0  # wrong or missing tokens

    def _recent(self, client: str, now: float) -> deque[float] | None:
        q = self._failures.get(client)
        if q is None:
            return None
        while q and q[0] <= now - self.window_s:
            q.popleft()
        if not q:
            del self._failures[client]
            return None
        return q

    def retry_after(self, client: str, now: float | None = None) -> float:
        """Seconds until ``client`` may try again; 0 if it may now."""
        now = time.monotonic() if now is None else now
        q = self._recent(client, now)
        if q is None or len(q) < self.max_failures:
            return 0.0
        return max(0.0, q[-self.max_failures] + self.window_s - now)

    def fail(self, client: str, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        self.failed += 1
        q = self._recent(client, now)
        if q is None:
            q = self._failures[client] = deque(maxlen=self.max_failures)
            if len(self._failures) > self.max_clients:
                self._failures.popitem(last=False)
        q.append(now)
        self._failures.move_to_end(client)


def origin_allowed(origin: str | None, host: str | None, allowed_origins: Iterable[str] = ()) -> bool:
    """No Origin (not a browser), the API's own origin (same host:port), or one listed."""
    if origin is None:
        return True
    if origin in allowed_origins or "*" in allowed_origins:
        return True
    if origin == "null" or not host:
        return False
    try:
        parts = urlsplit(origin)
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and parts.netloc.lower() == host.lower()


class OriginGuard:
    """ASGI middleware: 403 for HTTP requests and WebSocket handshakes from foreign origins."""

    def __init__(self, app: ASGIApp, allowed_origins: Sequence[str] = (), on_refuse: Callable[[], None] | None = None) -> None:
        self.app = app
        self.allowed_origins = tuple(allowed_origins)
        self.on_refuse = on_refuse
        self.refused = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope.get("headers", [])}
            if not origin_allowed(headers.get("origin"), headers.get("host"), self.allowed_origins):
                self.refused += 1
                if self.on_refuse is not None:
                    self.on_refuse()
                body = b"cross-origin request refused: Origin is not this API's own origin"
                if scope["type"] == "websocket":
                    await receive()  # websocket.connect
                    await send({"type": "websocket.http.response.start", "status": 403,
                                "headers": [(b"content-type", b"text/plain; charset=utf-8"), (b"content-length", str(len(body)).encode())]})
                    await send({"type": "websocket.http.response.body", "body": body})
                    return
                await send({"type": "http.response.start", "status": 403,
                            "headers": [(b"content-type", b"text/plain; charset=utf-8"), (b"content-length", str(len(body)).encode())]})
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)
