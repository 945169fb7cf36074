"""`polchain verify`: replay every block of the stored best chain from genesis.

Under protocol v3 each block is replayed from the post-state the previous replay produced, so
a full check needs nothing but the headers and records: a pruned node verifies all of its
chain. Stored states and verdicts are never trusted. The rules are the node's own pipeline
(consensus.validation.validate_block), with no proof memo."""
from __future__ import annotations

import time
from dataclasses import dataclass

from consensus import errors
from consensus.block import Block, BlockHeader, genesis_header
from consensus.training import genesis_state
from consensus.validation import validate_block

from .chain import Chain


class _ReplayView:
    """Only headers already replayed are visible: the check never trusts the store's verdicts."""

    def __init__(self):
        self.headers: dict[str, BlockHeader] = {}

    def header(self, block_hash: str) -> BlockHeader | None:
        return self.headers.get(block_hash)

    def is_invalid(self, block_hash: str) -> bool:
        return False


@dataclass
class VerifyReport:
    ok: bool
    height: int
    verified: int
    seconds: float
    tip: str = ""
    bad_height: int | None = None
    bad_hash: str | None = None
    code: str | None = None
    detail: str | None = None
    final_accuracy: int | None = None


def verify_chain(chain: Chain, *, progress=None) -> VerifyReport:
    spec = chain.spec
    t0 = time.perf_counter()
    hashes = chain.store.best_hashes()
    view = _ReplayView()
    genesis = genesis_header(spec)
    if not hashes or hashes[0] != genesis.hash:
        return VerifyReport(False, 0, 0, 0.0, bad_height=0, code="bad-genesis", detail="genesis mismatch")
    view.headers[genesis.hash] = genesis
    now_ms = int(time.time() * 1000)
    last_acc = None
    state = genesis_state(spec)
    for height, h in enumerate(hashes[1:], start=1):
        stored = chain.store.get(h)
        header = stored.header
        try:
            if header.hash != h:
                raise errors.Malformed("stored header does not hash to its key")
            checked = validate_block(Block(header, stored.records), spec, view, now_ms, replayer=chain.replayer,
                                     parent_state=state)
            state, last_acc = checked.state, checked.after.correct
        except errors.BlockError as exc:
            return VerifyReport(False, len(hashes) - 1, height - 1, time.perf_counter() - t0, hashes[-1],
                                height, h, exc.code, exc.detail, last_acc)
        view.headers[h] = header
        if progress:
            progress(height, len(hashes) - 1)
    return VerifyReport(True, len(hashes) - 1, len(hashes) - 1, time.perf_counter() - t0, hashes[-1],
                        final_accuracy=last_acc)
