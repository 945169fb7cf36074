"""JSON errors: {"error": "<reason-code>", "detail": "..."}, and the OpenAPI document saying so."""
from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

# FastAPI answers a body it cannot decode (e.g. JSON that is not UTF-8) with this 400
_BODY_PARSE_FAILED = "There was an error parsing the body"


class ErrorOut(BaseModel):
    """Every error the API returns."""
    error: str = Field(description="reason code, e.g. malformed, not-found, invalid reasons such as bad-signature")
    detail: str = Field("", description="a human explanation")


class ApiError(Exception):
    def __init__(self, status: int, code: str, detail: str = "", headers: dict[str, str] | None = None):
        self.status, self.code, self.detail, self.headers = status, code, detail, headers


def error_response(status: int, code: str, detail: str = "", *, headers: dict[str, str] | None = None,
                   **extra) -> JSONResponse:
    return JSONResponse({"error": code, "detail": detail, **extra}, status_code=status, headers=headers)


def describe_validation(errors: list[dict], limit: int = 3) -> str:
    """``query.start: Input should be greater than or equal to 0``, not a Python repr."""
    parts = []
    for e in errors[:limit]:
        loc = ".".join(str(x) for x in e.get("loc", ()) if x != "body" or len(e.get("loc", ())) == 1)
        parts.append(f"{loc}: {e.get('msg', 'invalid')}" if loc else str(e.get("msg", "invalid")))
    more = len(errors) - limit
    return "; ".join(parts) + (f" (and {more} more)" if more > 0 else "")


def allowed_methods(request: Request) -> str:
    """Every method some route serves at this path. Starlette's 405 names only the first route whose
    path matched (``GET /blocks``), not ``POST /blocks`` declared beside it. Included routers are
    walked (FastAPI wraps them; our routers are included without a prefix)."""
    path, methods = request.url.path, set()

    def walk(routes) -> None:
        for route in routes:
            regex = getattr(route, "path_regex", None)
            if getattr(route, "methods", None) and regex is not None and regex.match(path):
                methods.update(route.methods)
            inner = getattr(getattr(route, "original_router", None), "routes", None)
            if inner is not None:
                walk(inner)

    walk(request.app.router.routes)
    return ", ".join(sorted(methods))


def install(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(_req: Request, exc: ApiError):
        return error_response(exc.status, exc.code, exc.detail, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(_req: Request, exc: RequestValidationError):
        return error_response(422, "malformed", describe_validation(list(exc.errors())))

    @app.exception_handler(StarletteHTTPException)
    async def _http(_req: Request, exc: StarletteHTTPException):
        if exc.status_code == 400 and exc.detail == _BODY_PARSE_FAILED:
            return error_response(422, "malformed", "the request body is not valid JSON (UTF-8)")
        code = {404: "not-found", 405: "method-not-allowed", 413: "too-large"}.get(exc.status_code, "http-error")
        headers = getattr(exc, "headers", None)
        if exc.status_code == 405:
            headers = {**(headers or {}), "Allow": allowed_methods(_req)}
        return error_response(exc.status_code, code, str(exc.detail), headers=headers)
