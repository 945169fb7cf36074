"""The trained network: the tip model W' as safetensors, and what it is."""
from __future__ import annotations

import asyncio

from fastapi import APIRouter
from fastapi.responses import Response

from consensus.weights import encode_state

from .deps import Service
from .errors import ApiError
from .schemas import ModelInfo

router = APIRouter(tags=["model"])

NORMALIZATION_FORMULA = "x[c] = (pixel[c] / 255 - mean[c]) / std[c], uint8 RGB pixels, N x 3 x H x W float32"
LOAD_HINT = ("import safetensors.torch; from consensus.model import build_model; "
             "m = build_model('{arch}', {classes}); "
             "m.load_state_dict(safetensors.torch.load_file('model.safetensors')); m.eval()")


async def _tip_model(service):
    loop = asyncio.get_running_loop()
    try:
        return await loop.run_in_executor(service.validator, service.queries.tip_model)   # off the event loop
    except LookupError as exc:
        raise ApiError(404, "pruned", str(exc)) from None


@router.get("/model", response_class=Response, responses={200: {"content": {"application/octet-stream": {}}},
                                                          404: {"description": "the tip's weights are not kept"}})
async def model(service: Service):
    """The model the chain has trained: the tip block's post-step weights W' (safetensors; see
    /model/info for the architecture and how to load it)."""
    tip, state = await _tip_model(service)
    data = encode_state(state)
    return Response(data, media_type="application/octet-stream", headers={
        "Content-Disposition": f'attachment; filename="model-{tip.height}-{tip.hash[:16]}.safetensors"',
        "X-Polchain-Height": str(tip.height), "X-Polchain-Block": tip.hash,
        "X-Polchain-Chain-Id": service.spec.chain_id, "X-Polchain-Architecture": service.spec.model.arch})


@router.get("/model/info", response_model=ModelInfo, responses={404: {"description": "the tip's weights are not kept"}})
async def model_info(service: Service):
    """What GET /model returns: architecture, chain, height and block, accuracy on E, tensor shapes,
    the input normalisation (per-channel mean and std) and a line of Python that loads it into PyTorch."""
    tip, state = await _tip_model(service)
    arch, classes = service.spec.model.arch, service.spec.model.num_classes
    return {"chain_id": service.spec.chain_id, "preset": service.spec.name, "architecture": arch,
            "num_classes": classes, "height": tip.height, "block": tip.hash,
            "accuracy": {"correct": tip.header.acc_after, "of": service.spec.evaluation.size},
            "format": "safetensors", "tensors": {k: list(v.shape) for k, v in state.items()},
            "normalization": {"mean": list(service.spec.mean), "std": list(service.spec.std),
                              "formula": NORMALIZATION_FORMULA},
            "load": LOAD_HINT.format(arch=arch, classes=classes)}
