"""Cheating on a v2 proof with the honest chain's own material, through the node's Chain.submit.

Attacks on the paper's rules and their v2 counterparts are in test_attacks.py; these are the
reuse and accuracy cheats that remain possible to *try* under v2: a valid proof moved to another
parent, and an honest proof with an inflated or deflated claim. (The accuracy floor itself is tested
in tests/consensus/test_validation.py.)
"""
from __future__ import annotations


from consensus.block import Block
from consensus import errors

from .conftest import HONEST_KEY, signed


def test_old_proof_replayed_onto_new_parent(chain, honest, attack):
    """An old block's nonces and post-state, re-parented onto the tip: the batches derive from the
    parent, so the replay from the tip's post-state neither meets R nor reproduces the state."""
    tip = chain.tip().header
    for old in honest.blocks[2:6]:
        h = signed(old.header, HONEST_KEY, height=tip.height + 1, parent=tip.hash,
                   timestamp_ms=tip.timestamp_ms + 2000, difficulty=tip.difficulty)
        out = chain.submit(Block(h, old.records), "http://cheater.invalid:1")
        assert (out.status, out.code) in {("invalid", "requirements-not-met"), ("invalid", "state-mismatch")}, out


def test_fresh_proof_moved_to_sibling_parent(chain, honest, attack):
    """The next block's proof (valid on the tip) claimed as a child of the tip's parent."""
    tip = chain.tip().header
    parent = honest.blocks[-2].header
    moved = signed(honest.next.header, HONEST_KEY, height=parent.height + 1, parent=parent.hash,
                   timestamp_ms=tip.timestamp_ms + 1)
    out = chain.submit(Block(moved, honest.next.records), "http://cheater.invalid:1")
    assert out.status == "invalid" and out.code in ("requirements-not-met", "state-mismatch"), out


def test_inflated_accuracy_claim(chain, honest, attack):
    """The miner's own valid proof with acc_after inflated beyond the claim tolerance (to raise the floor
    for competitors), or deflated below it: bad-accuracy-claim."""
    nxt = honest.next.header
    tol = chain.spec.evaluation.claim_tolerance
    attack(signed(nxt, HONEST_KEY, acc_after=nxt.acc_after + tol + 1), honest.next.records,
           "bad-accuracy-claim", errors.InvalidBlock)
    attack(signed(nxt, HONEST_KEY, acc_after=max(0, nxt.acc_after - tol - 1)), honest.next.records,
           "bad-accuracy-claim", errors.InvalidBlock)
