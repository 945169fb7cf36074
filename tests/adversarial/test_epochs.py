"""One R per candidate (issue 33.2). Under v3 a miner could stamp any time in (MTP, now + 15 s], and R and
the floor followed the redraw epoch of that time, while the batches did not: one exact step could be checked
against the R of every open epoch at once (with 4 epochs open, 298 -> 66 candidates per block, 4.5x). v4
derives every batch in its block's epoch, so the step a miner computed for epoch e is a candidate for epoch e
only: for another epoch the same nonces train on other batches, and the block it would make does not replay.

Measured here on tiny at k = 2 (R holds for about one step in four), from the genesis state, 4 epochs open:

* the honest miner: one epoch, one step per candidate;
* v3's trick: one step (epoch 0's batches), checked against all 4 epochs' R -- about 4x the hits per step,
  but every hit claimed for an epoch other than 0 fails when replayed in its own epoch;
* searching every open epoch honestly: one step per epoch and candidate -- the same hits per step as one
  epoch (within noise; the seeds are fixed, so the figures are the same on every run and machine).
"""
from __future__ import annotations

import dataclasses
import random

import pytest
import torch

from bench.epochs import GOAL, pass_rate, publishable_accuracies, strategy_gains
from consensus.block import genesis_header
from consensus.proof import derive_batch, requirements_for
from consensus.requirements import requirements_hold
from consensus.spec import preset
from consensus.training import Replayer, genesis_state
from consensus.weights import weights_hash
from tests.blocks import low_difficulty

pytestmark = pytest.mark.slow      # hundreds of exact steps and evaluations: in the full suite, not in `-m "not slow"`

MINER = "5e" * 32
EPOCHS = 4
CANDIDATES = 150
K = 2


def test_searching_every_open_epoch_gains_nothing(tiny_dataset):
    torch.set_num_threads(1)
    spec = low_difficulty(preset("tiny"), K)
    g, w0 = genesis_header(spec), genesis_state(spec)
    r = Replayer(spec, tiny_dataset)
    band = (spec.requirements.band_ulps, float(spec.requirements.band_abs))
    interval = spec.proof.redraw_interval_ms
    stamps = [g.timestamp_ms + e * interval + 1 for e in range(EPOCHS)]
    reqs = [requirements_for(spec, g, ts, K, r.r_space) for ts in stamps]
    assert len({tuple(q) for q in reqs}) == EPOCHS                   # each epoch its own R

    def holds(epoch_of_batch: int, epoch_of_r: int, nonce: int) -> bool:
        r.load(w0)
        before = r.index.gather(reqs[epoch_of_r])
        r.step(derive_batch(spec, g.hash, MINER, epoch_of_batch, nonce))
        return requirements_hold(before, r.index.gather(reqs[epoch_of_r]), reqs[epoch_of_r], *band)

    rng = random.Random(17)
    nonces = [rng.getrandbits(64) for _ in range(CANDIDATES)]
    # the honest miner: epoch 0, one step per candidate
    single = sum(holds(0, 0, n) for n in nonces)
    # v3's trick: the epoch-0 step checked against every epoch's R (one step per candidate) ...
    claimed = [(n, e) for n in nonces for e in range(EPOCHS) if _same_step_meets(r, w0, spec, g, reqs, band, n, e)]
    assert len(claimed) > 2.5 * single, (len(claimed), single)       # v3 would have gained ~4x per step
    # ... but a block claimed for epoch e > 0 commits to the epoch-0 step's post-state, and its replay trains
    # on epoch e's batches: another post-state (state-mismatch). Only epoch 0's claims are blocks.
    assert sum(1 for _, e in claimed if e == 0) == single
    later = [(n, e) for n, e in claimed if e > 0]
    assert later
    for n, e in later[:10]:
        r.load(w0)
        r.step(derive_batch(spec, g.hash, MINER, 0, n))
        committed = weights_hash(r.state())
        r.load(w0)
        r.step(derive_batch(spec, g.hash, MINER, e, n))
        assert weights_hash(r.state()) != committed
    assert all(derive_batch(spec, g.hash, MINER, e, n) != derive_batch(spec, g.hash, MINER, 0, n) for n, e in later)
    # searching every open epoch honestly: a step per epoch and candidate, the same hits per step
    multi = sum(holds(e, e, n) for n in nonces for e in range(EPOCHS))
    per_step_single, per_step_multi = single / CANDIDATES, multi / (EPOCHS * CANDIDATES)
    assert 0.7 < per_step_multi / per_step_single < 1.4, (per_step_single, per_step_multi)


def _same_step_meets(r, w0, spec, g, reqs, band, nonce: int, epoch_of_r: int) -> bool:
    """The step of epoch 0's batch for ``nonce`` meets epoch ``epoch_of_r``'s R (v3: one step, every R)."""
    r.load(w0)
    before = r.index.gather(reqs[epoch_of_r])
    r.step(derive_batch(spec, g.hash, MINER, 0, nonce))
    return requirements_hold(before, r.index.gather(reqs[epoch_of_r]), reqs[epoch_of_r], *band)


def test_the_best_legal_timestamp_strategy_gains_little(tiny_dataset):
    """Issue 33.2's goal: the best legal timestamp strategy gains a miner at most 1.1x in candidates per block.
    With one R per candidate the epoch buys only the floor's relaxation, one epoch sooner. The strategies
    (`polchain bench epochs`, bench/epochs.py): stamp the own block max_future_ms (15 s) ahead (every block),
    stamp the own block at its parent + 1 ms so that the next own block's epochs start a whole interval early
    (two blocks in a row), or both. The floor's pass rate by epoch is measured on tiny (200 trajectories of
    J + 1 steps from a trained state whose claim is honest), the block race is the exponential model of the
    target interval, and the gain is the expected search time of the honest stamp over the strategy's."""
    torch.set_num_threads(1)
    spec = preset("tiny")
    r = Replayer(spec, tiny_dataset)
    rng = random.Random(3)
    n, s = spec.dataset.train_size, spec.training.batch_size
    r.load(genesis_state(spec))
    for _ in range(300):
        r.step(tuple(rng.sample(range(n), s)))
    w = r.state()
    parent = dataclasses.replace(genesis_header(spec), acc_after=r.accuracy(w).correct)
    q = pass_rate(spec, parent, publishable_accuracies(r, w, 200, rng))
    assert q(0) < q(1) <= 1, [q(e) for e in range(3)]       # the relaxation matters here: the test has a subject
    model = strategy_gains(spec, q)
    gains = model["gains"]
    print(f"\nfloor pass rate per epoch {[round(q(e), 3) for e in range(3)]}; gains "
          f"{ {k: round(v, 3) for k, v in gains.items()} }; own {model['own_gain']:.3f}")
    assert 1 < model["own_gain"] <= GOAL, model        # measured: 1.019 (both over parent+1; future 1.009)
    # on tiny even the shared speed-up (an early-stamped parent: the next block sooner for every miner) is
    # within the goal; on ResNet-18 it is not (1.18x; docs/benchmarks.md 14.2), the own gain is (1.009x)
    assert 1 < max(gains.values()) <= GOAL, gains      # measured: future 1.009, parent+1 1.008, both 1.027
