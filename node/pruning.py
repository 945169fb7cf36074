"""``Pruner``: bounds on what the store keeps -- old post-states, header-only rows, invalid rows."""
from __future__ import annotations

import logging

from consensus.spec import ChainSpec

from .post_states import CHECKPOINT_EVERY, PRUNED_BELOW
from .store import INVALID, Store

log = logging.getLogger("polchain.chain")

HEADER_WINDOW = 1000     # header-only rows this far below the tip are pruned (with the rows above them)
HEADER_CAP = 50_000      # header-only rows kept at most (above MAX_ASSUME_HEADERS of a snapshot sync)
INVALID_CAP = 10_000     # invalid rows kept at most: past it the oldest go (see invalid_added)


class Pruner:
    def __init__(self, store: Store, spec: ChainSpec, *, keep_weights: int = 100, archival: bool = False,
                 header_window: int = HEADER_WINDOW, header_cap: int = HEADER_CAP, invalid_cap: int = INVALID_CAP):
        self.store, self.spec = store, spec
        self.keep_weights, self.archival = keep_weights, archival
        self.header_window, self.header_cap, self.invalid_cap = header_window, header_cap, invalid_cap
        # upper bounds on the header-only and invalid row counts (every insert adds to them; a deletion
        # or an upgrade is not subtracted), so a cap is checked with one COUNT only when one crosses it
        self._header_rows = store.count_header_only()
        self._invalid_rows = store.count_status(INVALID)

    def after_tip_change(self, tip_height: int, fork: int | None = None) -> None:
        """Stale header-only rows (``prune_headers``), then the post-states of every valid block, best chain
        and side branches alike, below ``tip - keep_weights`` (genesis stays; the best chain's recent states
        stay, snapshot sync serves them, and a state shared with one of them stays; so do the best chain's
        checkpoints, every CHECKPOINT_EVERY-th height, from which a pruned state is rebuilt in at most that
        many blocks, whatever its height: issue 33.3).

        The meta key ``states_pruned_below`` records how far pruning got, so a tip change visits only
        the new heights, a jump of many blocks (sync, reorg) leaves nothing behind, and a restart with
        a smaller --keep-weights catches up; a reorg moves it back to the fork. Files go before the
        marker moves: a crash between the two only repeats deletions.
        """
        self.prune_headers(tip_height)
        if self.archival:
            return
        cutoff = tip_height - self.keep_weights
        if cutoff <= 1:
            return
        start = int(self.store.get_meta(PRUNED_BELOW) or 1)
        if fork is not None:
            start = min(start, max(fork, 1))
        if start >= cutoff:
            return
        keep = {self.spec.model.genesis_weights_sha256}
        keep.update(b.header.state_hash for b in self.store.best_range(cutoff, self.keep_weights + 1))
        keep.update(self.checkpoints(start, cutoff))
        for lo in range(start, cutoff, 500):
            for _, state_hash in self.store.valid_states(lo, min(lo + 500, cutoff)):
                if state_hash not in keep:
                    self.store.weights.delete(state_hash)
        self.store.set_meta(PRUNED_BELOW, str(cutoff))

    def checkpoints(self, start: int, stop: int) -> set[str]:
        """The post-state hashes of the best chain's checkpoints at heights in [start, stop)."""
        out = set()
        for h in range(-(-start // CHECKPOINT_EVERY) * CHECKPOINT_EVERY, stop, CHECKPOINT_EVERY):
            block_hash = self.store.hash_at(h)
            row = self.store.get(block_hash) if block_hash is not None else None
            if row is not None:
                out.add(row.header.state_hash)
        return out

    def prune_headers(self, tip_height: int) -> None:
        """Header-only rows (headers-first, never validated) are bounded two ways, each deletion one
        transaction: rows more than ``max(header_window, keep_weights)`` below the tip go with the
        header-only rows above them (a fork that deep cannot be validated from kept states, and a sync
        fetches its headers again); past ``header_cap`` rows, branches are trimmed from their least-work
        tips down to 90 % of the cap (a branch loses its top, never its base)."""
        below = tip_height - max(self.header_window, self.keep_weights)
        gone = 0
        while below > 0:
            stale = self.store.header_only_below(below, 500)
            n = self.store.delete_header_only(stale, descendants=True) if stale else 0
            if not n:
                break
            gone += n
        gone += self._cap_headers()
        if gone:
            log.info("pruned %d header-only rows (stale forks, or over the cap of %d)", gone, self.header_cap)

    def header_added(self) -> None:
        """One header-only row inserted outside a batch: the cap is checked once the bound crosses it."""
        self._header_rows += 1
        if self._header_rows > self.header_cap:
            gone = self._cap_headers()
            if gone:
                log.info("pruned %d header-only rows (over the cap of %d)", gone, self.header_cap)

    def _cap_headers(self) -> int:
        """Past ``header_cap`` header-only rows, trim the least-work branches from their tips down to
        90 % of the cap (each deletion one transaction). Returns the rows deleted."""
        count = self.store.count_header_only()
        over, gone = count - self.header_cap, 0
        if over > 0:
            want = over + self.header_cap // 10
            while want > 0:
                leaves = self.store.header_only_leaves(100)
                n = self.store.delete_header_only(leaves, descendants=False, up_to=want) if leaves else 0
                if not n:
                    break
                want -= n
                gone += n
        self._header_rows = count - gone
        return gone

    def invalid_added(self, n: int) -> None:
        """``n`` rows just became invalid. Past ``invalid_cap`` the oldest invalid rows go, down to 90 %
        of the cap, in one transaction (a crash keeps all or none; the cap is checked again on the next
        invalid row). An evicted block that comes back is simply validated again and rejected again:
        a peer gains nothing it could not get from a fresh invalid block, which costs the same."""
        self._invalid_rows += n
        if self._invalid_rows <= self.invalid_cap:
            return
        count = self.store.count_status(INVALID)
        gone = self.store.delete_oldest_invalid(count - self.invalid_cap * 9 // 10) if count > self.invalid_cap \
            else 0
        self._invalid_rows = count - gone
        if gone:
            log.info("evicted the %d oldest invalid rows (over the cap of %d)", gone, self.invalid_cap)
