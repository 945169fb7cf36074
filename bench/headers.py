"""Synthetic header chains for header-sync measurements and tests.

Every header rule (signature, admission ticket, nonces, difficulty retarget, median time past) holds; the
proofs do not exist (no steps were trained), so only the headers-first path can use them.
Timestamps are spaced by the target interval, so k stays at the spec's initial value.
"""
from __future__ import annotations


from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from consensus.block import BlockHeader, genesis_header
from consensus.difficulty import next_difficulty
from consensus.hashing import ZERO_HASH, sha256_hex
from consensus.spec import ChainSpec
from consensus.ticket import sign_with_ticket


class _Headers:
    """consensus.validation.ChainView over a dict."""

    def __init__(self, headers):
        self.by_hash = {h.hash: h for h in headers}

    def header(self, block_hash: str) -> BlockHeader | None:
        return self.by_hash.get(block_hash)

    def is_invalid(self, block_hash: str) -> bool:
        return False


def header_chain(spec: ChainSpec, n: int, key: Ed25519PrivateKey, *, ancestors: list[BlockHeader] | None = None,
                 gap_ms: int | None = None, salt: str = "") -> list[BlockHeader]:
    """``n`` signed headers continuing ``ancestors`` (genesis..parent; default: genesis alone).
    ``salt`` makes a distinct branch from the same parent."""
    chain = list(ancestors or [genesis_header(spec)])
    view = _Headers(chain)
    gap = gap_ms or spec.difficulty.target_interval_ms
    out: list[BlockHeader] = []
    parent = chain[-1]
    for _ in range(n):
        h = BlockHeader(version=spec.header_version, chain_id=spec.chain_id, height=parent.height + 1,
                        parent=parent.hash, timestamp_ms=parent.timestamp_ms + gap,
                        difficulty=next_difficulty(spec, parent, view), miner="", nonces=(1,),
                        state_hash=sha256_hex(f"{salt}{parent.hash}".encode()), acc_after=0,
                        records_root=ZERO_HASH)
        h = sign_with_ticket(spec, h, key)
        view.by_hash[h.hash] = h
        out.append(h)
        parent = h
    return out

