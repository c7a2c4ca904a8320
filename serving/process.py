"""Start and stop the real scoring server (`cto serve`) as a child process: tests, benchmarks, demo."""

from __future__ import annotations

import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def copy_sqlite(source: Path, target: Path) -> None:
    """A consistent copy of a SQLite database (the backup API, safe while others read it)."""
    with sqlite3.connect(source) as src, sqlite3.connect(target) as dst:
        src.backup(dst)


@dataclass
class Server:
    base_url: str
    process: subprocess.Popen
    log_path: Path
    token: str | None
    fast_url: str | None = None  # the fast port (CTO_FAST_PORT), unless off

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    def stop(self) -> None:
        if self.process.poll() is None:
            # The server runs in its own process group (start_new_session): stop it and its workers.
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


def start_server(
    env_overrides: dict[str, str],
    log_path: Path,
    ready_timeout: float = 180.0,
    port: int | None = None,
    wait_for: str = "/readyz",
) -> Server:
    """`cto serve` on a loopback port (a free one by default); returns once ``wait_for`` (a
    probe path) answers 200: /readyz (models loaded) or /livez (the process is up), and the fast
    port too (a free one unless ``CTO_FAST_PORT`` is given; "0": off)."""
    port = port or free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CTO_")}
    # A free fast port, not `cto serve`'s default of port + 1: servers of parallel tests must not
    # meet there.
    env_overrides = {"CTO_FAST_PORT": str(free_port())} | env_overrides
    env |= {"CTO_HOST": "127.0.0.1", "CTO_PORT": str(port)} | env_overrides
    log_file = log_path.open("w")
    process = subprocess.Popen(
        [sys.executable, "-m", "cto.cli", "serve", "--port", str(port), "--host", "127.0.0.1"],
        cwd=REPO,
        env=env,
        stdout=log_file,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    fast_port = env_overrides.get("CTO_FAST_PORT")
    server = Server(
        f"http://127.0.0.1:{port}",
        process,
        log_path,
        env_overrides.get("CTO_API_TOKEN"),
        f"http://127.0.0.1:{fast_port}" if fast_port != "0" else None,
    )
    deadline = time.monotonic() + ready_timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}:\n{server.log_tail()}")
        try:
            urls = [server.base_url] + ([server.fast_url] if server.fast_url else [])
            if all(httpx.get(f"{url}{wait_for}", timeout=2).status_code == 200 for url in urls):
                return server
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    server.stop()
    raise RuntimeError(f"server not ready after {ready_timeout} s:\n{server.log_tail()}")
