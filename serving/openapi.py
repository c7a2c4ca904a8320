"""The OpenAPI document at ``GET /docs.json``, made to say exactly what the service answers.

BentoML generates a document from the endpoint signatures, but it tells a client several things
that are not so: error ``detail`` declared a string (it is a list of ``{loc, msg, type}``), fields
that answer ``null`` declared non-nullable, no 401/413/415/503 answers, nothing about the fields
``moment: after_contact`` (the default) requires, and BentoML's own title, version and
description. This middleware serves BentoML's document with those parts replaced by JSON Schema
generated from the same pydantic models that validate the requests and build the answers
(OpenAPI 3.1, whose schemas are JSON Schema 2020-12), so the two cannot drift apart; schemathesis
checks the result against the running server (tests/integration/test_serving_schemathesis.py).
"""

from __future__ import annotations

import json
from importlib import metadata
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from pydantic.json_schema import models_json_schema

from serving.schemas import (
    REQUIRED_AFTER_CONTACT,
    EventsRequest,
    EventsResponse,
    ScoreBatchRequest,
    ScoreBatchResponse,
    ScoreRequest,
    ScoreResponse,
)

DOC_PATH = "/docs.json"
TITLE = "CTO scoring API"
DESCRIPTION = (
    "Contact-to-Order scoring: the probability that a contact ends in an order, a routing "
    "priority, the drivers behind it (SHAP), drop-off reasons and a next action. Feed events to "
    "`POST /events`; score with `POST /score` or `POST /score_batch`. Errors share one shape: "
    "`{error, detail: [{loc, msg, type}]}`. See docs/api.md and docs/operations.md."
)


class ErrorDetail(BaseModel):
    """Where and why: the path of the offending field, a message, a rule name."""

    model_config = ConfigDict(extra="allow")

    loc: list[str | int] = Field(description="Path of the field ([] for the whole request).")
    msg: str = Field(description="Plain-language reason.")
    type: str = Field(description="The rule that failed.", examples=["missing"])


class ErrorResponse(BaseModel):
    """Every 4xx and 5xx answer."""

    error: str = Field(description="One-line summary.", examples=["models not loaded: ..."])
    detail: list[ErrorDetail] = Field(
        default_factory=list, description="One entry per problem (absent on an unexpected 500)."
    )


class ModelInfoResponse(BaseModel):
    """The serving models."""

    model_config = ConfigDict(extra="allow")

    alias: str = Field(description="Registry alias served.", examples=["champion"])
    loaded_at: str = Field(description="When this set was loaded (UTC, ISO 8601).")
    models: list[dict[str, Any]] = Field(description="One entry per task: name, version, run.")


ERRORS = {
    400: "Invalid request: the fields and rules that failed.",
    401: "Missing or wrong bearer token (when CTO_API_TOKEN is set).",
    413: "Request body larger than CTO_MAX_BODY_BYTES.",
    415: "Body is not application/json.",
    500: "Unexpected server error (logged with its traceback).",
    503: "No model loaded yet, or the worker is overloaded.",
}

# route -> (request model or None, 200 model, error statuses)
ROUTES: dict[str, tuple[type[BaseModel] | None, type[BaseModel], tuple[int, ...]]] = {
    "/score": (ScoreRequest, ScoreResponse, (400, 401, 413, 415, 500, 503)),
    "/score_batch": (ScoreBatchRequest, ScoreBatchResponse, (400, 401, 413, 415, 500, 503)),
    "/events": (EventsRequest, EventsResponse, (400, 401, 413, 415, 500, 503)),
    "/model_info": (None, ModelInfoResponse, (400, 401, 413, 415, 500, 503)),
}

_REF = "#/components/schemas/{model}"

# GET /readyz (serving.probes)
READY = {
    "type": "object",
    "required": ["ready", "models"],
    "properties": {
        "ready": {"const": True},
        "models": {"type": "object", "additionalProperties": {"type": "string"}},
        "not_loaded": {
            "type": "string",
            "description": "A newer champion set was refused (why); the listed one keeps serving.",
        },
        "data_mismatch": {
            "type": "object",
            "additionalProperties": {"type": "string"},
            "description": "Models served on other data than the contract (CTO_ALLOW_OTHER_DATA).",
        },
    },
}
NOT_READY = {
    "type": "object",
    "required": ["ready", "reason"],
    "properties": {"ready": {"const": False}, "reason": {"type": "string"}},
}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": _REF.format(model=name)}


def _all_fields_required(schema: dict[str, Any]) -> None:
    """Answers always carry every field (null where documented): say so."""
    if schema.get("type") == "object" and "properties" in schema:
        schema["required"] = list(schema["properties"])


def _after_contact_rule(contact_path: list[str]) -> dict[str, Any]:
    """JSON Schema for: unless ``moment`` is ``arrival``, the contact's handling columns are
    required (the contact has ended)."""
    required: dict[str, Any] = {
        "required": list(REQUIRED_AFTER_CONTACT),
        "properties": {name: {"not": {"type": "null"}} for name in REQUIRED_AFTER_CONTACT},
    }
    for key in reversed(contact_path):
        if key == "[]":
            required = {"items": required}
        else:
            required = {"properties": {key: required}}
    return {
        "if": {"properties": {"moment": {"const": "arrival"}}, "required": ["moment"]},
        "else": required,
    }


def _schemas(models: list[type[BaseModel]], mode: str) -> dict[str, Any]:
    _, top = models_json_schema([(m, mode) for m in models], ref_template=_REF)  # type: ignore[misc]
    return top.get("$defs", {})


def component_schemas() -> dict[str, Any]:
    """Component schemas of every request, answer and error, named after their models."""
    requests = _schemas([r for r, _, _ in ROUTES.values() if r is not None], "validation")
    answers = _schemas([a for _, a, _ in ROUTES.values()], "serialization")
    for schema in answers.values():
        _all_fields_required(schema)
    errors = _schemas([ErrorResponse], "serialization")
    clash = {n for n in answers if n in requests and answers[n] != requests[n]}
    assert not clash, f"models used in requests and answers with different schemas: {clash}"
    schemas = requests | answers | errors
    schemas["ScoreRequest"].setdefault("allOf", []).append(_after_contact_rule(["contact"]))
    schemas["ScoreBatchRequest"].setdefault("allOf", []).append(
        _after_contact_rule(["items", "[]", "contact"])
    )
    schemas["EventsRequest"]["anyOf"] = [
        {"required": [table], "properties": {table: {"minItems": 1}}}
        for table in ("contacts", "orders", "customers")
    ]
    return schemas


def _version() -> str:
    try:
        return metadata.version("cto-prediction")
    except metadata.PackageNotFoundError:  # running from a Bento without the distribution
        return "0+unknown"


def _operation(
    request: type[BaseModel] | None,
    answer: type[BaseModel],
    statuses: tuple[int, ...],
    auth: bool,
    base: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A POST operation: ``base`` (summary, description, operationId) plus our request body,
    answers and security."""
    operation = dict(base or {})
    # /model_info takes no fields: any JSON object will do.
    body = {"type": "object"} if request is None else _ref(request.__name__)
    operation["requestBody"] = {
        "required": request is not None,
        "content": {"application/json": {"schema": body}},
    }
    error_content = {"application/json": {"schema": _ref("ErrorResponse")}}
    responses: dict[str, Any] = {
        "200": {
            "description": "Answer.",
            "content": {"application/json": {"schema": _ref(answer.__name__)}},
        }
    }
    for status in statuses:
        if status == 401 and not auth:
            continue
        responses[str(status)] = {"description": ERRORS[status], "content": error_content}
    operation["responses"] = responses
    if auth:
        operation["security"] = [{"bearer": []}]
    return operation


READYZ_RESPONSES = {
    "200": {
        "description": "This worker serves models: their versions by task.",
        "content": {"application/json": {"schema": READY}},
    },
    "503": {
        "description": "Not ready (starting, or no champion could be loaded): the reason.",
        "content": {"application/json": {"schema": NOT_READY}},
    },
}

# The hot routes: mounted at /fast on the service's port (serving.hot_routes), and at the root
# of the fast port (CTO_FAST_PORT). Same request, answers and errors as /score and /score_batch.
HOT_ROUTES = ("/score", "/score_batch")
_LEAN = (
    " Served without BentoML's API layer (serving.hot_routes): the same contract as `{route}` "
    "on the service's port."
)


def _components(auth: bool) -> dict[str, Any]:
    components: dict[str, Any] = {"schemas": component_schemas()}
    if auth:
        components["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
    return components


def _hot_operation(doc_path: str, route: str, auth: bool, source: dict[str, Any]) -> dict:
    """The operation of a hot route served at ``doc_path``, described like ``route``'s."""
    request, answer, statuses = ROUTES[route]
    base = {
        "summary": source.get("summary", route),
        "description": (source.get("description") or "") + _LEAN.format(route=route),
        "operationId": "post_" + doc_path.strip("/").replace("/", "_"),
    }
    return _operation(request, answer, statuses, auth, base)


def truthful(doc: dict[str, Any], auth: bool) -> dict[str, Any]:
    """BentoML's document with our schemas, answers, info and security in place, and the hot
    routes mounted at /fast added (BentoML lists only its own endpoints)."""
    doc["openapi"] = "3.1.0"
    doc["info"] = {"title": TITLE, "version": _version(), "description": DESCRIPTION}
    doc["components"] = _components(auth)
    for path, (request, answer, statuses) in ROUTES.items():
        doc["paths"][path]["post"] = _operation(
            request, answer, statuses, auth, doc["paths"][path]["post"]
        )
    for route in HOT_ROUTES:
        source = doc["paths"][route]["post"]
        doc["paths"]["/fast" + route] = {
            "post": _hot_operation("/fast" + route, route, auth, source)
            | {"tags": source.get("tags", [])}
        }
    doc["paths"]["/readyz"]["get"]["responses"] = READYZ_RESPONSES
    return doc


def fast_port_document(auth: bool) -> dict[str, Any]:
    """The OpenAPI document of the fast port (CTO_FAST_PORT): its two hot routes and probes."""
    paths: dict[str, Any] = {
        route: {"post": _hot_operation(route, route, auth, {"summary": route})}
        for route in HOT_ROUTES
    }
    paths["/livez"] = {
        "get": {
            "summary": "This worker's fast server is up.",
            "operationId": "get_livez",
            "responses": {"200": {"description": "Up."}},
        }
    }
    paths["/readyz"] = {
        "get": {
            "summary": "Whether this worker serves models.",
            "operationId": "get_readyz",
            "responses": READYZ_RESPONSES,
        }
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": TITLE + " (fast port)",
            "version": _version(),
            "description": DESCRIPTION,
        },
        "paths": paths,
        "components": _components(auth),
    }


class OpenApiMiddleware:
    """Answers ``GET /docs.json`` with :func:`truthful` applied to BentoML's document."""

    def __init__(self, app: Any, auth: bool) -> None:
        self.app = app
        self.auth = auth
        self._cached: bytes | None = None

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if not _asks_for_the_document(scope):
            await self.app(scope, receive, send)
            return
        if self._cached is None:
            status, body = await _capture(self.app, scope, receive)
            if status != 200:
                await self.app(scope, receive, send)
                return
            self._cached = json.dumps(truthful(json.loads(body), self.auth)).encode()
        await _send_json(send, self._cached)


def _asks_for_the_document(scope: dict[str, Any]) -> bool:
    return scope["type"] == "http" and scope["path"] == DOC_PATH and scope["method"] == "GET"


async def _send_json(send: Any, body: bytes) -> None:
    """Answer 200 with a JSON body already encoded."""
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def _capture(app: Any, scope: dict[str, Any], receive: Any) -> tuple[int, bytes]:
    """Run ``app`` and collect its answer instead of sending it."""
    status = 500
    chunks: list[bytes] = []

    async def collect(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
        elif message["type"] == "http.response.body":
            chunks.append(message.get("body", b""))

    await app(scope, receive, collect)
    return status, b"".join(chunks)


class FastPortDocMiddleware:
    """Answers ``GET /docs.json`` on the fast port with :func:`fast_port_document`."""

    def __init__(self, app: Any, auth: bool) -> None:
        self.app = app
        self._body = json.dumps(fast_port_document(auth)).encode()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if not _asks_for_the_document(scope):
            await self.app(scope, receive, send)
            return
        await _send_json(send, self._body)
