"""The hardware margin: a change that cleared the miner's margin on one run keeps its sign
(and stays non-zero) when the same canonical step runs with another thread count.

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

import torch

from consensus.data import Dataset
from consensus.hashing import sha256_hex
from consensus.requirements import (DECREASE, INCREASE, Requirement, derive_requirements, requirements_hold,
                                    ulp)
from consensus.spec import preset
from consensus.training import Replayer, genesis_state
from consensus.validation import miner_requirements_ok


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


def cleared_mask(before, after, spec) -> torch.Tensor:
    """Per weight: the change clears the miner margin in the direction it went (vectorised miner rule)."""
    signed = (after - before).abs()
    need = torch.clamp(torch.maximum(ulp(before), ulp(after)) * spec.requirements.margin_ulps,
                       min=float(spec.requirements.margin_abs))
    return (signed >= need) & (signed > 0)


def compare(spec, before, a1, a2, rng: random.Random) -> dict[str, int]:
    d1, d2 = a1 - before, a2 - before
    c1, c2 = cleared_mask(before, a1, spec), cleared_mask(before, a2, spec)
    same_sign_nonzero = (torch.sign(d1) == torch.sign(d2)) & (d2 != 0) & (d1 != 0)
    # the vectorised mask is the library's rule: spot-check it against miner_requirements_ok
    for i in rng.sample(range(before.numel()), 200):
        direction = INCREASE if d1[i] > 0 else DECREASE
        ok = miner_requirements_ok(before[[i]], a1[[i]], [Requirement(i, direction)], spec)
        assert ok == bool(c1[i]), i
    return {
        "weights": before.numel(),
        "bitwise_equal": int((a1 == a2).sum()),
        "cleared_1thread": int(c1.sum()),
        "cleared_2threads": int(c2.sum()),
        "cleared_and_disagree": int((c1 & ~same_sign_nonzero).sum() + (c2 & ~same_sign_nonzero).sum()),
        "sign_flips_any": int(((torch.sign(d1) != torch.sign(d2))).sum()),
    }


def check_requirement_sets(spec, before, a1, a2, n_params: int, k: int, parents: int) -> tuple[int, int]:
    """Real R sets: whenever the miner's rule passes on one run, the validator's passes on the other."""
    passed = agreed = 0
    for i in range(parents):
        reqs = derive_requirements(sha256_hex(b"det %d" % i), k, n_params)
        idx = [q.index for q in reqs]
        for x, y in ((a1, a2), (a2, a1)):
            if miner_requirements_ok(before[idx], x[idx], reqs, spec):
                passed += 1
                agreed += requirements_hold(before[idx], y[idx], reqs)
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
        p, a = check_requirement_sets(tiny_spec, before, a1, a2, r.index.total, 4, 100)
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
    passed, agreed = check_requirement_sets(spec, before, a1, a2, r.index.total, 4, 300)
    totals.update(r_sets_miner_passed=passed, r_sets_validator_agreed=agreed)
    record_property("resnet18_thread_agreement", totals)
    print("resnet18-cifar 1 vs 2 threads:", totals)
    assert totals["weights"] == 11_173_962
    assert totals["cleared_and_disagree"] == 0
    assert agreed == passed
