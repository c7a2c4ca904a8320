"""The worker's garbage collector: freeze what loading left alive, keep young collections small.

After a model set loads, :func:`settle` collects once and freezes the heap (``gc.freeze``): the
models, libraries and caches move to a generation the collector never walks again, so a full
collection only walks what requests allocate.

The collector's thresholds stay at Python's defaults (700, 10, 10). Requests leave reference
cycles behind (the server's and the framework's per-request objects): a handful per request, so a
young collection finds a few hundred dead objects and takes well under a millisecond. Raised
thresholds (50,000 for the young generation was tried) let tens of thousands of them pile up and
then free them in one pause: 40 ms of CPU measured on this project's 2-core machine, the longest
pause of a 60 s run (docs/benchmarks.md, docs/api.md "Performance"). Many tiny pauses cost the
same CPU in all and no request waits for them.

:class:`CollectionLog` records every collection (generation, objects freed, CPU time), for tests
and for measuring a worker.
"""

from __future__ import annotations

import gc
import time
from dataclasses import dataclass
from typing import Any


def settle() -> None:
    """Collect once, then move everything alive out of the collector's sight."""
    gc.collect()
    gc.freeze()


@dataclass(frozen=True)
class Collection:
    generation: int
    collected: int
    cpu_seconds: float


class CollectionLog:
    """Records each garbage collection while installed (a ``gc.callbacks`` hook).

    The hook only appends to a list: it may run at any allocation, inside any lock.
    """

    def __init__(self) -> None:
        self.collections: list[Collection] = []
        self._started = 0.0

    def _hook(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = time.thread_time()
            return
        self.collections.append(
            Collection(info["generation"], info["collected"], time.thread_time() - self._started)
        )

    def __enter__(self) -> CollectionLog:
        gc.callbacks.append(self._hook)
        return self

    def __exit__(self, *_: object) -> None:
        gc.callbacks.remove(self._hook)

    def count(self, generation: int) -> int:
        return sum(c.generation == generation for c in self.collections)

    def largest(self) -> int:
        """Most objects freed by one collection (what one pause had to free)."""
        return max((c.collected for c in self.collections), default=0)
