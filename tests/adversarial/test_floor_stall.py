"""floor_stall: a claim that raises the accuracy floor cannot hold the chain still (protocol v3, §6 rule 3).

The attack (issue 19): a block may claim up to ``claim_tolerance`` more correct answers on E than its
W' really gets, and a miner can publish the best of many trajectories, so the floor of the next block
(the parent's claim + ``min_improvement``) can sit above what an honest step reaches. Under v2 the
floor never moved: on ResNet-18's BatchNorm transient that was a permanent stall. Under v3 it drops
by ``floor_relax`` per redraw epoch since the parent, to 0 at worst.

Here the worst case is built outright: a spec whose floor sits 40 above the parent's claim (no honest
step gains 40 of 500), and a parent that over-claims by the full tolerance. The honest child is
below the floor at epoch 0 -- the stall -- and is accepted once enough epochs have passed; the number
of epochs is the bound ceil((tolerance + min_improvement + the step's own loss) / floor_relax).
"""
from __future__ import annotations

import math
from dataclasses import replace

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from consensus.block import Block
from consensus.proof import redraw_epoch
from consensus.training import Replayer, genesis_state
from consensus.validation import accuracy_floor
from node.chain import Chain
from tests.blocks import resign
from tests.conftest import mine_block
from tests.chain_spec import TINY_TEST

ATTACKER = Ed25519PrivateKey.from_private_bytes(bytes([11]) * 32)
HONEST = Ed25519PrivateKey.from_private_bytes(bytes([12]) * 32)
RAISE = 40          # min_improvement of this spec: a floor no single honest block clears
LOSS = 10           # what the honest step may lose on E (it trains on 4 images, it may not improve)


def test_an_over_claim_cannot_stall_the_chain(tiny_dataset, tmp_path):
    base = TINY_TEST
    spec = replace(base, name="tiny-floor-stall",
                   proof=replace(base.proof, min_improvement=RAISE)).with_difficulty(4)
    relax, interval, tol = spec.proof.floor_relax, spec.proof.redraw_interval_ms, spec.evaluation.claim_tolerance
    assert relax > 0 and interval > 0
    chain = Chain(spec, tmp_path / "d", tiny_dataset, archival=True, clock=lambda: 4e9)
    try:
        g = chain.genesis
        # block 1, the attacker's: mined late enough after genesis that its own floor is the genesis floor (v4), then
        # re-signed with the largest claim the tolerance admits (a legal block)
        b1 = mine_block(spec, tiny_dataset, g, genesis_state(spec), chain.view, ATTACKER,
                        now_ms=g.timestamp_ms + 30 * interval)
        measured = Replayer(spec, tiny_dataset).accuracy(b1.state).correct
        claim = resign(b1.header, ATTACKER, spec, acc_after=measured + tol)
        out = chain.submit(Block(claim, b1.records))
        assert out.status == "accepted", out

        # the honest child: R re-drawn epoch after epoch, the floor relaxed each time
        epochs = math.ceil((tol + RAISE + LOSS) / relax)
        now = claim.timestamp_ms + epochs * interval + 1
        assert redraw_epoch(spec, claim.timestamp_ms, now) == epochs
        b2 = mine_block(spec, tiny_dataset, claim, b1.state, chain.view, HONEST, now_ms=now)
        honest_acc = Replayer(spec, tiny_dataset).accuracy(b2.state).correct
        stalled_floor = accuracy_floor(spec, claim, claim.timestamp_ms + 1)
        assert stalled_floor == measured + tol + RAISE > honest_acc        # v2's floor: refused for ever
        assert accuracy_floor(spec, claim, now) <= honest_acc

        out = chain.submit(Block(b2.header, b2.records))
        assert out.status == "accepted" and out.new_tip, out
        assert chain.tip().hash == b2.header.hash                          # the chain went on
        assert (b2.header.timestamp_ms - claim.timestamp_ms) // interval == epochs   # at the bound
    finally:
        chain.store.close()
