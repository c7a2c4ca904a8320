"""Bearer-token authentication as a plain ASGI middleware.

When ``CTO_API_TOKEN`` is set every request needs ``Authorization: Bearer <token>``, except the
probes and metrics that orchestrators and Prometheus scrape without credentials. The scheme name
is case-insensitive (RFC 7235 section 2.1: ``bearer`` and ``BEARER`` are ``Bearer``); the token is
compared exactly, in constant time.
"""

from __future__ import annotations

import hmac
from typing import Any

from serving.guard import error_body, send_error

OPEN_PATHS = frozenset({"/livez", "/readyz", "/healthz", "/metrics"})


class BearerTokenMiddleware:
    """Answers 401 (JSON, with ``WWW-Authenticate``) to requests without the right token."""

    def __init__(self, app: Any, token: str | None = None) -> None:
        self.app = app
        self._expected = token.encode() if token else None

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if self._expected is None or scope["type"] != "http" or scope["path"] in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        supplied = b""
        for name, value in scope.get("headers", ()):
            if name == b"authorization":
                supplied = value
                break
        scheme, _, credentials = supplied.partition(b" ")
        # Constant-time comparison: the answer time must not leak how much of the token matched.
        if scheme.lower() == b"bearer" and hmac.compare_digest(
            credentials.strip(b" "), self._expected
        ):
            await self.app(scope, receive, send)
            return
        reason = "missing bearer token" if not supplied else "invalid bearer token"
        body = error_body(
            f"unauthorized: {reason}: send 'Authorization: Bearer <token>'",
            ["header", "authorization"],
            "unauthorized",
        )
        await send_error(send, 401, body, [(b"www-authenticate", b'Bearer realm="cto"')])
