"""The committed known answers of protocol v4 (tests/known-answers-v4.json), in this process.

test_portable.py checks the genesis hashes, tiny's full replay and ResNet-18's first step under every
CPU kernel family and thread count (in subprocesses); this module checks every answer once here:
ResNet-18's full J + 1 step replay too, the batches of the nonces, the chain ids, and acc(W') on E,
which is an fp32 evaluation and may differ on other hardware by the claim tolerance, nothing more.
"""
from __future__ import annotations

import pytest

from consensus.data import load_dataset

from consensus.ticket import meets_target, puzzle_input, ticket_hash

from ..vectors import CASES, block_one, case_spec, compute, load


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
    assert abs(got["genesis_correct_on_E"] - want["genesis_correct_on_E"]) <= tol


def test_the_genesis_claim_is_the_measured_genesis_accuracy():
    """tiny's genesis block claims its model's correct count on E, as measured (block 1's floor, v4)."""
    want = load()["tiny"]
    spec = case_spec("tiny")
    assert abs(spec.evaluation.genesis_correct - want["genesis_correct_on_E"]) <= spec.evaluation.claim_tolerance


@pytest.mark.parametrize("case", CASES)
def test_the_committed_ticket(case):
    """Block 1's committed admission ticket hashes to the committed digest, which has the spec's zero bits;
    the ticket before it does not (scrypt as RFC 7914: tests/consensus/test_proof.py)."""
    want = load()[case]
    spec, header = block_one(case, want["after_all"])
    t = want["ticket"]
    assert t["bits"] == spec.proof.ticket_bits
    digest = ticket_hash(spec, puzzle_input(header), t["ticket"])
    assert digest.hex() == t["hash"] and meets_target(digest, t["bits"])
    if t["ticket"] > 0:
        assert not meets_target(ticket_hash(spec, puzzle_input(header), t["ticket"] - 1), t["bits"])
