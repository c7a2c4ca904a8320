"""The hot scoring routes as a plain ASGI app, mounted in the BentoML service at ``/fast``.

``POST /fast/score`` and ``POST /fast/score_batch`` take and answer exactly what ``/score`` and
``/score_batch`` do (the same pydantic models, the same scoring code, the same errors), without
BentoML's per-request API machinery: a routing engine that calls thousands of times a second gets
the lean path, everything else (lifecycle, /readyz, /metrics, auth, `bentoml build`) stays the
service's. benchmarks/serving.py measures both paths in the same run.

The same routes are also served on a port of their own (``CTO_FAST_PORT``, :func:`port_app`,
serving.fast_server): there not even BentoML's server middleware (tracing, metrics, timeouts,
concurrency limits) sits in front of them.

The apps reach the service instance through ``app.state.service``, set by the service's
``__init__`` in each worker process.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ValidationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from features.errors import CTOError
from serving.schemas import ScoreBatchRequest, ScoreRequest

_JSON = "application/json"


def error_response(status: int, message: str, field: str | None = None) -> JSONResponse:
    """The same shape as BentoML's validation errors: ``error`` plus ``detail`` with a loc."""
    detail = [{"loc": field.split(".") if field else [], "msg": message, "type": "value_error"}]
    return JSONResponse({"error": message, "detail": detail}, status_code=status)


def _invalid(exc: ValidationError) -> JSONResponse:
    detail = [
        {"loc": [str(part) for part in error["loc"]], "msg": error["msg"], "type": error["type"]}
        for error in exc.errors(include_url=False, include_input=False)
    ]
    # As BentoML words it: "1 validation error for ScoreRequest", the fields in `detail`.
    return JSONResponse({"error": str(exc).splitlines()[0], "detail": detail}, status_code=400)


async def _parse(request: Request, model: type[BaseModel]) -> BaseModel | JSONResponse:
    try:
        return model.model_validate_json(await request.body())
    except ValidationError as exc:
        return _invalid(exc)


def _answer(model: BaseModel) -> Response:
    return Response(model.model_dump_json(), media_type=_JSON)


async def _scored(
    request: Request, model: type[BaseModel], scorer: Any, *, off_loop: bool
) -> Response:
    """Parse the body as ``model``, score it with ``scorer(bundle, parsed, store, windows)`` and
    answer; 400 for a body that does not parse or a contact the scorer refuses, 503 before the
    models are loaded."""
    service: Any = request.app.state.service
    parsed = await _parse(request, model)
    if isinstance(parsed, Response):
        return parsed
    bundle = service.bundle  # read once: a hot reload may swap it
    if bundle is None:
        return error_response(503, f"models not loaded: {service.last_error}")
    args = (bundle, parsed, service.store, service.windows)
    try:
        if off_loop:
            from anyio import to_thread

            answer = await to_thread.run_sync(scorer, *args)
        else:
            answer = scorer(*args)
    except CTOError as exc:
        return error_response(400, str(exc))
    return _answer(answer)


async def score(request: Request) -> Response:
    from serving.scoring import score_one

    # A state lookup and a predict take a fraction of a millisecond: on the event loop.
    return await _scored(request, ScoreRequest, score_one, off_loop=False)


async def score_batch(request: Request) -> Response:
    from serving.scoring import score_batch as score_many

    # Thousands of contacts take tens of milliseconds: off the event loop.
    return await _scored(request, ScoreBatchRequest, score_many, off_loop=True)


async def livez(_request: Request) -> Response:
    return Response(b"", status_code=200)


def _routes() -> list[Route]:
    return [
        Route("/score", score, methods=["POST"]),
        Route("/score_batch", score_batch, methods=["POST"]),
    ]


app = Starlette(routes=_routes())


def port_app(service: Any, api_token: str | None, max_body_bytes: int) -> Any:
    """The ASGI app of the fast port: the hot routes plus GET /livez, /readyz and /docs.json (an
    OpenAPI document of this port), behind the same bearer token and body checks as the
    service's port."""
    from serving.auth import BearerTokenMiddleware
    from serving.guard import RequestGuardMiddleware
    from serving.openapi import FastPortDocMiddleware
    from serving.probes import ReadyzMiddleware

    inner = Starlette(routes=[*_routes(), Route("/livez", livez, methods=["GET"])])
    inner.state.service = service
    wrapped: Any = FastPortDocMiddleware(ReadyzMiddleware(inner), auth=api_token is not None)
    wrapped = BearerTokenMiddleware(wrapped, token=api_token)
    return RequestGuardMiddleware(wrapped, max_body_bytes=max_body_bytes)
