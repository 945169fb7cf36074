"""Prometheus metrics."""
from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import PlainTextResponse

from .deps import Service

router = APIRouter(tags=["metrics"])


@router.get("/metrics", response_class=PlainTextResponse)
def metrics(service: Service):
    m = service.miner
    return service.metrics.render(height=service.chain.tip().height, peers=service.network.peer_count(),
                                  attempts_per_second=m.attempts_per_second() if m else 0.0,
                                  blocks_found=m.blocks_found if m else 0)
