"""The BentoML scoring service: ``bentoml serve serving.service:CTOService`` (or ``cto serve``).

Endpoints (docs/api.md): POST /score, /score_batch, /events; GET /livez, /readyz, /metrics
(built in). Settings come from ``CTO_*`` environment variables (features.settings).

Models load from the MLflow registry by alias when the service starts; a background thread asks
the registry every ``CTO_MODEL_POLL_SECONDS`` whether the alias points at new versions, loads
them beside the serving ones and swaps the bundle in one assignment, so requests never wait and
never see a half-loaded set. /readyz answers 503 until a bundle is loaded.

The hot routes are also served by a plain ASGI app mounted at ``/fast`` (serving.hot_routes): the
same contract and code without BentoML's per-request API machinery (benchmarks/serving.py
measures both). After a model set is loaded the heap is frozen (serving.heap): the collector
then never walks the models and libraries again, and a full collection no longer pauses a
request for hundreds of milliseconds.
"""

from __future__ import annotations

from serving import supervision

# A worker must not outlive the server process (serving.supervision): asked for first, before
# the imports and the model load that take seconds.
if supervision.is_worker_process():
    supervision.exit_with_parent(supervision.supervisor_pid())

import logging
import threading
import time
from typing import Any

import bentoml

from features.errors import CTOError
from features.settings import get_settings
from serving.auth import BearerTokenMiddleware
from serving.guard import RequestGuardMiddleware
from serving.hot_routes import app as hot_routes
from serving.hot_routes import error_response as _error
from serving.openapi import OpenApiMiddleware
from serving.probes import READINESS, ReadyzMiddleware
from serving.schemas import (
    EventsRequest,
    EventsResponse,
    ScoreBatchRequest,
    ScoreBatchResponse,
    ScoreRequest,
    ScoreResponse,
)

log = logging.getLogger("cto.serving")
PRUNE_EVERY_SECONDS = 3600.0
# Regular expressions searched in the request URL (OpenTelemetry's ExcludeList).
UNTRACED_ROUTES = (
    r"/(fast/)?score(_batch)?$",
    r"/(livez|readyz|healthz|metrics)$",
)


def _service_config() -> dict[str, Any]:
    # Read when the service class is defined: the server imports this module in each worker.
    settings = get_settings()
    return {
        "name": "cto",
        "workers": settings.workers,
        # Sync endpoints run in this many threads per worker: an fsync on /events or a slow
        # history read does not stall scoring.
        "threads": 4,
        "traffic": {"timeout": 60, "max_concurrency": 256},
        # Per-request access logs cost time and disk at thousands of requests per second.
        "logging": {"access": {"enabled": False}},
        "http": {"cors": {"enabled": False}},
        # OpenTelemetry's middleware costs about a third of a scoring request's server time, even
        # with tracing off (BentoML's default sample rate is 0): the scoring routes and the probes
        # skip it; /events, /model_info and the rest are traced when tracing is configured.
        "tracing": {"excluded_urls": list(UNTRACED_ROUTES)},
    }


@bentoml.asgi_app(hot_routes, path="/fast")
@bentoml.service(**_service_config())
class CTOService:
    """Contact-to-Order scoring: conversion probability, priority, drop-off reasons, next action."""

    def __init__(self) -> None:
        from serving.logs import install_client_error_filter
        from serving.models import check_tracking_store
        from serving.polars_engine import pin_service_engine
        from serving.rules import ActionCosts
        from serving.scoring import FeatureWindows
        from serving.store import EventStore

        install_client_error_filter()
        # Before any request: Polars' default (streaming) engine keeps memory per query.
        pin_service_engine()
        self.settings = get_settings()
        check_tracking_store(self.settings.tracking_uri)
        self.windows = FeatureWindows(
            self.settings.journey_gap_days,
            self.settings.horizon_days,
            ActionCosts.from_settings(self.settings),
        )
        self.store = EventStore(self.settings.event_store_url, self.settings.history_days)
        self._bundle = None
        self._last_error: str | None = None
        self._failed_versions: dict[str, str] | None = None
        self._swap_lock = threading.Lock()
        self._stop = threading.Event()
        self._fast_server: Any = None
        hot_routes.state.service = self
        self._reload()
        self._poller = threading.Thread(
            target=self._poll_registry, name="cto-model-poll", daemon=True
        )
        self._poller.start()

    # ------------------------------------------------------------------ models

    def _reload(self) -> bool:
        """Load the champion versions if they differ from the serving ones; True when swapped.

        A set that failed to load is not tried again (nor downloaded again) until the alias
        moves; the serving set stays. A worker that starts with no loadable champion falls back
        to the versions this service last served, and says so in /readyz and the log.
        """
        from serving.models import champion_versions, load_bundle

        try:
            versions = champion_versions(self.settings)
        except Exception as exc:  # the registry may be briefly unavailable: keep serving
            self._failed(f"registry unavailable ({type(exc).__name__}: {exc})")
            return False
        current = self._bundle
        if current is not None and current.versions() == versions:
            if self._last_error is not None:  # the alias is back on the serving set: all is well
                self._last_error, self._failed_versions = None, None
                READINESS.serving(current.versions(), current.data_mismatches())
            return False
        if versions == self._failed_versions:
            return False
        try:
            bundle = load_bundle(self.settings, versions)
        except Exception as exc:
            self._failed_versions = versions
            reason = str(exc) if isinstance(exc, CTOError) else f"{type(exc).__name__}: {exc}"
            self._failed(reason)
            if self._bundle is None:
                self._fall_back(versions, reason)
            return False
        self._swap(bundle)
        return True

    def _failed(self, reason: str) -> None:
        if reason != self._last_error:  # one line per new failure, not one per poll
            serving = self._bundle.versions() if self._bundle is not None else None
            log.warning("models not loaded: %s; serving %s", reason, serving or "nothing")
        self._last_error = reason
        READINESS.refused(f"models not loaded: {reason}")

    def _fall_back(self, failed: dict[str, str], reason: str) -> None:
        from serving.models import load_bundle

        last = self.store.last_served(self.settings.champion_alias)
        if not last or last == failed:
            return
        try:
            bundle = load_bundle(self.settings, last)
        except Exception as exc:
            log.warning("the last served versions %s do not load either: %s", last, exc)
            return
        log.warning(
            "%s %s cannot be loaded (%s): serving the last versions this service loaded, %s",
            self.settings.champion_alias,
            failed,
            reason,
            last,
        )
        self._swap(bundle, record=False)
        self._last_error, self._failed_versions = reason, failed
        READINESS.refused(f"models not loaded: {reason}")

    def _swap(self, bundle: Any, record: bool = True) -> None:
        with self._swap_lock:
            self._bundle = bundle  # one assignment: requests see the old or the new set
        self._last_error = None
        self._failed_versions = None
        READINESS.serving(bundle.versions(), bundle.data_mismatches())
        if record:
            try:
                self.store.record_served(self.settings.champion_alias, bundle.versions())
            except Exception as exc:  # a read-only store must not stop serving
                log.warning("could not record the served versions: %s", exc)
        if self.settings.gc_tuning:
            from serving import heap

            heap.settle()
        log.info("serving %s", bundle.versions())

    @property
    def bundle(self) -> Any:
        """The serving model set (None until loaded)."""
        return self._bundle

    @property
    def last_error(self) -> str | None:
        return self._last_error

    def _poll_registry(self) -> None:
        last_prune = 0.0
        while not self._stop.wait(self.settings.model_poll_seconds):
            self._reload()
            # The history window is also a retention limit: drop what no score can read any more.
            if time.monotonic() - last_prune >= PRUNE_EVERY_SECONDS:
                last_prune = time.monotonic()
                try:
                    deleted = self.store.prune()
                    if any(deleted.values()):
                        log.info(
                            "pruned events older than %d days: %s", self.store.history_days, deleted
                        )
                except Exception:
                    log.exception("pruning the event store failed")

    @bentoml.on_startup
    async def _start_fast_port(self) -> None:
        """The hot routes on CTO_FAST_PORT too, when set and not 0 (serving.fast_server)."""
        if not self.settings.fast_port:
            return
        from serving.fast_server import FastServer
        from serving.hot_routes import port_app

        app = port_app(self, self.settings.api_token, self.settings.max_body_bytes)
        self._fast_server = FastServer(app, self.settings.host, self.settings.fast_port)
        await self._fast_server.start()

    @bentoml.on_shutdown
    def _shutdown(self) -> None:
        self._stop.set()
        if self._fast_server is not None:
            self._fast_server.stop()
        self.store.close()

    def __is_ready__(self) -> bool:
        return self._bundle is not None

    # ------------------------------------------------------------------ endpoints

    @bentoml.api(route="/score")
    async def score(self, request: ScoreRequest, /) -> ScoreResponse:
        """Score one contact: conversion probability, priority, drivers; after contact also the
        drop-off reasons, next action and expected contacts to order."""
        from serving.scoring import score_one

        bundle = self._bundle
        if bundle is None:
            return _error(503, f"models not loaded: {self._last_error}")  # type: ignore[return-value]
        # A state lookup and a predict take a fraction of a millisecond: answered on the event
        # loop, without a thread hop or batching.
        try:
            return score_one(bundle, request, self.store, self.windows)
        except CTOError as exc:
            return _error(400, str(exc))  # type: ignore[return-value]

    @bentoml.api(route="/score_batch")
    def score_batch(self, request: ScoreBatchRequest, /) -> ScoreBatchResponse:
        """Score many contacts at one moment; answers come ordered by priority (a work queue)."""
        from serving.scoring import score_batch

        bundle = self._bundle
        if bundle is None:
            return _error(503, f"models not loaded: {self._last_error}")  # type: ignore[return-value]
        try:
            return score_batch(bundle, request, self.store, self.windows)
        except CTOError as exc:
            return _error(400, str(exc))  # type: ignore[return-value]

    @bentoml.api(route="/events")
    def events(self, request: EventsRequest, /) -> EventsResponse:
        """Append contacts, orders and customers to the event store; rejected rows come back
        with their reasons. Accepted rows are committed before the answer."""
        from serving.events import ingest

        try:
            return ingest(
                self.store, request, max_clock_skew_seconds=self.settings.max_clock_skew_seconds
            )
        except CTOError as exc:
            return _error(400, str(exc))  # type: ignore[return-value]

    @bentoml.api(route="/model_info")
    def model_info(self) -> dict:
        """The serving models: names, versions, alias, feature set and test metrics."""
        bundle = self._bundle
        if bundle is None:
            return _error(503, f"models not loaded: {self._last_error}")  # type: ignore[return-value]
        return {
            "alias": self.settings.champion_alias,
            "loaded_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(bundle.loaded_at)),
            "models": [
                {
                    "task": m.task,
                    "name": m.name,
                    "version": m.version,
                    "run_id": m.run_id,
                    "feature_set": {
                        k: (m.card.get("feature_set") or {}).get(k)
                        for k in ("name", "version", "digest")
                    },
                    "features": len(m.feature_names),
                    "class_names": list(m.class_names) if m.class_names else None,
                    "test_metrics": (m.card.get("test_metrics") or {}).get("model"),
                    "rates": m.rates is not None,
                }
                for m in bundle.models.values()
            ],
        }


# Auth first (an unauthenticated client learns nothing about limits), then the body checks.
CTOService.add_asgi_middleware(BearerTokenMiddleware, token=get_settings().api_token)
CTOService.add_asgi_middleware(ReadyzMiddleware)
CTOService.add_asgi_middleware(OpenApiMiddleware, auth=get_settings().api_token is not None)
CTOService.add_asgi_middleware(RequestGuardMiddleware, max_body_bytes=get_settings().max_body_bytes)
