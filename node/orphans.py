"""``OrphanPool``: blocks waiting for their parent, bounded in count and bytes, the oldest out first."""
from __future__ import annotations

import json
from collections import OrderedDict
from typing import Iterator, NamedTuple

from consensus.block import Block

ORPHAN_LIMIT = 64
ORPHAN_BYTES = 8 << 20   # ... and at most this many bytes of them (header + records as JSON)


class Held(NamedTuple):
    """An orphan: a block waiting for its parent, and who sent it."""
    block: Block
    peer: str | None


class OrphanPool:
    """At most ``limit`` blocks and ``max_bytes`` bytes (a block larger than the byte cap alone is not
    held). Not thread-safe: the chain uses it under its lock."""

    def __init__(self, limit: int = ORPHAN_LIMIT, max_bytes: int = ORPHAN_BYTES):
        self.limit, self.max_bytes = limit, max_bytes
        self._held: OrderedDict[str, Held] = OrderedDict()
        self._sizes: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self._held)

    def __contains__(self, block_hash: object) -> bool:
        return block_hash in self._held

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._held))

    def __getitem__(self, block_hash: str) -> Held:
        return self._held[block_hash]

    def hold(self, block: Block, peer: str | None) -> None:
        size = len(block.header.encode()) + len(json.dumps(block.wire_records))
        if size > self.max_bytes:
            return
        self._held[block.hash] = Held(block, peer)
        self._held.move_to_end(block.hash)
        self._sizes[block.hash] = size
        while len(self._held) > self.limit or sum(self._sizes.values()) > self.max_bytes:
            oldest, _ = self._held.popitem(last=False)
            self._sizes.pop(oldest, None)

    def pop(self, block_hash: str) -> Held | None:
        self._sizes.pop(block_hash, None)
        return self._held.pop(block_hash, None)

    def take_children(self, parent_hash: str) -> list[Held]:
        """The held blocks whose parent is ``parent_hash``, taken out of the pool (oldest first)."""
        hashes = [h for h, o in self._held.items() if o.block.header.parent == parent_hash]
        return [held for held in map(self.pop, hashes) if held is not None]

    def size_bytes(self) -> int:
        """Bytes held (header and records of each held block, as JSON)."""
        return sum(self._sizes.values())

    def missing_parents(self) -> list[str]:
        """Parents of held blocks that are not held themselves."""
        parents = [o.block.header.parent for o in self._held.values()]
        return [p for p in parents if p not in self._held]
