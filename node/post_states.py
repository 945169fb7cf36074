"""``PostStates``: the post-states W' of valid blocks -- on disk, a few rebuilt ones in memory, and
rebuilt by replay when not kept."""
from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from typing import Callable

from consensus import errors
from consensus.block import BlockHeader
from consensus.validation import batches
from consensus.spec import ChainSpec
from consensus.training import CanonicalStep
from consensus.weights import State, decode_state, encode_state, weights_hash

from .store import VALID, Store

log = logging.getLogger("polchain.chain")

REBUILD_LIMIT = 10_000   # blocks replayed at most to rebuild a post-state that is not kept
CHECKPOINT_EVERY = 32    # pruning keeps the best chain's post-state at every 32nd height (node/pruning.py), so
                         # rebuilding a pruned best-chain state replays at most 31 blocks, whatever its height
REBUILT_IN_MEMORY = 4    # rebuilt post-states below the pruning line kept in memory (a deep fork's tip and parent)
PRUNED_BELOW = "states_pruned_below"   # meta key: post-states below this height are pruned (node/pruning.py)


class PostStates:
    """W' by its hash: the content-addressed state store, checked against the hash on every read, plus
    up to REBUILT_IN_MEMORY states rebuilt below the pruning line (which pruning would never visit
    again on disk)."""

    def __init__(self, store: Store, spec: ChainSpec, template: State, *, archival: bool = False):
        self.store, self.spec, self.template, self.archival = store, spec, template, archival
        self.rebuilt: OrderedDict[str, State] = OrderedDict()
        self._rebuilt_lock = threading.Lock()      # a rebuild runs outside the chain's lock (Chain.rebuild_unlocked)
        self.rebuild_lock = threading.Lock()       # one rebuild at a time

    def kept_on_disk(self, height: int) -> bool:
        """Whether a post-state at ``height`` belongs on disk: pruning has not passed it (a state below the
        line would never be visited again and leak)."""
        return self.archival or height >= int(self.store.get_meta(PRUNED_BELOW) or 1)

    def load(self, state_hash: str) -> State | None:
        """W' by hash, unchecked (the tip's working state; ``stored`` checks the hash)."""
        with self._rebuilt_lock:
            if state_hash in self.rebuilt:
                return self.rebuilt[state_hash]
        data = self.store.weights.get(state_hash)
        return decode_state(data) if data is not None else None

    def stored(self, header: BlockHeader) -> State | None:
        """The post-state of ``header`` from memory or disk, or None where it is absent or damaged (a
        damaged file is logged: it says nothing about the block)."""
        with self._rebuilt_lock:
            if header.state_hash in self.rebuilt:
                self.rebuilt.move_to_end(header.state_hash)
                return self.rebuilt[header.state_hash]
        data = self.store.weights.get(header.state_hash)
        if data is None:
            return None
        try:
            state = decode_state(data)
            if weights_hash(state) == header.state_hash:
                return state
        except errors.BlockError:
            pass
        log.error("the stored post-state of block %s (height %d), %s, is damaged (disk or filesystem): "
                  "rebuilding it from an ancestor", header.hash[:16], header.height,
                  self.store.weights.path(header.state_hash))
        return None

    def keep(self, header: BlockHeader, state: State) -> None:
        """A newly validated block's W': on disk, or in memory when it lies below the pruning line."""
        if not self.kept_on_disk(header.height):
            self._remember(header.state_hash, state)
        elif not self.store.weights.has(header.state_hash):
            self.store.weights.put(header.state_hash, encode_state(state))

    def _remember(self, state_hash: str, state: State) -> None:
        with self._rebuilt_lock:
            self.rebuilt[state_hash] = state
            self.rebuilt.move_to_end(state_hash)
            while len(self.rebuilt) > REBUILT_IN_MEMORY:
                self.rebuilt.popitem(last=False)

    def rebuild(self, parent: BlockHeader, step: CanonicalStep,
                should_stop: Callable[[], bool] | None = None) -> State | None:
        """The post-state of a valid block whose state is not kept (pruned, on a fork deeper than the
        window, or damaged on disk), rebuilt by replaying the stored headers' nonces from the nearest
        ancestor whose state is kept (a best-chain checkpoint within CHECKPOINT_EVERY blocks, genesis at worst),
        each block checked against its state_hash. The
        result goes to disk where pruning will visit it again, else to memory, so a deep fork's next
        block does not replay the path again. Costs at most REBUILD_LIMIT blocks of J+1 steps; every
        block on the path carried its own 2^k work. None when it cannot be rebuilt; raises
        ``errors.ReplayStopped`` when ``should_stop()`` says so between two steps."""
        path, cur = [], parent
        while True:
            if cur.height == 0:
                state = {k: v.clone() for k, v in self.template.items()}
                break
            state = self.stored(cur) if cur is not parent else None
            if state is not None:
                break
            path.append(cur)
            row = self.store.get(cur.parent)
            if row is None or row.status != VALID or len(path) > REBUILD_LIMIT:
                return None
            cur = row.header
        log.info("rebuilding the post-state of block %s (height %d): replaying %d block(s) from height %d",
                 parent.hash[:16], parent.height, len(path), cur.height)
        done, on = 0, cur
        for h in reversed(path):
            step.load(state)
            for batch in batches(h, on, self.spec):
                if should_stop is not None and should_stop():
                    raise errors.ReplayStopped(done)
                step.step(batch)
                done += 1
            state, on = step.state(), h
            if weights_hash(state) != h.state_hash:
                log.error("rebuilding: block %s (height %d) replays to another state than it commits to",
                          h.hash[:16], h.height)
                return None
        if self.kept_on_disk(parent.height):
            self.store.weights.delete(parent.state_hash)      # a damaged file, if that is why
            self.store.weights.put(parent.state_hash, encode_state(state))
        else:
            self._remember(parent.state_hash, state)
        return state
