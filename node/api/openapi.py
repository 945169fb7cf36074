"""The published OpenAPI document matches what the API does: every error body is ``ErrorOut``
(FastAPI would publish its own array-shaped 422 ``HTTPValidationError``, which this API never sends), and
the request bodies given to ``install`` are published exactly as given: FastAPI's OpenAPI model reads every
bound as a float (a maximum of 2^63 - 1 became 2^63), and the body of ``POST /blocks`` depends on this
node's chain spec."""
from __future__ import annotations

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from .errors import ErrorOut

_REF = {"$ref": "#/components/schemas/ErrorOut"}


def install(app: FastAPI, request_bodies: dict[tuple[str, str], dict] | None = None) -> None:
    """``request_bodies``: (path, method) -> the request body to publish instead of the route's."""
    def openapi() -> dict:
        if app.openapi_schema:
            return app.openapi_schema
        doc = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
        schemas = doc.setdefault("components", {}).setdefault("schemas", {})
        schemas.pop("HTTPValidationError", None)
        schemas.pop("ValidationError", None)
        schemas["ErrorOut"] = ErrorOut.model_json_schema()
        for item in doc.get("paths", {}).values():
            for op in item.values():
                for status, resp in op.get("responses", {}).items():
                    if status[:1] in "45":
                        resp["content"] = {"application/json": {"schema": _REF}}
                        if status == "422":
                            resp["description"] = "malformed request (error: malformed)"
        for (path, method), body in (request_bodies or {}).items():
            doc["paths"][path][method]["requestBody"] = body
        app.openapi_schema = doc
        return doc

    app.openapi = openapi
