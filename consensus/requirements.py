"""Requirements R ("directed guiding gradients"), derived from the parent hash.

Derivation (docs/protocol.md, "Requirements"): a stream of 64-bit draws,
``SHA-256("polchain-R/1" | parent_hash (32 bytes) | k (u32 BE) | counter (u64 BE))``
cut into four big-endian u64 each. A draw ``d`` is rejected if
``d >= 2^64 - (2^64 mod 2|W|)`` (no modulo bias); otherwise ``r = d mod 2|W|``,
weight index ``r // 2``, direction *decrease* if ``r`` is odd, *increase* if even
(the paper's parity rule). A draw whose weight index is already taken is
skipped (collision avoidance). Nothing in a block can influence R.

A requirement holds when ``w' - w`` (fp32, as stored) has the required sign
and is not zero: an unchanged weight satisfies nothing.
"""
from __future__ import annotations

import bisect
import hashlib
import struct
from dataclasses import dataclass
from typing import Sequence

import torch

INCREASE = 1
DECREASE = -1
_DOMAIN = b"polchain-R/1"


@dataclass(frozen=True)
class Requirement:
    index: int       # flat index into the learnable parameters, definition order
    direction: int   # INCREASE or DECREASE


def derive_requirements(parent_hash: str, k: int, n_params: int) -> tuple[Requirement, ...]:
    if not 0 < k <= n_params:
        raise ValueError(f"k={k} out of range for {n_params} parameters")
    n2 = 2 * n_params
    limit = (1 << 64) - ((1 << 64) % n2)
    prefix = _DOMAIN + bytes.fromhex(parent_hash) + struct.pack(">I", k)
    taken: set[int] = set()
    out: list[Requirement] = []
    counter = 0
    while len(out) < k:
        block = hashlib.sha256(prefix + struct.pack(">Q", counter)).digest()
        counter += 1
        for (d,) in struct.iter_unpack(">Q", block):
            if d >= limit:
                continue
            r = d % n2
            idx = r >> 1
            if idx in taken:
                continue
            taken.add(idx)
            out.append(Requirement(idx, DECREASE if r & 1 else INCREASE))
            if len(out) == k:
                break
    return tuple(out)


class ParamIndex:
    """Maps flat parameter indices to (tensor, offset) for a list of parameters."""

    def __init__(self, params: Sequence[torch.Tensor]):
        self.params = list(params)
        self.starts: list[int] = []
        total = 0
        for p in self.params:
            self.starts.append(total)
            total += p.numel()
        self.total = total

    def locate(self, index: int) -> tuple[int, int]:
        i = bisect.bisect_right(self.starts, index) - 1
        return i, index - self.starts[i]

    def gather(self, reqs: Sequence[Requirement]) -> torch.Tensor:
        """Current fp32 values at the required indices (a CPU tensor of len(reqs))."""
        vals = []
        for r in reqs:
            i, off = self.locate(r.index)
            vals.append(self.params[i].detach().reshape(-1)[off])
        return torch.stack(vals).to("cpu", torch.float32) if vals else torch.zeros(0)


def _signed_delta(before: torch.Tensor, after: torch.Tensor, reqs: Sequence[Requirement]) -> torch.Tensor:
    dirs = torch.tensor([r.direction for r in reqs], dtype=torch.float32)
    return (after - before) * dirs  # > 0 where the change goes the required way


def requirements_hold(before: torch.Tensor, after: torch.Tensor, reqs: Sequence[Requirement]) -> bool:
    """Validator rule: every required change is non-zero and in the required direction."""
    return bool((_signed_delta(before, after, reqs) > 0).all())


def first_failed(before: torch.Tensor, after: torch.Tensor, reqs: Sequence[Requirement]) -> int | None:
    bad = (_signed_delta(before, after, reqs) <= 0).nonzero()
    return int(bad[0]) if len(bad) else None


def ulp(x: torch.Tensor) -> torch.Tensor:
    """Distance to the next fp32 away from zero (spacing at |x|)."""
    ax = x.abs().to(torch.float32)
    return torch.nextafter(ax, torch.full_like(ax, float("inf"))) - ax


def requirements_hold_with_margin(before: torch.Tensor, after: torch.Tensor, reqs: Sequence[Requirement],
                                  margin_ulps: int, margin_abs: float) -> bool:
    """Miner rule: as the validator's, and every change clears the hardware margin.

    ``|w' - w| >= max(margin_ulps * ulp(max(|w|, |w'|)), margin_abs)``: a change of
    a few ulps, or a tiny gradient that other hardware could round to the other
    side, is not published.
    """
    signed = _signed_delta(before, after, reqs)
    scale = torch.maximum(ulp(before), ulp(after)) * margin_ulps
    need = torch.clamp(scale, min=margin_abs)
    return bool((signed >= need).all()) and bool((signed > 0).all())
