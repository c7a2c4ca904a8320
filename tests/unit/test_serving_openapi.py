"""The OpenAPI documents: the hot routes are described exactly as the routes they copy."""

from __future__ import annotations

import copy

from serving.openapi import HOT_ROUTES, ROUTES, fast_port_document, truthful


def _bentoml_like_document() -> dict:
    """The parts of BentoML's generated document that :func:`truthful` rewrites."""
    paths = {
        route: {"post": {"summary": route, "operationId": f"op{route}", "tags": ["Service APIs"]}}
        for route in ROUTES
    }
    paths["/readyz"] = {"get": {"responses": {"200": {"description": "plain text"}}}}
    return {"openapi": "3.0.2", "info": {"title": "cto"}, "paths": paths}


def test_the_mounted_hot_routes_are_in_the_service_document():
    for auth in (False, True):
        doc = truthful(copy.deepcopy(_bentoml_like_document()), auth)
        for route in HOT_ROUTES:
            mounted, api = doc["paths"]["/fast" + route]["post"], doc["paths"][route]["post"]
            assert mounted["requestBody"] == api["requestBody"]
            assert mounted["responses"] == api["responses"]
            assert ("security" in mounted) is auth and mounted.get("security") == api.get(
                "security"
            )
            assert mounted["operationId"] != api["operationId"]
        operation_ids = [
            op["operationId"]
            for p in doc["paths"].values()
            for op in p.values()
            if "operationId" in op
        ]
        assert len(operation_ids) == len(set(operation_ids))


def test_the_fast_port_document_lists_what_the_fast_port_serves():
    service = truthful(copy.deepcopy(_bentoml_like_document()), True)
    doc = fast_port_document(True)
    assert doc["openapi"] == "3.1.0"
    assert set(doc["paths"]) == {"/score", "/score_batch", "/livez", "/readyz"}
    for route in HOT_ROUTES:
        assert (
            doc["paths"][route]["post"]["requestBody"]
            == service["paths"][route]["post"]["requestBody"]
        )
        assert (
            doc["paths"][route]["post"]["responses"] == service["paths"][route]["post"]["responses"]
        )
    assert (
        doc["paths"]["/readyz"]["get"]["responses"]
        == service["paths"]["/readyz"]["get"]["responses"]
    )
    assert doc["components"] == service["components"]
    assert "401" not in fast_port_document(False)["paths"]["/score"]["post"]["responses"]
