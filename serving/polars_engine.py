"""The Polars engine the service's request-sized queries run on: the in-memory one.

Polars 2.1 runs ``collect()`` and ``collect_all()`` on its streaming engine unless told otherwise
(engine ``"auto"``). That engine keeps a little native memory per query and never gives it back:
from about 15 bytes for a plain select to about 200 for a window (``over``) query. Validating one
/events request of five contacts runs a few dozen queries, so a worker kept ~3.7 KiB per
request, in memory that neither Python's allocator nor glibc's malloc sees (Polars' own
allocator). Under steady /events load a worker grew by 1-2 MiB a minute, without end
(benchmarks/soak.py). The in-memory engine keeps nothing and is about twice as fast on frames of
a few rows, which is all a request holds.

Batch jobs (``cto validate``, ``cto features``) are short-lived processes and choose their engine
per query; this only sets the default inside the long-running service.
"""

from __future__ import annotations

import logging
import os

import polars as pl

log = logging.getLogger("cto.serving")

AFFINITY_VARIABLE = "POLARS_ENGINE_AFFINITY"
SERVICE_ENGINE = "in-memory"


def pin_service_engine() -> str:
    """Make the in-memory engine the default of this process, unless the operator chose one.

    An explicit ``POLARS_ENGINE_AFFINITY`` (other than ``auto``) is kept: docs/operations.md says
    what the streaming engine costs a long-running worker. Returns the engine now in use.
    """
    chosen = os.environ.get(AFFINITY_VARIABLE, "").strip()
    if chosen and chosen != "auto":
        if chosen != SERVICE_ENGINE:
            log.warning(
                "%s=%s: worker memory is measured flat only on the in-memory engine",
                AFFINITY_VARIABLE,
                chosen,
            )
        return chosen
    pl.Config.set_engine_affinity(SERVICE_ENGINE)
    return SERVICE_ENGINE
