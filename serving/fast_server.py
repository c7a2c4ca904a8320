"""The fast port: each worker serves the hot routes on ``CTO_FAST_PORT`` beside BentoML's server.

Why: BentoML's server puts OpenTelemetry, Prometheus metrics, a per-request timeout task and a
concurrency limiter in front of every route, mounted ASGI apps included; on a 2-core machine that
stack alone costs more than scoring (docs/benchmarks.md). A routing engine that calls thousands of
times a second can use this port instead: a plain uvicorn server for the app of
serving.hot_routes.port_app, running on the worker's own event loop, so it shares the loaded
models, their hot reload, the online store connection and the worker's lifetime (a worker that
dies takes its listener with it). BentoML keeps everything else: lifecycle, /events, /metrics,
/docs.json, `bentoml build`.

Every worker binds the port with SO_REUSEPORT: the kernel spreads new connections over the
workers. `cto serve` checks first that no other process listens there.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Iterator
from typing import Any

import uvicorn

log = logging.getLogger("cto.serving")
BACKLOG = 2048


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        # BentoML's server in the same process owns the signals and stops this one on shutdown.
        yield


def listening_socket(host: str, port: int) -> socket.socket:
    """A listener shared by the workers (SO_REUSEPORT)."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
        sock.listen(BACKLOG)
    except OSError:
        sock.close()
        raise
    return sock


class FastServer:
    """uvicorn serving ``app`` on ``host:port`` as a task on the running event loop."""

    def __init__(self, app: Any, host: str, port: int) -> None:
        self.app = app
        self.host = host
        self.port = port
        self._server: _Server | None = None
        self._task: asyncio.Task | None = None

    async def start(self) -> None:
        sock = listening_socket(self.host, self.port)
        config = uvicorn.Config(
            self.app,
            log_config=None,  # the worker's logging is BentoML's
            access_log=False,
            server_header=False,
            date_header=False,
            lifespan="off",
            timeout_keep_alive=60,
        )
        self._server = _Server(config)
        self._task = asyncio.get_running_loop().create_task(self._server.serve(sockets=[sock]))
        while not self._server.started and not self._task.done():
            await asyncio.sleep(0.01)
        if self._task.done():
            self._task.result()  # raises why it stopped
        log.info("fast port: POST /score, /score_batch on http://%s:%d", self.host, self.port)

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
