"""`cto serve`: start the BentoML scoring service (serving.service:CTOService)."""

from __future__ import annotations

import argparse

HELP = "Start the scoring service: /score, /score_batch, /events, /livez, /readyz, /metrics."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--host", default=None, help="Address to bind (default: CTO_HOST, 127.0.0.1)."
    )
    parser.add_argument("--port", type=int, default=None, help="Port (default: CTO_PORT, 3000).")
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


def run(args: argparse.Namespace) -> int:
    import os
    import sys
    from pathlib import Path

    from features.settings import get_settings
    from serving.service_config import server_environment

    overrides = {
        "host": args.host,
        "port": args.port,
        "workers": args.workers,
        "tracking_uri": args.tracking_uri,
        "event_store_url": args.event_store_url,
        "champion_alias": args.alias,
    }
    settings = get_settings(**{k: v for k, v in overrides.items() if v is not None})
    env = server_environment(settings, os.environ)
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
    print(
        f"serving on http://{settings.host}:{settings.port} "
        f"(models {settings.model_prefix}-*@{settings.champion_alias} from {env['CTO_TRACKING_URI']}, "
        f"events in {env['CTO_EVENT_STORE_URL']})",
        file=sys.stderr,
        flush=True,
    )
    # exec: the server keeps this process id, so a supervisor (or a test) stops it directly.
    os.execve(sys.executable, command, env)
    return 0  # pragma: no cover - execve does not return
