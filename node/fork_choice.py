"""Fork choice over the store: the heaviest valid branch wins (first seen wins ties); paths between
blocks and the best chain, and whether a branch claims more work than the tip."""
from __future__ import annotations

from consensus.block import BlockHeader
from consensus.difficulty import work

from .store import Store, StoredBlock

HEAVIER_BRANCHES_CHECKED = 16   # header-only tips heavier than the active tip looked at for a deferred rebuild


def work_of(store: Store, header: BlockHeader) -> int:
    """Cumulative work of a block whose parent is stored."""
    return store.get(header.parent).cumulative_work + work(header.difficulty)


def path_to(store: Store, block_hash: str) -> list[str]:
    """Hashes genesis..block_hash along parent links."""
    path, h = [], block_hash
    while True:
        b = store.get(h)
        if b is None:
            raise LookupError(h)
        path.append(h)
        if b.height == 0:
            break
        h = b.header.parent
    return path[::-1]


def path_from_best(store: Store, new_tip: StoredBlock) -> list[str]:
    """Hashes genesis..new_tip: the stored best chain up to where new_tip's branch leaves it, then the
    branch. Walks back only the branch (one block when the tip is extended), not to genesis, so a sync
    of n blocks costs O(n) block reads, not O(n^2)."""
    branch, b = [], new_tip
    while store.hash_at(b.height) != b.hash:
        branch.append(b.hash)
        parent = store.get(b.header.parent) if b.height > 0 else None
        if parent is None:
            return path_to(store, new_tip.hash)
        b = parent
    return store.best_hashes()[:b.height + 1] + branch[::-1]


def branch_claims_more_work(store: Store, child: BlockHeader, tip_work: int) -> bool:
    """Whether a branch through ``child`` claims more work than ``tip_work``: the child itself, or a
    header-only descendant (headers-first sync stores a fork's headers before its bodies). Claimed work
    is checked by the replay that follows; a false claim makes the first replayed block invalid, its
    descendants with it, and bans its sender."""
    if work_of(store, child) > tip_work:
        return True
    for row in store.header_only_heavier_than(tip_work, limit=HEAVIER_BRANCHES_CHECKED):
        cur = row
        while cur is not None and cur.header.height > child.height:
            cur = store.get(cur.header.parent)
        if cur is not None and cur.hash == child.hash:
            return True
    return False
