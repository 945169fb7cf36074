"""Node status, health and the chain spec."""
from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from .deps import Service
from .schemas import Status

router = APIRouter(tags=["node"])


@router.get("/status", response_model=Status)
def status(service: Service):
    return service.status()


@router.get("/health", responses={503: {"description": "syncing"}})
def health(service: Service):
    if service.network.syncing():
        return JSONResponse({"status": "syncing"}, status_code=503)
    return {"status": "ok", "height": service.chain.tip().height}


@router.get("/spec")
def spec(service: Service):
    return service.spec.to_dict()
