"""Turn a found proof into a signed block: the header, its admission ticket (consensus.ticket), the signature."""
from __future__ import annotations

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from consensus.block import Block, BlockHeader, public_key_hex, records_root
from consensus.records import Record
from consensus.spec import ChainSpec
from consensus.ticket import sign_with_ticket

from .reference import Found, Job


def build_block(spec: ChainSpec, job: Job, found: Found, key: Ed25519PrivateKey,
                records: tuple[Record, ...] = (), should_stop=None) -> Block | None:
    """The block: the header with its ticket, signed, and ``records`` (it carries no weights). None when
    ``should_stop()`` said so while the ticket was being solved (a new tip: the block would be stale)."""
    if public_key_hex(key) != job.miner:
        raise ValueError("the batches were derived for another miner key")
    header = BlockHeader(
        version=spec.header_version, chain_id=spec.chain_id, height=job.parent.height + 1,
        parent=job.parent.hash, timestamp_ms=found.timestamp_ms, difficulty=job.k, miner="",
        nonces=found.nonces, state_hash=found.state_hash, acc_after=found.acc_after.correct,
        records_root=records_root(list(records)),
    )
    signed = sign_with_ticket(spec, header, key, should_stop)
    return Block.of(signed, records) if signed is not None else None
