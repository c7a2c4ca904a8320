"""`cto serve`: start the BentoML scoring service (serving.service:CTOService)."""

from __future__ import annotations

import argparse
import errno
import socket
import time

from features.errors import CTOError

# Workers of a server that was just killed exit within milliseconds (serving.supervision); a
# restart waits this long for the port before it reports it as taken.
PORT_WAIT_SECONDS = 3.0

HELP = "Start the scoring service: /score, /score_batch, /events, /livez, /readyz, /metrics."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--host", default=None, help="Address to bind (default: CTO_HOST, 127.0.0.1)."
    )
    parser.add_argument("--port", type=int, default=None, help="Port (default: CTO_PORT, 3000).")
    parser.add_argument(
        "--fast-port",
        type=int,
        default=None,
        help="Also serve POST /score and /score_batch on this port, without BentoML's "
        "per-request middleware (default: CTO_FAST_PORT, else the --port + 1; 0: off).",
    )
    parser.add_argument(
        "--workers", type=int, default=None, help="Worker processes (default: CTO_WORKERS, 1)."
    )
    parser.add_argument(
        "--tracking-uri", default=None, help="MLflow tracking URI (default: CTO_TRACKING_URI)."
    )
    parser.add_argument(
        "--event-store-url",
        default=None,
        help="Event store: SQLite file or database URL (default: CTO_EVENT_STORE_URL).",
    )
    parser.add_argument(
        "--alias",
        default=None,
        help="Registry alias to serve (default: CTO_CHAMPION_ALIAS, champion).",
    )


def check_port_free(
    host: str, port: int, wait_seconds: float = PORT_WAIT_SECONDS, option: str = "--port / CTO_PORT"
) -> None:
    """Fail with a clear message, before anything loads, when another process listens on the port."""
    deadline = time.monotonic() + wait_seconds
    while True:
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
            # The server binds with SO_REUSEADDR too: only a live listener counts as "in use".
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((host, port))
                return
            except OSError as exc:
                if exc.errno != errno.EADDRINUSE:
                    raise CTOError(f"cannot bind {host}:{port}: {exc.strerror}") from None
        if time.monotonic() >= deadline:
            raise CTOError(
                f"port {port} on {host} is in use by another process (a server still running?): "
                f"stop it, or choose another port with {option}"
            )
        time.sleep(0.2)


def default_fast_port(port: int) -> int:
    """The fast port when none is set: the one after the service's (the one before at the top)."""
    return port + 1 if port < 65535 else port - 1


def run(args: argparse.Namespace) -> int:
    import os
    import sys
    from pathlib import Path

    from features.settings import get_settings
    from serving.models import check_tracking_store
    from serving.service_config import absolute_sqlite_url, server_environment

    overrides = {
        "host": args.host,
        "port": args.port,
        "fast_port": args.fast_port,
        "workers": args.workers,
        "tracking_uri": args.tracking_uri,
        "event_store_url": args.event_store_url,
        "champion_alias": args.alias,
    }
    settings = get_settings(**{k: v for k, v in overrides.items() if v is not None})
    derived = settings.fast_port is None
    if derived:  # on by default: a routing engine gets the lean path without knowing of it
        settings = get_settings(
            **{k: v for k, v in overrides.items() if v is not None},
            fast_port=default_fast_port(settings.port),
        )
    check_tracking_store(absolute_sqlite_url(settings.tracking_uri))
    check_port_free(settings.host, settings.port)
    if settings.fast_port:
        # The workers share this port (SO_REUSEPORT): another listener there would share it too.
        option = (
            "--fast-port (by default the --port + 1; --fast-port 0 turns it off)"
            if derived
            else "--fast-port / CTO_FAST_PORT"
        )
        check_port_free(settings.host, settings.fast_port, option=option)
    env = server_environment(settings, os.environ)
    # exec keeps this pid: the workers check they were started by it (serving.supervision).
    env["CTO_SUPERVISOR_PID"] = str(os.getpid())
    repo = Path(__file__).resolve().parents[2]
    command = [
        sys.executable,
        "-m",
        "bentoml",
        "serve",
        "serving.service:CTOService",
        "--host",
        settings.host,
        "--port",
        str(settings.port),
        "--working-dir",
        str(repo),
    ]
    fast = (
        f", fast port (POST /score, /score_batch) on http://{settings.host}:{settings.fast_port}"
        if settings.fast_port
        else ", fast port off"
    )
    print(
        f"serving on http://{settings.host}:{settings.port}{fast} "
        f"(models {settings.model_prefix}-*@{settings.champion_alias} from {env['CTO_TRACKING_URI']}, "
        f"events in {env['CTO_EVENT_STORE_URL']})",
        file=sys.stderr,
        flush=True,
    )
    # exec: the server keeps this process id, so a supervisor (or a test) stops it directly.
    os.execve(sys.executable, command, env)
    return 0  # pragma: no cover - execve does not return
