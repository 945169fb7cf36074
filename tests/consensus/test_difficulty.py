"""Retarget rule, work and median-time-past on synthetic header chains."""
from __future__ import annotations

import dataclasses

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from consensus import errors
from consensus.block import BlockHeader, genesis_header
from consensus.difficulty import (ancestors, is_retarget_height, median_time_past, next_difficulty, work)
from consensus.spec import preset
from consensus.validation import validate_header
from tests.blocks import BlockSmith, MemoryView, cheap_tickets

# tiny's rule at a 2,000 ms target (the thresholds below are written for it): window 10, steps of up to 2,
# k in [1, 40], k0 = 10; admission tickets of 0 bits (any ticket holds: the header chains here are about time
# and difficulty, and a tiny ticket costs 0.12 s per header, tests/adversarial/test_ticket.py prices them)
SPEC = cheap_tickets(dataclasses.replace(preset("tiny"), difficulty=dataclasses.replace(preset("tiny").difficulty,
                                                                                        target_interval_ms=2000)), 0)
W, TARGET = SPEC.difficulty.retarget_window, SPEC.difficulty.target_interval_ms
K0 = SPEC.difficulty.initial
FIRST = W + 2                                                             # the first retarget height: 12
HEADER_KEY = Ed25519PrivateKey.from_private_bytes(bytes([4]) * 32)     # signs the synthetic headers


def build_chain(timestamps: list[int], spec=SPEC, k0: int | None = None, key=None) -> tuple[list[BlockHeader], MemoryView]:
    """Signed headers at heights 0..len(timestamps) - 1 with these timestamps; k follows the retarget rule
    (genesis has k0 when given). The proof fields are never looked at here."""
    g = dataclasses.replace(genesis_header(spec), timestamp_ms=timestamps[0])
    if k0 is not None:
        g = dataclasses.replace(g, difficulty=k0)
    chain = [g, *smith(spec, key).headers(ancestors=[g], timestamps=timestamps[1:])]
    return chain, MemoryView(chain)


def smith(spec=SPEC, key=None) -> BlockSmith:
    return BlockSmith(spec, None, key or HEADER_KEY)


def regular(n: int, interval: int, start: int = SPEC.time.genesis_timestamp_ms) -> list[int]:
    return [start + i * interval for i in range(n)]


def test_work_is_two_to_the_k():
    assert [work(k) for k in (0, 1, 8, 40)] == [1, 2, 256, 1 << 40]


def test_the_presets_start_near_their_target():
    """Issue 33.5: tiny starts at k = 10 (k = 8 gave a block every 1.89 s on the 8-node, 3-miner loopback
    net) and moves up to two steps per window; the tests' own chain keeps the old start (tests/chain_spec.py)."""
    d = preset("tiny").difficulty
    assert (d.initial, d.max_step, d.retarget_window) == (10, 2, 10)
    assert preset("cifar10-resnet18").difficulty.max_step == 2


def test_retarget_heights():
    assert [h for h in range(0, 60) if is_retarget_height(SPEC, h)] == [12, 22, 32, 42, 52]


@pytest.mark.parametrize("interval,delta", [(TARGET, 0), (TARGET // 2, +1), (TARGET // 4, +2), (TARGET // 40, +2),
                                            (TARGET * 2, -1), (TARGET * 4, -2), (TARGET * 40, -2),
                                            (int(TARGET * 1.3), 0), (int(TARGET * 0.8), 0)])
def test_retarget_direction(interval, delta):
    chain, view = build_chain(regular(FIRST, interval))
    assert all(h.difficulty == K0 for h in chain[1:])                  # no retarget before height 12
    assert next_difficulty(SPEC, chain[FIRST - 1], view) == K0 + delta


def test_the_first_window_starts_at_block_one():
    """Genesis is stamped in the spec, months before anyone mines: the first window (blocks 1..11) leaves it
    out, so the months between genesis and block 1 never read as a slow network."""
    g = SPEC.time.genesis_timestamp_ms
    chain, view = build_chain([g, *regular(FIRST - 1, TARGET, start=g + 10 ** 10)])
    assert next_difficulty(SPEC, chain[FIRST - 1], view) == K0


@pytest.mark.parametrize("span,delta", [(0, +2), (7_071, +2), (7_072, +1), (14_142, +1), (14_143, 0), (20_000, 0),
                                        (28_284, 0), (28_285, -1), (56_568, -1), (56_569, -2), (10 ** 9, -2)])
def test_retarget_thresholds_exact(span, delta):
    """t = target * window = 20,000 ms; k moves by log2(t / a) rounded, at most 2: up 2 iff 8a^2 < t^2
    (a <= 7,071), up 1 iff 2a^2 < t^2 (a <= 14,142), down 1 iff a^2 > 2t^2 (a >= 28,285), down 2 iff
    a^2 > 8t^2 (a >= 56,569). Only the span a = ts(11) - ts(1) counts, not the path in between."""
    ts = regular(2, 5)                                    # heights 0..1, anything
    ts += [ts[1] + 7] * 9 + [ts[1] + span]                # heights 2..10 anything, 11 at the span
    chain, view = build_chain(ts)
    assert chain[11].timestamp_ms - chain[1].timestamp_ms == span
    assert next_difficulty(SPEC, chain[11], view) == K0 + delta


@pytest.mark.parametrize("span", [-1, -20_000, -50_000, -10 ** 9])
def test_negative_span_counts_as_fast(span):
    """Timestamps may run backwards (only the median time past bounds them). A window that ends
    before it starts came *fast*; squaring the span would read a large negative span as slow and
    let one high timestamp at the window's start lower k (consensus/difficulty.py clamps a at 0)."""
    ts = regular(2, 5)
    ts += [ts[1] + 7] * 9 + [ts[1] + span]
    chain, view = build_chain(ts)
    assert next_difficulty(SPEC, chain[11], view) == K0 + 2


def test_retarget_clamps():
    fast, slow = regular(FIRST, 1), regular(FIRST, 10 ** 6)
    chain, view = build_chain(fast, k0=SPEC.difficulty.maximum)
    assert next_difficulty(SPEC, chain[FIRST - 1], view) == SPEC.difficulty.maximum
    chain, view = build_chain(slow, k0=SPEC.difficulty.minimum)
    assert next_difficulty(SPEC, chain[FIRST - 1], view) == SPEC.difficulty.minimum


@pytest.mark.parametrize("speedup,step", [(2, 1), (4, 2), (16, 2)])
def test_k_follows_hashrate_by_bounded_log2_steps(speedup, step):
    """Blocks ``speedup`` times too fast: k rises by log2 of it rounded, at most 2, at each retarget height,
    and only there."""
    chain, view = build_chain(regular(53, TARGET // speedup))
    ks = [h.difficulty for h in chain]
    assert ks[:FIRST] == [K0] * FIRST
    for i, h in enumerate(range(FIRST, 52, W)):
        assert ks[h:h + W] == [K0 + (i + 1) * step] * W
    assert ks[52] == K0 + 5 * step


def test_between_retargets_k_is_the_parents_whatever_the_times():
    chain, view = build_chain(regular(25, 1))
    parent = dataclasses.replace(chain[23], difficulty=17)
    view.add(parent)
    assert next_difficulty(SPEC, parent, view) == 17


def test_retarget_needs_the_window():
    chain, view = build_chain(regular(FIRST, TARGET))
    del view.headers[chain[5].hash]
    with pytest.raises(LookupError):
        next_difficulty(SPEC, chain[FIRST - 1], view)


def test_block_with_unretargeted_k_is_invalid(miner_key):
    chain, view = build_chain(regular(FIRST, TARGET // 4), key=miner_key)
    parent = chain[FIRST - 1]

    def mk(k):
        return smith(key=miner_key).header(parent, timestamp_ms=parent.timestamp_ms + 1, k=k)

    now = parent.timestamp_ms
    assert validate_header(mk(K0 + 2), SPEC, view, now) == parent
    for k in (K0, K0 + 1, K0 + 3):
        with pytest.raises(errors.BadDifficulty):
            validate_header(mk(k), SPEC, view, now)


# -- median time past ----------------------------------------------------------------------
def test_mtp_near_genesis():
    chain, view = build_chain(regular(4, 1000))
    g = chain[0].timestamp_ms
    assert median_time_past(SPEC, chain[0], view) == g
    assert median_time_past(SPEC, chain[1], view) == g + 1000            # [g, g+1000]: the upper median
    assert median_time_past(SPEC, chain[2], view) == g + 1000
    assert median_time_past(SPEC, chain[3], view) == g + 2000


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, 10 ** 6), min_size=1, max_size=30))
def test_mtp_is_the_median_of_the_last_11(offsets):
    ts = [SPEC.time.genesis_timestamp_ms + o for o in offsets]
    chain, view = build_chain(ts)
    for h, parent in enumerate(chain):
        window = sorted(ts[max(0, h - SPEC.time.mtp_window + 1): h + 1])
        assert median_time_past(SPEC, parent, view) == window[len(window) // 2]
        assert [a.height for a in ancestors(view, parent, SPEC.time.mtp_window)] == \
            list(range(h, max(-1, h - SPEC.time.mtp_window), -1))


def test_time_too_old_against_parent_and_mtp(miner_key):
    """v4: a timestamp is after its parent's (v3 let it go back to the median of the last 11 + 1 ms, so a
    miner could stamp its own block up to a minute early and open later redraw epochs for its next one)."""
    ts = regular(15, 1000)
    chain, view = build_chain(ts, key=miner_key)
    parent = chain[14]
    mtp = median_time_past(SPEC, parent, view)
    assert mtp == ts[9] < ts[14] == parent.timestamp_ms      # heights 4..14: the median is height 9's

    def mk(t):
        return smith(key=miner_key).header(parent, timestamp_ms=t, k=parent.difficulty)

    now = ts[14] + 10_000
    validate_header(mk(parent.timestamp_ms + 1), SPEC, view, now)
    for t in (parent.timestamp_ms, parent.timestamp_ms - 1, mtp + 1, mtp, ts[0]):
        with pytest.raises(errors.TimeTooOld):
            validate_header(mk(t), SPEC, view, now)
