"""Turn a found proof into a signed block."""
from __future__ import annotations

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from consensus.block import Block, BlockHeader, public_key_hex, records_root
from consensus.records import Record
from consensus.spec import ChainSpec

from .reference import Found, Job


def build_block(spec: ChainSpec, job: Job, found: Found, key: Ed25519PrivateKey,
                records: tuple[Record, ...] = ()) -> Block:
    """The block: the signed header and ``records`` (it carries no weights)."""
    if public_key_hex(key) != job.miner:
        raise ValueError("the batches were derived for another miner key")
    header = BlockHeader(
        version=spec.header_version, chain_id=spec.chain_id, height=job.parent.height + 1,
        parent=job.parent.hash, timestamp_ms=found.timestamp_ms, difficulty=job.k, miner="",
        nonces=found.nonces, state_hash=found.state_hash, acc_after=found.acc_after.correct,
        records_root=records_root(list(records)),
    ).signed(key)
    return Block.of(header, records)
