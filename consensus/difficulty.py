"""Difficulty (k), work and median-time-past.

* Work of a block = 2^k; cumulative work = sum over the chain. Most work wins,
  ties go to the block seen first.
* Retarget: at heights h with h >= window + 2 and (h - 2) % window == 0 (the first window runs
  from block 1, never from genesis, whose time is fixed long before mining starts), let
  ``a`` = timestamp(h-1) - timestamp(h-1-window) and ``t`` = target * window.
  k moves by log2(t / a) rounded to the nearest step, at most ``max_step`` either way: up by j
  when ``2^(2j-1) a^2 < t^2`` (faster than t / 2^(j - 1/2)), down by j when
  ``a^2 > 2^(2j-1) t^2``, else stays; clamped to [minimum, maximum]. A negative span
  (timestamps out of order) counts as 0, i.e. fast. Integer arithmetic only. Everywhere
  else k equals the parent's k.
* Median time past: the median of the timestamps of the last ``mtp_window``
  blocks ending at the parent (fewer near genesis); a block's timestamp must be
  strictly greater.
"""
from __future__ import annotations

from typing import Protocol

from .block import BlockHeader
from .spec import ChainSpec


class ChainView(Protocol):
    def header(self, block_hash: str) -> BlockHeader | None: ...


def work(k: int) -> int:
    return 1 << k


def ancestors(view: ChainView, start: BlockHeader, count: int) -> list[BlockHeader]:
    """``start`` and up to ``count - 1`` of its ancestors, newest first."""
    out = [start]
    while len(out) < count and out[-1].height > 0:
        parent = view.header(out[-1].parent)
        if parent is None:
            break
        out.append(parent)
    return out


def is_retarget_height(spec: ChainSpec, height: int) -> bool:
    w = spec.difficulty.retarget_window
    return height >= w + 2 and (height - 2) % w == 0


def retarget_step(span_ms: int, target_ms: int, max_step: int) -> int:
    """log2(target / span) rounded (a sqrt 2 dead band around each step), within +-max_step; a span
    of 0 is as fast as can be."""
    a2, t2 = span_ms * span_ms, target_ms * target_ms
    step = 0
    while step < max_step and (1 << (2 * step + 1)) * a2 < t2:      # 2^(2j-1) a^2 < t^2, j = step + 1
        step += 1
    if step:
        return step
    while step > -max_step and a2 > (1 << (-2 * step + 1)) * t2:    # a^2 > 2^(2j-1) t^2, j = -step + 1
        step -= 1
    return step


def next_difficulty(spec: ChainSpec, parent: BlockHeader, view: ChainView) -> int:
    d = spec.difficulty
    height = parent.height + 1
    if not is_retarget_height(spec, height):
        return parent.difficulty
    chain = ancestors(view, parent, d.retarget_window + 1)
    if len(chain) < d.retarget_window + 1:
        raise LookupError("ancestors missing for retarget")
    a = max(0, chain[0].timestamp_ms - chain[-1].timestamp_ms)  # a negative span is fast, not slow (a^2 below)
    t = d.target_interval_ms * d.retarget_window
    k = parent.difficulty + retarget_step(a, t, d.max_step)
    return max(d.minimum, min(d.maximum, k))


def median_time_past(spec: ChainSpec, parent: BlockHeader, view: ChainView) -> int:
    times = sorted(h.timestamp_ms for h in ancestors(view, parent, spec.time.mtp_window))
    return times[len(times) // 2]
