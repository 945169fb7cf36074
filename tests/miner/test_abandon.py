"""The miner abandons its search when the tip changes (should_stop flips)."""
from __future__ import annotations

import threading

import pytest

from miner.search import make_miner

from .conftest import job_on_genesis

NO_HIT_K = 40          # 2^-40 per attempt: the search cannot end by finding a block here


def one_pass(miner) -> int:
    """The most attempts between two should_stop checks: one (reference), or a pass of G candidates and
    its advance step (fast)."""
    return getattr(miner, "groups", 0) + 1


def stop_after(miner, seconds: float):
    """A flag flipped by a timer after ``seconds``; ``at_flip`` gets miner.progress.attempts read just
    after the flip (work counted from there was done after the tip changed)."""
    flag = threading.Event()
    at_flip: list[int] = []

    def flip():
        flag.set()
        at_flip.append(miner.progress.attempts)

    return flag, at_flip, threading.Timer(seconds, flip)


def warm_up(miner, spec, state) -> None:
    """One attempt (one pass of the fast search) before the timer runs: the process's first pass
    pays PyTorch's one-time lazy imports (torch.unravel_index pulls in sympy: ~4 s here)."""
    assert miner.mine(job_on_genesis(spec, NO_HIT_K), state, max_attempts=1) is None


@pytest.mark.parametrize("kind", ["reference", "fast"])
def test_tiny_miner_stops_promptly(tiny_spec, tiny_data, tiny_states, kind):
    miner = make_miner(kind, tiny_spec, tiny_data, seed=1)
    warm_up(miner, tiny_spec, tiny_states["trained"])
    flag, at_flip, timer = stop_after(miner, 0.5)
    timer.start()
    try:
        out = miner.mine(job_on_genesis(tiny_spec, NO_HIT_K), tiny_states["trained"], should_stop=flag.is_set)
    finally:
        timer.cancel()
    assert out is None
    assert at_flip, "mine() returned before the tip changed"
    after = miner.progress.attempts - at_flip[0]
    assert after <= one_pass(miner), after      # one attempt or one pass, not a search


@pytest.mark.parametrize("kind", ["reference", "fast"])
def test_stop_before_start_does_no_work(tiny_spec, tiny_data, tiny_states, kind):
    miner = make_miner(kind, tiny_spec, tiny_data, seed=1)
    assert miner.mine(job_on_genesis(tiny_spec, NO_HIT_K), tiny_states["trained"], should_stop=lambda: True) is None
    assert miner.progress.attempts == 0


def test_fast_checks_should_stop_every_pass(tiny_spec, tiny_data, tiny_states):
    miner = make_miner("fast", tiny_spec, tiny_data, seed=1, groups=8, advance_first=False)
    calls = []

    def should_stop():
        calls.append(1)
        return len(calls) > 3               # stop at the 4th check

    assert miner.mine(job_on_genesis(tiny_spec, NO_HIT_K), tiny_states["trained"], should_stop=should_stop) is None
    # checked before every pass and before every advance step: pass (1), advance (2), pass (3), advance
    # (4: stop, no step trained), the loop's check (5) -- two passes of G=8 candidates, then nothing
    assert miner.progress.attempts == 2 * 8 and len(calls) == 5


def test_resnet18_fast_stops_within_a_pass(resnet_spec, resnet_data):
    from consensus.training import genesis_state
    miner = make_miner("fast", resnet_spec, resnet_data, seed=1, groups=8)
    warm_up(miner, resnet_spec, genesis_state(resnet_spec))
    flag, at_flip, timer = stop_after(miner, 0.2)
    timer.start()
    try:
        out = miner.mine(job_on_genesis(resnet_spec, NO_HIT_K), genesis_state(resnet_spec), should_stop=flag.is_set)
    finally:
        timer.cancel()
    assert out is None and at_flip
    after = miner.progress.attempts - at_flip[0]
    assert after <= one_pass(miner), after      # at most one pass of 8 groups + one step, not a search
