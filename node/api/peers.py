"""Peers: the list, and a peer introducing itself."""
from __future__ import annotations

from fastapi import APIRouter

from .deps import Service
from .errors import ApiError
from .schemas import PeerAnnounce, PeerOut

router = APIRouter(tags=["peers"])


@router.get("/peers", response_model=list[PeerOut])
def peers(service: Service):
    return service.network.peer_list()


@router.post("/peers", status_code=202)
def add_peer(body: PeerAnnounce, service: Service):
    if not body.url.startswith(("http://", "https://")):
        raise ApiError(422, "malformed", "peer URL must be http(s)")
    added = service.network.learn_peer(body.url)
    return {"added": added}
