"""Node status, health and the chain spec."""
from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from .deps import Service
from .schemas import Status

router = APIRouter(tags=["node"])


@router.get("/status", response_model=Status)
def status(service: Service):
    """The node at a glance: chain, tip and its accuracy, next difficulty, peers, sync progress,
    mining (with the search in progress), the last block's age and this node's miner key."""
    return service.status()


@router.get("/health", responses={
    200: {"description": "`{\"status\": \"ok\", \"height\": ...}`: the node serves its chain and stores new blocks"},
    503: {"description": "`status` says why: `syncing` (catching up with a peer, or a peer has claimed more work "
                         "than our tip for a few seconds), or `store-error` (the node "
                         "cannot write its store: disk full, read-only, I/O error; `detail` names the error, "
                         "`since` when it began, `height` the tip, which stands still until the store writes "
                         "again; /status `store` shows the probe's backoff)"}})
def health(service: Service):
    """200 when the node serves its chain; 503 while it syncs from a peer, or while it cannot write its
    store (disk full, read-only: it serves what it has but stores nothing new)."""
    code, body = service.health()
    return body if code == 200 else JSONResponse(body, status_code=code)


@router.get("/spec")
def spec(service: Service):
    """The chain's genesis document; the chain id is the SHA-256 of its canonical JSON."""
    return service.spec.to_dict()
