"""The published OpenAPI document matches what the API does: every error body is ``ErrorOut``
(FastAPI would publish its own array-shaped 422 ``HTTPValidationError``, which this API never sends)."""
from __future__ import annotations

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from .errors import ErrorOut

_REF = {"$ref": "#/components/schemas/ErrorOut"}


def install(app: FastAPI) -> None:
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
        app.openapi_schema = doc
        return doc

    app.openapi = openapi
