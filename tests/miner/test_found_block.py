"""A block found by either miner passes full validation through Chain.submit.

Chain.submit runs the four stages of consensus.validation (the header rules, the records rules,
the j advance steps and the winning step replayed from the parent's stored post-state with R and
the validators' band and the state commitment, one evaluation of W') and stores the verdict;
"accepted" means every rule passed.
"""
from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from consensus.block import Block
from consensus.weights import weights_hash
from miner.search import make_miner
from node.chain import Chain
from node.mining import mine_on_tip
from tests.blocks import BLOCK_GAP_MS, low_difficulty


@pytest.mark.parametrize("kind", ["fast", "reference"])
def test_found_blocks_are_accepted(tiny_spec, tiny_data, tmp_path, kind):
    spec = low_difficulty(tiny_spec, 4)
    chain = Chain(spec, tmp_path / kind, tiny_data, archival=True)
    miner = make_miner(kind, spec, tiny_data, seed=3)
    key = Ed25519PrivateKey.from_private_bytes(bytes([3]) * 32)
    for height in (1, 2):                     # the second block is mined on the first one's W'
        parent = chain.tip().header
        ts = parent.timestamp_ms + BLOCK_GAP_MS   # not the wall clock: the same blocks on every run
        mined = mine_on_tip(chain, miner, key, now_ms=lambda: ts, max_attempts=20_000)
        assert mined is not None, "no block within 20k attempts at k=4"
        block, found = mined
        header, records = block.header, block.wire_records
        assert header.version == 4 and header.parent == parent.hash and header.difficulty == 4
        assert 1 <= len(header.nonces) <= spec.proof.max_advance_steps + 1
        assert header.state_hash == weights_hash(found.state) and records == []
        out = chain.submit(Block(header, records))
        assert out.status == "accepted", f"{out.code}: {out.detail}"
        assert chain.tip().hash == header.hash and chain.tip().height == height
        assert chain.replays == height
        assert header.acc_after >= parent.acc_after + spec.proof.min_improvement
        assert abs(chain.store.get(header.hash).header.acc_after - found.acc_after.correct) == 0
