"""Requirements R ("directed guiding gradients"), derived from a 32-byte seed.

The seed is the parent hash under the dgg-paper rules, and under v3 a hash of the parent's
post-state and the redraw epoch (consensus.proof.r_seed), which its miner cannot vary cheaply.

Derivation (docs/protocol.md, "Requirements"): a stream of 64-bit draws,
``SHA-256("polchain-R/1" | seed (32 bytes) | k (u32 BE) | counter (u64 BE))``
cut into four big-endian u64 each. Over an index space of N eligible weights (all
learnable parameters, or under v3 those outside the excluded prefixes, in flat
order), a draw ``d`` is rejected if ``d >= 2^64 - (2^64 mod 2N)`` (no modulo
bias); otherwise ``r = d mod 2N``, eligible weight ``r // 2`` (mapped to its flat
index), direction *decrease* if ``r`` is odd, *increase* if even (the paper's
parity rule). A draw whose weight is already taken is skipped (collision avoidance).

A requirement holds when ``w' - w`` (fp32, as stored) has the required sign, is not
zero, and (v3 validators) clears the spec's band ``max(band_ulps * ulp, band_abs)``.
"""
from __future__ import annotations

import bisect
import struct
from dataclasses import dataclass
from typing import Sequence

import torch

from .hashing import uniform_draws

INCREASE = 1
DECREASE = -1
_DOMAIN = b"polchain-R/1"


@dataclass(frozen=True)
class Requirement:
    index: int       # flat index into the learnable parameters, definition order
    direction: int   # INCREASE or DECREASE


@dataclass(frozen=True)
class IndexSpace:
    """The flat parameter indices R may draw from: segments (flat start, length) in flat order."""
    segments: tuple[tuple[int, int], ...]

    @classmethod
    def full(cls, n_params: int) -> "IndexSpace":
        return cls(((0, n_params),))

    @property
    def size(self) -> int:
        return sum(n for _, n in self.segments)

    def flat(self, i: int) -> int:
        """The flat index of eligible weight ``i``."""
        for start, n in self.segments:
            if i < n:
                return start + i
            i -= n
        raise IndexError(i)


def derive_requirements(seed: str, k: int, space: "IndexSpace | int") -> tuple[Requirement, ...]:
    if isinstance(space, int):
        space = IndexSpace.full(space)
    n_params = space.size
    if not 0 < k <= n_params:
        raise ValueError(f"k={k} out of range for {n_params} parameters")
    taken: set[int] = set()
    out: list[Requirement] = []
    for r in uniform_draws(_DOMAIN + bytes.fromhex(seed) + struct.pack(">I", k), 2 * n_params, ">Q"):
        idx = r >> 1
        if idx in taken:
            continue
        taken.add(idx)
        out.append(Requirement(space.flat(idx), DECREASE if r & 1 else INCREASE))
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


def requirement_margins(before: torch.Tensor, after: torch.Tensor, reqs: Sequence[Requirement],
                        margin_ulps: int, margin_abs: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Per requirement: the change in the required direction, ``(w' - w) * direction`` (> 0 where it
    goes the required way), and the least it must be, ``max(margin_ulps * ulp(max(|w|, |w'|)), margin_abs)``."""
    signed = _signed_delta(before, after, reqs)
    need = torch.clamp(torch.maximum(ulp(before), ulp(after)) * margin_ulps, min=margin_abs)
    return signed, need


def _shortfall(before: torch.Tensor, after: torch.Tensor, reqs: Sequence[Requirement],
               margin_ulps: int, margin_abs: float) -> torch.Tensor:
    """True where a required change is zero, goes the wrong way, or falls short of
    ``max(margin_ulps * ulp(max(|w|, |w'|)), margin_abs)``."""
    return ~requirements_met(before, after, reqs, margin_ulps, margin_abs)


def requirements_met(before: torch.Tensor, after: torch.Tensor, reqs: Sequence[Requirement],
                     margin_ulps: int, margin_abs: float) -> torch.Tensor:
    """True where a required change is non-zero, goes the required way and clears the margin."""
    signed, need = requirement_margins(before, after, reqs, margin_ulps, margin_abs)
    return (signed > 0) & (signed >= need)   # NaN compares false: a NaN change meets nothing


def requirements_hold(before: torch.Tensor, after: torch.Tensor, reqs: Sequence[Requirement],
                      band_ulps: int = 0, band_abs: float = 0.0) -> bool:
    """Validator rule: every required change is non-zero, in the required direction, and
    (v3) clears the validators' band."""
    return not bool(_shortfall(before, after, reqs, band_ulps, band_abs).any())


def first_failed(before: torch.Tensor, after: torch.Tensor, reqs: Sequence[Requirement],
                 band_ulps: int = 0, band_abs: float = 0.0) -> int | None:
    bad = _shortfall(before, after, reqs, band_ulps, band_abs).nonzero()
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
    return requirements_hold(before, after, reqs, margin_ulps, margin_abs)
