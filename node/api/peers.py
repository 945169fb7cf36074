"""Peers: the list, and a peer introducing itself."""
from __future__ import annotations

import httpx
from fastapi import APIRouter

from p2p.addresses import normalize_url

from .deps import Service
from .errors import ApiError
from .guard import REFUSALS, write_guard
from .schemas import PeerAnnounce, PeerOut

router = APIRouter(tags=["peers"])


@router.get("/peers", response_model=list[PeerOut])
def peers(service: Service):
    """The peer book: each peer's URL, state, reported height and failures."""
    return service.network.peer_list()


def usable_peer_url(url: str) -> bool:
    """Whether the HTTP client can reach ``url`` at all: http(s), a host that encodes (IDNA),
    a port in range, no credentials, query, fragment or whitespace."""
    try:
        u = httpx.URL(url)
        return (u.scheme in ("http", "https") and bool(u.host) and not u.userinfo and not u.query
                and not u.fragment and (u.port is None or 0 < u.port < 65536)
                and not any(c.isspace() or not c.isprintable() for c in url))
    except (httpx.InvalidURL, ValueError, TypeError):   # u.host decodes IDNA lazily (IDNAError: ValueError)
        return False


@router.post("/peers", status_code=202, responses=REFUSALS, dependencies=[write_guard("peers")])
def add_peer(body: PeerAnnounce, service: Service):
    """Introduce a peer. It joins the peer book only once its /status answers with this chain's id
    (a handshake, in the background): ``status`` is known, queued or refused."""
    if not usable_peer_url(body.url) or normalize_url(body.url) is None:
        raise ApiError(422, "malformed", "peer URL must be a reachable http(s) URL: scheme://host[:port][/path]")
    return {"status": service.network.learn_peer(body.url)}
