"""Model state: canonical hash and safetensors (de)serialisation.

``weights_hash(state)`` is SHA-256 over, for each tensor in sorted name order:
``len(name) (u32 BE) | name (UTF-8) | dtype (u8 code) | ndim (u8) | dims (u64 BE each)
| raw little-endian bytes``. It depends on the tensors only, never on the file
container, so any safetensors writer gives the same hash.

Weights from peers arrive as safetensors (never pickle). ``decode_state`` parses
them; ``check_layout`` compares names, shapes and dtypes with the architecture.
"""
from __future__ import annotations

import hashlib
import struct
from typing import Mapping

import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from .errors import MalformedWeights

DTYPE_CODES = {torch.float32: 1, torch.int64: 2}
State = dict[str, torch.Tensor]


def tensor_bytes(t: torch.Tensor) -> bytes:
    """Raw little-endian bytes of a contiguous CPU tensor."""
    t = t.detach().to("cpu").contiguous()
    if t.numel() == 0:
        return b""
    return t.view(-1).view(torch.uint8).numpy().tobytes()  # x86/ARM hosts are little-endian


def weights_hash(state: Mapping[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for name in sorted(state):
        t = state[name]
        if t.dtype not in DTYPE_CODES:
            raise MalformedWeights(f"tensor {name!r} has unsupported dtype {t.dtype}")
        raw_name = name.encode("utf-8")
        h.update(struct.pack(">I", len(raw_name)) + raw_name)
        h.update(struct.pack(">BB", DTYPE_CODES[t.dtype], t.dim()))
        h.update(b"".join(struct.pack(">Q", d) for d in t.shape))
        h.update(tensor_bytes(t))
    return h.hexdigest()


def encode_state(state: Mapping[str, torch.Tensor]) -> bytes:
    return st_save({k: v.detach().to("cpu").contiguous() for k, v in state.items()})


def decode_state(data: bytes) -> State:
    """Parse safetensors bytes. Anything unparsable raises MalformedWeights."""
    if len(data) < 8:
        raise MalformedWeights("truncated safetensors file")
    try:
        return dict(st_load(bytes(data)))
    except Exception as exc:  # safetensors raises several error types
        raise MalformedWeights(f"unreadable safetensors: {exc}") from None


def layout(state: Mapping[str, torch.Tensor]) -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
    return {k: (tuple(v.shape), v.dtype) for k, v in state.items()}


def layout_problem(state: Mapping[str, torch.Tensor], template: Mapping[str, torch.Tensor]) -> str | None:
    """Why ``state`` does not fit the architecture's ``template``, or None."""
    missing = sorted(set(template) - set(state))
    extra = sorted(set(state) - set(template))
    if missing or extra:
        return f"tensor names differ (missing {missing[:3]}, extra {extra[:3]})"
    for name, t in template.items():
        got = state[name]
        if tuple(got.shape) != tuple(t.shape) or got.dtype != t.dtype:
            return f"{name}: got {tuple(got.shape)} {got.dtype}, want {tuple(t.shape)} {t.dtype}"
    return None


def all_finite(state: Mapping[str, torch.Tensor]) -> bool:
    return all(bool(torch.isfinite(t).all()) for t in state.values() if t.is_floating_point())


def clone_state(state: Mapping[str, torch.Tensor]) -> State:
    return {k: v.detach().clone() for k, v in state.items()}
