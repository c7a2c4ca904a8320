"""Requests the API cannot read are answered before they reach a route: 413 and 415.

A plain ASGI middleware in front of every route (BentoML's own and mounted apps alike):

- a POST body must be JSON: another ``Content-Type`` (e.g. ``multipart/form-data``, which made
  the form parser fail with a 500) gets ``415`` naming the type it received;
- a body larger than ``CTO_MAX_BODY_BYTES`` gets ``413`` with the limit, before it is parsed:
  from ``Content-Length`` when given, else counted while it streams in.

Answers use the API's error shape: ``{"error": ..., "detail": [{"loc", "msg", "type"}]}``.
"""

from __future__ import annotations

import json
from typing import Any

JSON_TYPES = frozenset({"", "application/json"})


def error_body(
    message: str, loc: list[str | int] | None = None, kind: str = "value_error"
) -> bytes:
    detail = [{"loc": loc or [], "msg": message, "type": kind}]
    return json.dumps({"error": message, "detail": detail}).encode()


async def send_error(send: Any, status: int, body: bytes, headers: list | None = None) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *(headers or []),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def _header(scope: dict[str, Any], name: bytes) -> bytes | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return value
    return None


class RequestGuardMiddleware:
    """415 for non-JSON POST bodies, 413 for bodies over ``max_body_bytes``."""

    def __init__(self, app: Any, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] not in ("POST", "PUT", "PATCH"):
            await self.app(scope, receive, send)
            return
        content_type = (_header(scope, b"content-type") or b"").decode("latin-1")
        media_type = content_type.split(";", 1)[0].strip().lower()
        if media_type not in JSON_TYPES:
            message = f"unsupported Content-Type {media_type!r}: send application/json"
            await send_error(send, 415, error_body(message, ["header", "content-type"]))
            return
        length = _header(scope, b"content-length")
        if length is not None:
            try:
                size = int(length)
            except ValueError:
                await send_error(send, 400, error_body("Content-Length is not a number"))
                return
            if size > self.max_body_bytes:
                await self._too_large(send, f"{size:,} bytes")
                return
            await self.app(scope, receive, send)
            return
        # No length given (chunked): read up to the limit, then hand the body on in one piece.
        chunks: list[bytes] = []
        size = 0
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                await self._too_large(send, f"more than {self.max_body_bytes:,} bytes")
                return
            chunks.append(chunk)
            more = message.get("more_body", False)
        body = b"".join(chunks)
        sent = False

        async def replay() -> dict[str, Any]:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _too_large(self, send: Any, size: str) -> None:
        message = (
            f"request body is {size}; the limit is {self.max_body_bytes:,} bytes "
            "(CTO_MAX_BODY_BYTES): split the request"
        )
        await send_error(send, 413, error_body(message, ["body"], "too_large"))
