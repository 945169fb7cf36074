"""One verdict on every validator.

* The canonical replay runs on the spec's thread count (consensus.training.canonical_threads),
  whatever the caller's: a block mined on 1 thread validates to the same bits and verdict while the
  validating process runs 2 torch threads, although a raw 2-thread step rounds differently.
* The hardware margin: a change that cleared the miner's margin on one run keeps its sign and
  clears the validators' band when the same canonical step runs with another thread count (the
  stand-in here for other hardware, on which the spec cannot fix the reduction order).

For every weight of the model (not only a k-subset) the step is computed with
``torch.set_num_threads(1)`` and with 2 threads. A weight "clears" when its change
meets the miner rule (consensus.requirements.requirements_hold_with_margin) in the
direction it moved; every cleared weight must satisfy the validator rule
(requirements_hold) in the other run. The counts are recorded as test properties
(``--junitxml``) and printed (``-s``); docs/protocol.md quotes them.
"""
from __future__ import annotations

import dataclasses
import random
from contextlib import contextmanager

import pytest
import torch

from consensus.data import Dataset
from consensus.hashing import sha256_hex
from consensus.proof import derive_batch
from consensus.requirements import (DECREASE, INCREASE, Requirement, derive_requirements, requirements_hold,
                                    ulp)
from consensus.spec import preset
from consensus.training import Replayer, canonical_threads, genesis_state
from consensus.validation import miner_requirements_ok, validate_proof
from consensus.weights import weights_hash

from ..conftest import MemoryView, mine_block


@contextmanager
def threads(n: int):
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


# == the canonical thread count ===================================================================
def test_validation_replays_on_the_spec_thread_count(tiny_spec, tiny_genesis, tiny_block, replayer):
    """The session's block was mined on 1 thread. Validated while the process runs 2 torch threads,
    its replay gives the same post-state bits and verdict, every canonical forward pass running on
    ``spec.proof.replay_threads`` (seen from a forward hook). The same steps taken raw on 2 threads
    give other bits: the rule has a subject on this machine."""
    h, r = tiny_block.header, replayer()
    during: list[int] = []
    r.model.register_forward_hook(lambda mod, inp, out: during.append(torch.get_num_threads()) if mod.training else None)
    with threads(2):
        result = validate_proof(h, tiny_genesis, tiny_block.parent_state, r, tiny_spec)
        assert torch.get_num_threads() == 2                              # the caller's count is restored
        canonical, during[:] = list(during), []
        r.load(tiny_block.parent_state)
        for n in h.nonces:                                                # no canonical_threads: 2 threads
            r.step(derive_batch(tiny_spec, h.parent, h.miner, n))
        raw = weights_hash(r.state())
    assert weights_hash(result.state) == h.state_hash
    assert len(canonical) == len(h.nonces) and set(canonical) == {tiny_spec.proof.replay_threads} == {1}
    assert set(during) == {2} and raw != h.state_hash


def test_mining_does_not_depend_on_the_callers_thread_count(tiny_spec, tiny_dataset, tiny_genesis,
                                                            tiny_genesis_state, tiny_block, miner_key):
    """The reference miner with the session block's seed, run while the process has 2 threads, takes
    the same canonical steps and finds the same block (nonces and post-state)."""
    with threads(2):
        again = mine_block(tiny_spec, tiny_dataset, tiny_genesis, tiny_genesis_state, MemoryView([tiny_genesis]),
                           miner_key)
    assert again.header.nonces == tiny_block.header.nonces
    assert again.header.state_hash == tiny_block.header.state_hash


def test_canonical_threads_restores_the_count_on_error(tiny_spec):
    with threads(2):
        with pytest.raises(RuntimeError):
            with canonical_threads(tiny_spec):
                assert torch.get_num_threads() == 1
                with canonical_threads(tiny_spec):                         # re-entrant
                    assert torch.get_num_threads() == 1
                raise RuntimeError("a failing step")
        assert torch.get_num_threads() == 2


# == the hardware margin ==========================================================================


def flat(r: Replayer) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1) for p in r.params]).clone()


def step_with_threads(r: Replayer, w, batch, threads: int) -> tuple[torch.Tensor, torch.Tensor]:
    old = torch.get_num_threads()
    try:
        torch.set_num_threads(threads)
        r.load(w)
        before = flat(r)
        r.step(batch)
        return before, flat(r)
    finally:
        torch.set_num_threads(old)


def cleared_mask(before, after, ulps: int, abs_: float) -> torch.Tensor:
    """Per weight: the change clears ``max(ulps * ulp, abs_)`` in the direction it went (vectorised rule)."""
    signed = (after - before).abs()
    need = torch.clamp(torch.maximum(ulp(before), ulp(after)) * ulps, min=abs_)
    return (signed >= need) & (signed > 0)


def compare(spec, before, a1, a2, rng: random.Random) -> dict[str, int]:
    """Per weight, over the two runs: a change clearing the miner's margin on one run must go the same
    way and clear the validators' band on the other."""
    q = spec.requirements
    d1, d2 = a1 - before, a2 - before
    c1, c2 = (cleared_mask(before, a, q.margin_ulps, float(q.margin_abs)) for a in (a1, a2))
    v1, v2 = (cleared_mask(before, a, q.band_ulps, float(q.band_abs)) for a in (a1, a2))
    same_sign = torch.sign(d1) == torch.sign(d2)
    # the vectorised masks are the library's rules: spot-check them against miner_requirements_ok
    # and requirements_hold with the band
    for i in rng.sample(range(before.numel()), 200):
        req = [Requirement(i, INCREASE if d1[i] > 0 else DECREASE)]
        assert miner_requirements_ok(before[[i]], a1[[i]], req, spec) == bool(c1[i]), i
        assert requirements_hold(before[[i]], a1[[i]], req, q.band_ulps, float(q.band_abs)) == bool(v1[i]), i
    return {
        "weights": before.numel(),
        "bitwise_equal": int((a1 == a2).sum()),
        "cleared_1thread": int(c1.sum()),
        "cleared_2threads": int(c2.sum()),
        "cleared_and_disagree": int((c1 & ~(same_sign & v2)).sum() + (c2 & ~(same_sign & v1)).sum()),
        "sign_flips_any": int(((torch.sign(d1) != torch.sign(d2))).sum()),
    }


def check_requirement_sets(spec, before, a1, a2, space, k: int, parents: int) -> tuple[int, int]:
    """Real R sets over the v2 index space: whenever the miner's rule passes on one run, the
    validators' rule (with the spec's band) passes on the other."""
    band = (spec.requirements.band_ulps, float(spec.requirements.band_abs))
    passed = agreed = 0
    for i in range(parents):
        reqs = derive_requirements(sha256_hex(b"det %d" % i), k, space)
        idx = [q.index for q in reqs]
        for x, y in ((a1, a2), (a2, a1)):
            if miner_requirements_ok(before[idx], x[idx], reqs, spec):
                passed += 1
                agreed += requirements_hold(before[idx], y[idx], reqs, *band)
    return passed, agreed


def test_tiny_cnn_threads_agree_on_cleared_requirements(tiny_spec, replayer, record_property):
    r = replayer()
    w = genesis_state(tiny_spec)
    rng = random.Random(11)
    n = tiny_spec.dataset.train_size
    r.load(w)
    for _ in range(30):                                    # move off the initialisation first
        r.step(rng.sample(range(n), 4))
    w = r.state()
    totals: dict[str, int] = {}
    passed = agreed = 0
    for _ in range(25):
        batch = rng.sample(range(n), 4)
        before, a1 = step_with_threads(r, w, batch, 1)
        _, a2 = step_with_threads(r, w, batch, 2)
        for key, v in compare(tiny_spec, before, a1, a2, rng).items():
            totals[key] = totals.get(key, 0) + v
        p, a = check_requirement_sets(tiny_spec, before, a1, a2, r.r_space, 4, 100)
        passed, agreed = passed + p, agreed + a
    totals.update(r_sets_miner_passed=passed, r_sets_validator_agreed=agreed)
    record_property("tiny_cnn_thread_agreement", totals)
    print("tiny-cnn 1 vs 2 threads:", totals)
    assert totals["cleared_and_disagree"] == 0
    assert agreed == passed and passed > 0
    assert totals["cleared_1thread"] > 0.9 * totals["weights"]


def test_resnet18_threads_agree_on_cleared_requirements(record_property):
    """One step of resnet18-cifar on random CIFAR-shaped data (CIFAR-10 itself is not needed)."""
    spec = preset("cifar10-resnet18")
    spec = dataclasses.replace(spec, dataset=dataclasses.replace(spec.dataset, train_size=16, test_size=4),
                               evaluation=dataclasses.replace(spec.evaluation, size=4, batch=4))
    g = torch.Generator().manual_seed(21)
    data = Dataset(torch.randint(0, 256, (16, 3, 32, 32), dtype=torch.uint8, generator=g),
                   torch.randint(0, 10, (16,), dtype=torch.uint8, generator=g),
                   torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8, generator=g),
                   torch.randint(0, 10, (4,), dtype=torch.uint8, generator=g))
    r = Replayer(spec, data)
    w = genesis_state(spec)
    batch = [3, 7, 11, 0]
    before, a1 = step_with_threads(r, w, batch, 1)
    _, a2 = step_with_threads(r, w, batch, 2)
    totals = compare(spec, before, a1, a2, random.Random(5))
    passed, agreed = check_requirement_sets(spec, before, a1, a2, r.r_space, 4, 300)
    totals.update(r_sets_miner_passed=passed, r_sets_validator_agreed=agreed)
    record_property("resnet18_thread_agreement", totals)
    print("resnet18-cifar 1 vs 2 threads:", totals)
    assert totals["weights"] == 11_173_962
    assert totals["cleared_and_disagree"] == 0
    assert agreed == passed
