"""The trained network: the tip model W' as safetensors."""
from __future__ import annotations

import asyncio

from fastapi import APIRouter
from fastapi.responses import Response

from consensus.weights import encode_state

from .deps import Service
from .errors import ApiError

router = APIRouter(tags=["model"])


@router.get("/model", response_class=Response, responses={200: {"content": {"application/octet-stream": {}}}})
async def model(service: Service):
    loop = asyncio.get_running_loop()
    try:
        tip, state = await loop.run_in_executor(service.validator, service.chain.tip_model)
    except LookupError as exc:
        raise ApiError(404, "pruned", str(exc)) from None
    data = encode_state(state)
    return Response(data, media_type="application/octet-stream", headers={
        "Content-Disposition": f'attachment; filename="model-{tip.height}-{tip.hash[:16]}.safetensors"',
        "X-Polchain-Height": str(tip.height), "X-Polchain-Block": tip.hash})
