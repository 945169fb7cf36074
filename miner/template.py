"""Turn a found proof into a signed block."""
from __future__ import annotations

import time

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from consensus.block import BlockHeader, records_root
from consensus.difficulty import median_time_past
from consensus.records import Record
from consensus.spec import ChainSpec
from consensus.weights import encode_state, weights_hash

from .reference import Found


def build_block(spec: ChainSpec, parent: BlockHeader, k: int, found: Found, key: Ed25519PrivateKey,
                view, records: tuple[Record, ...] = (), now_ms: int | None = None) -> tuple[BlockHeader, bytes]:
    """The signed header and the safetensors body (W)."""
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    ts = max(now_ms, median_time_past(spec, parent, view) + 1)
    body = encode_state(found.weights)
    header = BlockHeader(
        version=spec.header_version, chain_id=spec.chain_id, height=parent.height + 1, parent=parent.hash,
        timestamp_ms=ts, difficulty=k, miner="", batch=tuple(found.batch),
        weights_hash=weights_hash(found.weights), acc_before=found.acc_before.correct,
        acc_after=found.acc_after.correct, records_root=records_root(list(records)),
    ).signed(key)
    return header, body
