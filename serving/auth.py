"""Bearer-token authentication as a plain ASGI middleware.

When ``CTO_API_TOKEN`` is set every request needs ``Authorization: Bearer <token>``, except the
probes and metrics that orchestrators and Prometheus scrape without credentials.
"""

from __future__ import annotations

import hmac
import json
from typing import Any

OPEN_PATHS = frozenset({"/livez", "/readyz", "/healthz", "/metrics"})


class BearerTokenMiddleware:
    """Answers 401 (JSON, with ``WWW-Authenticate``) to requests without the right token."""

    def __init__(self, app: Any, token: str | None = None) -> None:
        self.app = app
        self._expected = f"Bearer {token}".encode() if token else None

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if self._expected is None or scope["type"] != "http" or scope["path"] in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        supplied = b""
        for name, value in scope.get("headers", ()):
            if name == b"authorization":
                supplied = value
                break
        # Constant-time comparison: the answer time must not leak how much of the token matched.
        if hmac.compare_digest(supplied, self._expected):
            await self.app(scope, receive, send)
            return
        reason = "missing bearer token" if not supplied else "invalid bearer token"
        body = json.dumps(
            {"error": f"unauthorized: {reason}", "detail": "send 'Authorization: Bearer <token>'"}
        ).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 401,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"www-authenticate", b'Bearer realm="cto"'),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
