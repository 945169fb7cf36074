"""The miner's publication policy: advance steps first, and why R hits are not published.

``make_miner`` fills the block's J advance steps before it publishes a hit (the most training a
block can carry); the miner classes themselves publish the first hit unless told otherwise. Every
R hit whose W' the miner does not publish is counted by reason (floor or borderline), so a stalled
chain can be explained from the outside.
"""
from __future__ import annotations

import dataclasses

import pytest

from consensus.training import Replayer
from miner.fast import FastMiner
from miner.reference import ReferenceMiner
from miner.search import make_miner
from tests.blocks import low_difficulty

from .conftest import job_on_genesis


def policy_spec(tiny_spec):
    """tiny at k = 1 with a genesis claim of 0: the miners here start from ``tiny_states``, not the genesis W',
    so the genesis floor (v4: the genesis model's accuracy less the slack) is no test's subject here; the
    floor is, where a test sets the parent's claim."""
    spec = low_difficulty(tiny_spec, 1)
    return dataclasses.replace(spec, evaluation=dataclasses.replace(spec.evaluation, genesis_correct=0))


@pytest.mark.parametrize("kind", ["fast", "reference"])
def test_make_miner_fills_the_advance_steps(tiny_spec, tiny_data, tiny_states, kind):
    spec = policy_spec(tiny_spec)
    miner = make_miner(kind, spec, tiny_data, seed=5)
    found = miner.mine(job_on_genesis(spec, 1), tiny_states["trained"], max_attempts=5_000)
    assert found is not None
    assert len(found.nonces) == spec.proof.max_advance_steps + 1


@pytest.mark.parametrize("cls", [FastMiner, ReferenceMiner])
def test_first_hit_policy_publishes_early(tiny_spec, tiny_data, tiny_states, cls):
    """At k = 1 about every other attempt meets R: publishing the first hit gives short blocks."""
    spec = policy_spec(tiny_spec)
    lengths = []
    for seed in range(4):
        miner = cls(spec, Replayer(spec, tiny_data), seed=seed)
        found = miner.mine(job_on_genesis(spec, 1), tiny_states["trained"], max_attempts=5_000)
        assert found is not None
        lengths.append(len(found.nonces))
    assert min(lengths) < spec.proof.max_advance_steps + 1, lengths


def claims_everything(parent, spec):
    """The parent claiming every image of E right: its floor is not relaxed (v3 lowers it per redraw
    epoch since the parent; ``job_on_genesis``'s clock stays in epoch 0)."""
    return dataclasses.replace(parent, acc_after=spec.evaluation.size)


@pytest.mark.parametrize("cls", [FastMiner, ReferenceMiner])
def test_floor_failures_are_counted(tiny_spec, tiny_data, tiny_states, cls):
    """A parent claiming every image of E right: every R hit fails the floor, none is published,
    and the dead trajectories are restarted from the parent's state."""
    spec = policy_spec(tiny_spec)
    miner = cls(spec, Replayer(spec, tiny_data), seed=2)
    job = job_on_genesis(spec, 1)
    job.parent = claims_everything(job.parent, spec)
    assert miner.mine(job, tiny_states["trained"], max_attempts=200) is None
    p = miner.progress
    assert p.r_hits > 0 and p.acc_floor_failed + p.acc_borderline_failed == p.r_hits   # every hit has a reason
    assert p.acc_floor_failed > p.r_hits // 2                                           # ... mostly the floor
    assert p.restarts > 0


def test_advance_first_search_stops_at_max_attempts(tiny_spec, tiny_data, tiny_states):
    """With J advance steps first and a floor no trajectory reaches, the fast miner only restarts:
    its advance steps still count against max_attempts, so the call returns."""
    spec = policy_spec(tiny_spec)
    miner = make_miner("fast", spec, tiny_data, seed=2)
    job = job_on_genesis(spec, 1)
    job.parent = claims_everything(job.parent, spec)
    assert miner.mine(job, tiny_states["trained"], max_attempts=40) is None
    assert miner.progress.restarts == 40 // spec.proof.max_advance_steps


def test_borderline_failures_are_counted(tiny_spec, tiny_data, tiny_states):
    """A logit margin so wide that every prediction is borderline: every R hit fails on it."""
    spec = policy_spec(tiny_spec)
    spec = dataclasses.replace(spec, evaluation=dataclasses.replace(spec.evaluation, miner_logit_margin="1e9"))
    miner = make_miner("reference", spec, tiny_data, seed=2)
    assert miner.mine(job_on_genesis(spec, 1), tiny_states["trained"], max_attempts=100) is None
    p = miner.progress
    assert p.r_hits > 0 and p.acc_borderline_failed == p.r_hits and p.acc_floor_failed == 0
