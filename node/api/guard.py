"""Dependencies guarding the write endpoints: client bans and per-client rate limits (node/admission.py)."""
from __future__ import annotations

import math

from fastapi import Depends, Request

from .deps import Service
from .errors import ApiError

REFUSALS = {403: {"description": "`banned`: this client sent an invalid block"},
            429: {"description": "`rate-limited`: too many requests from this client; see Retry-After"}}


def client_host(request: Request) -> str:
    return request.client.host if request.client else ""


def write_guard(kind: str):
    """``dependencies=[write_guard("blocks")]``: refuse banned or over-eager clients before the body is read."""
    async def guard(request: Request, service: Service) -> None:
        refusal = service.admission.refuse(client_host(request), kind)
        if refusal is not None:
            status, code, detail, retry = refusal
            raise ApiError(status, code, detail, headers={"Retry-After": str(max(1, math.ceil(retry)))})
    return Depends(guard)


def busy(detail: str) -> ApiError:
    return ApiError(503, "busy", detail, headers={"Retry-After": "1"})
