"""Header lookups for the header rules (consensus.validation.ChainView): over the store, and over the
store plus a batch of headers checked but not stored yet."""
from __future__ import annotations

from consensus.block import BlockHeader

from .store import INVALID, Store


class StoreView:
    """consensus.validation.ChainView over the store (valid and header-only blocks)."""

    def __init__(self, store: Store):
        self.store = store

    def header(self, block_hash: str) -> BlockHeader | None:
        b = self.store.get(block_hash)
        return b.header if b is not None and b.status != INVALID else None

    def is_invalid(self, block_hash: str) -> bool:
        return self.store.status(block_hash) == INVALID


class BatchView:
    """The store's headers plus those checked earlier in the same batch (not stored yet)."""

    def __init__(self, base: StoreView):
        self.base = base
        self.added: dict[str, BlockHeader] = {}
        self.read: dict[str, BlockHeader | None] = {}     # store reads, once each per batch

    def add(self, header: BlockHeader) -> None:
        self.added[header.hash] = header

    def header(self, block_hash: str) -> BlockHeader | None:
        got = self.added.get(block_hash)
        if got is None:
            if block_hash not in self.read:
                self.read[block_hash] = self.base.header(block_hash)
            got = self.read[block_hash]
        return got

    def is_invalid(self, block_hash: str) -> bool:
        return block_hash not in self.added and self.base.is_invalid(block_hash)
