"""The committed known answers of the canonical step (tests/known-answers-v3.json), in this process.

test_portable.py checks the genesis hashes, tiny's full replay and ResNet-18's first step under every
CPU kernel family and thread count (in subprocesses); this module checks every answer once here:
ResNet-18's full J + 1 step replay too, the batches of the nonces, the chain ids, and acc(W') on E,
which is an fp32 evaluation and may differ on other hardware by the claim tolerance, nothing more.
"""
from __future__ import annotations

import pytest

from consensus.data import load_dataset

from ..vectors import CASES, case_spec, compute, load


@pytest.fixture(scope="module")
def data():
    return load_dataset(case_spec("tiny").dataset, None)


@pytest.mark.parametrize("case", CASES)
def test_every_known_answer_here(case, data):
    want = load()[case]
    got = compute(case, dataset=data)
    for key in ("chain_id", "genesis", "miner", "parent", "nonces", "batches", "after_1", "after_all"):
        assert got[key] == want[key], f"{case}: {key} is {got[key]}, committed {want[key]}"
    tol = case_spec(case).evaluation.claim_tolerance
    assert abs(got["correct_on_E"] - want["correct_on_E"]) <= tol, (got["correct_on_E"], want["correct_on_E"])
