"""A block found by either miner passes full validation through Chain.submit.

Chain.submit runs consensus.validation.validate_header, decode_weights,
validate_records and validate_proof (the replayed step, R, the accuracy rule)
and stores the verdict; "accepted" means every rule passed.
"""
from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from consensus.difficulty import next_difficulty
from miner.search import make_miner
from miner.template import build_block
from node.chain import Chain

from .conftest import low_difficulty


@pytest.mark.parametrize("kind", ["fast", "reference"])
def test_found_blocks_are_accepted(tiny_spec, tiny_data, tmp_path, kind):
    spec = low_difficulty(tiny_spec, 4)
    chain = Chain(spec, tmp_path / kind, tiny_data, archival=True)
    miner = make_miner(kind, spec, tiny_data, seed=3)
    key = Ed25519PrivateKey.generate()
    for height in (1, 2):                     # the second block is mined on the first one's W'
        tip, w_prime = chain.tip_model()
        k = next_difficulty(spec, tip.header, chain.view)
        found = miner.mine(tip.header, k, w_prime, max_attempts=20_000)
        assert found is not None, "no block within 20k attempts at k=4"
        header, body = build_block(spec, tip.header, k, found, key, chain.view)
        out = chain.submit(header, [], body, peer=None)
        assert out.status == "accepted", f"{out.code}: {out.detail}"
        assert chain.tip().hash == header.hash and chain.tip().height == height
        assert header.acc_after > header.acc_before
