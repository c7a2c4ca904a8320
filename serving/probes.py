"""``GET /readyz`` as JSON: whether this worker serves models, which, and if not, why.

BentoML's built-in probe answers plain text ("Service is not ready because .__is_ready__()
returns False."), which tells an operator nothing. The service records its state here when it
loads (or fails to load) a model set; the middleware answers the probe from that record:

- ``200 {"ready": true, "models": {"conversion-arrival": "3", ...}}``, plus ``"not_loaded": reason``
  while a newer champion set was refused and the old one keeps serving, and ``"data_mismatch":
  {task: difference}`` for models served on other data (``CTO_ALLOW_OTHER_DATA``)
- ``503 {"ready": false, "reason": "models not loaded: no model with alias 'champion' ..."}``

Until the service has started, the record says "starting".
"""

from __future__ import annotations

import json
import threading
from typing import Any

READYZ_PATH = "/readyz"


class Readiness:
    """This worker's serving state (one per process; written by the service, read per probe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._body = {"ready": False, "reason": "starting: models not loaded yet"}

    def serving(self, models: dict[str, str], data_mismatch: dict[str, str] | None = None) -> None:
        with self._lock:
            self._body = {"ready": True, "models": dict(models)}
            if data_mismatch:
                self._body["data_mismatch"] = dict(data_mismatch)

    def refused(self, reason: str) -> None:
        """A newer set could not be loaded: say why, next to the set that keeps serving."""
        with self._lock:
            if self._body["ready"]:
                self._body = {**self._body, "not_loaded": reason}
            else:
                self._body = {"ready": False, "reason": reason}

    def not_serving(self, reason: str) -> None:
        with self._lock:
            self._body = {"ready": False, "reason": reason}

    def answer(self) -> tuple[int, bytes]:
        with self._lock:
            body = self._body
        return (200 if body["ready"] else 503), json.dumps(body).encode()


READINESS = Readiness()


class ReadyzMiddleware:
    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"] != READYZ_PATH or scope["method"] != "GET":
            await self.app(scope, receive, send)
            return
        status, body = READINESS.answer()
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"cache-control", b"no-store"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
