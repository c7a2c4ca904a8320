"""How the service process gets its settings: environment variables (``CTO_*``).

``bentoml serve`` imports :mod:`serving.service` in fresh worker processes, so every setting the
service needs is passed as an environment variable; relative SQLite paths are made absolute first
because the server may run from another working directory.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from features.settings import Settings


def absolute_sqlite_url(url: str) -> str:
    """``sqlite:///events.db`` -> ``sqlite:////abs/path/events.db``; other URLs unchanged."""
    prefix = "sqlite:///"
    if not url.startswith(prefix) or url.startswith(prefix + "/") or url == "sqlite:///:memory:":
        return url
    return prefix + str(Path(url.removeprefix(prefix)).resolve())


def server_environment(settings: Settings, base: Mapping[str, str]) -> dict[str, str]:
    """The environment for the server process: ``base`` plus every setting as ``CTO_<NAME>``."""
    env = dict(base)
    for name, value in settings.model_dump().items():
        key = f"CTO_{name.upper()}"
        if value is None:
            env.pop(key, None)
        elif name in ("tracking_uri", "event_store_url"):
            env[key] = absolute_sqlite_url(str(value))
        elif isinstance(value, Path):
            env[key] = str(value.resolve())
        else:
            env[key] = str(value)
    env.setdefault("BENTOML_DO_NOT_TRACK", "True")
    # glibc gives every thread that allocates its own malloc arena (up to 8 per core); the worker's
    # request threads then keep freed memory in many arenas and its size creeps up for hours.
    # Two arenas keep it bounded (Python allocates under the GIL anyway).
    env.setdefault("MALLOC_ARENA_MAX", "2")
    return env
