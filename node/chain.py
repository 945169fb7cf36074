"""The chain: consensus rules applied to the store.

``Chain.submit`` runs the whole pipeline for one block (header rules, body,
proof), records the verdict, moves the tip by cumulative work (first seen wins
ties) and connects orphans waiting for this block. Blocks validate given only
their parent's *header* (R comes from the parent hash, the regression bound
from the parent's claimed accuracy), so a fork needs no state rollback: a reorg
is a rewrite of the best-chain index in one transaction.
"""
from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from sqlalchemy.exc import DatabaseError

from consensus import errors
from consensus.block import BlockHeader, genesis_header, parse_records
from consensus.data import Dataset
from consensus.difficulty import work
from consensus.spec import ChainSpec
from consensus.training import Replayer, genesis_state
from consensus.validation import (check_records_commitment, decode_weights, validate_header,
                                  validate_proof, validate_records)
from consensus.weights import State, decode_state, encode_state, weights_hash

from .store import HEADER_ONLY, INVALID, VALID, Store, StoredBlock

log = logging.getLogger("polchain.chain")

ORPHAN_LIMIT = 64
ORPHAN_BYTES_LIMIT = 512 << 20


class StartupError(Exception):
    """The node must not start (wrong genesis weights, corrupt store...)."""


@dataclass
class Outcome:
    status: str                    # accepted | orphan | duplicate | ignored | invalid | bad-body | header-ok
    code: str = ""
    detail: str = ""
    block_hash: str = ""
    reorg_depth: int = 0
    new_tip: bool = False
    connected: list[str] = field(default_factory=list)  # orphans connected as a result

    @property
    def ok(self) -> bool:
        return self.status in ("accepted", "header-ok")


class StoreView:
    """consensus.validation.ChainView over the store (valid and header-only blocks)."""

    def __init__(self, store: Store):
        self.store = store

    def header(self, block_hash: str) -> BlockHeader | None:
        b = self.store.get(block_hash)
        return b.header if b is not None and b.status != INVALID else None

    def is_invalid(self, block_hash: str) -> bool:
        return self.store.status(block_hash) == INVALID


class Chain:
    def __init__(self, spec: ChainSpec, datadir: Path, dataset: Dataset, *, keep_weights: int = 100,
                 archival: bool = False, clock: Callable[[], float] = time.time):
        self.spec = spec
        self.dataset = dataset
        self.store = _open_store(Path(datadir))
        self.view = StoreView(self.store)
        self.replayer = Replayer(spec, dataset)
        self.template = genesis_state(spec)
        self.keep_weights = keep_weights
        self.archival = archival
        self.clock = clock
        self.lock = threading.RLock()
        self.orphans: OrderedDict[str, tuple[BlockHeader, list, bytes | None, str | None]] = OrderedDict()
        self.tip_listeners: list[Callable[[StoredBlock, int], None]] = []
        self._tip_model: tuple[str, State] | None = None
        self.genesis = genesis_header(spec)
        self._init_genesis()
        self._recover_tip()
        self._check_tip_weights()

    # -- start-up --------------------------------------------------------------
    def _init_genesis(self) -> None:
        removed = self.store.weights.clean_temp()
        if removed:
            log.info("removed %d partial weights files left by a crash", removed)
        state = self.template
        got = weights_hash(state)
        if got != self.spec.model.genesis_weights_sha256:
            raise StartupError(
                f"genesis weights hash to {got}, but the chain spec pins {self.spec.model.genesis_weights_sha256}: "
                "this PyTorch build initialises the model differently; refusing to start")
        if self.store.get(self.genesis.hash) is None:
            self.store.weights.put(got, encode_state(state))
            self.store.put_block(self.genesis, [], VALID, work(self.genesis.difficulty), acc=(0, 0))
            self.store.set_tip(self.genesis, [self.genesis.hash])
        elif self.store.hash_at(0) != self.genesis.hash:
            raise StartupError("the datadir holds a different chain (genesis mismatch)")

    def _check_tip_weights(self) -> None:
        """The tip's weights are the node's working state (mining, serving peers): a stored file
        that no longer hashes to the tip's weights_hash stops the start-up with a clear message."""
        tip = self.store.tip()
        if tip is None:
            return
        want = tip.header.weights_hash
        data = self.store.weights.get(want)
        if data is None:
            log.warning("the weights of the tip (height %d) are not stored", tip.height)
            return
        try:
            got = weights_hash(decode_state(data))
            problem = None if got == want else f"hashes to {got[:16]}..., not {want[:16]}..."
        except errors.BlockError as exc:
            problem = f"is unreadable ({exc.detail or exc.code})"
        if problem:
            raise StartupError(
                f"weights file {self.store.weights.path(want)} of the tip (height {tip.height}, block "
                f"{tip.hash[:16]}) {problem}: the file is corrupt (disk or filesystem damage). Restore the "
                "datadir from a backup, or move it aside and sync again from peers")

    def _recover_tip(self) -> None:
        """After a crash the best valid block may be ahead of the recorded tip."""
        best = self.store.best_candidate()
        tip = self.store.tip()
        if best is not None and (tip is None or best.cumulative_work > tip.cumulative_work
                                 or tip.status != VALID):
            self._switch_tip(best)

    # -- queries ---------------------------------------------------------------
    def tip(self) -> StoredBlock:
        tip = self.store.tip()
        assert tip is not None
        return tip

    def path_to(self, block_hash: str) -> list[str]:
        path = []
        h = block_hash
        while True:
            b = self.store.get(h)
            if b is None:
                raise LookupError(h)
            path.append(h)
            if b.height == 0:
                break
            h = b.header.parent
        return path[::-1]

    def load_weights(self, weights_hash_hex: str) -> State | None:
        data = self.store.weights.get(weights_hash_hex)
        return decode_state(data) if data is not None else None

    def tip_model(self) -> tuple[StoredBlock, State]:
        """The tip block and its model W' = update(W, P) (W itself at genesis)."""
        with self.lock:
            tip = self.tip()
            if self._tip_model is None or self._tip_model[0] != tip.hash:
                w = self.load_weights(tip.header.weights_hash)
                if w is None:
                    raise LookupError(f"weights of tip {tip.hash[:16]} are not stored")
                state = w if tip.height == 0 else self.replayer.update(w, tip.header.batch)
                self._tip_model = (tip.hash, state)
            return tip, self._tip_model[1]

    # -- the pipeline -----------------------------------------------------------
    def submit(self, header: BlockHeader, records_json: list, weights: bytes | None,
               peer: str | None = None, *, assumed: bool = False) -> Outcome:
        """``assumed``: assume-valid (p2p, ``--assume-valid``): the header rules and the records root are
        checked, the weights (when given) must match the header, but the proof is not replayed."""
        with self.lock:
            out = self._submit_one(header, records_json, weights, peer, assumed)
            if out.status == "accepted":
                out.connected = self._connect_orphans(header.hash)
            return out

    def _submit_one(self, header, records_json, weights, peer, assumed: bool = False) -> Outcome:
        h = header.hash
        known = self.store.status(h)
        if known in (VALID, INVALID):
            return Outcome("duplicate", "duplicate", f"already {known}", h)
        try:
            parent = validate_header(header, self.spec, self.view, int(self.clock() * 1000))
        except errors.UnknownParent as exc:
            self._hold_orphan(header, records_json, weights, peer)
            return Outcome("orphan", exc.code, exc.detail, h)
        except errors.Ignored as exc:
            return Outcome("ignored", exc.code, exc.detail, h)
        except errors.InvalidBlock as exc:
            return self._reject(header, records_json, exc, peer)
        if weights is None and not assumed:
            # headers-first: the header is fine; the body will be fetched
            if known is None:
                self.store.put_block(header, records_json, HEADER_ONLY,
                                     self._work_of(parent, header), peer=peer)
            return Outcome("header-ok", "", "", h)
        if self.store.status(parent.hash) != VALID:
            # the parent passed the header rules only (headers-first): a block can be valid only on a
            # valid parent, so wait for the parent's body like an orphan waits for its parent
            if known is None:
                self.store.put_block(header, records_json, HEADER_ONLY, self._work_of(parent, header), peer=peer)
            if weights is not None and not assumed:
                self._hold_orphan(header, records_json, weights, peer)
            return Outcome("orphan", "parent-not-validated", f"parent {parent.hash[:16]} has no validated body", h)
        try:
            check_records_commitment(header, records_json)  # junk records are a bad body, not a bad header
            records = parse_records(records_json)
            state = decode_weights(header, weights, self.spec, self.template) if weights is not None else None
            validate_records(header, records, self.spec)
            t0 = time.perf_counter()
            result = None if assumed else validate_proof(header, parent, state, self.replayer, self.spec)
            elapsed = time.perf_counter() - t0
        except errors.BadBody as exc:
            return Outcome("bad-body", exc.code, exc.detail, h)
        except errors.InvalidBlock as exc:
            return self._reject(header, records_json, exc, peer)
        if weights is not None:
            self.store.weights.put(header.weights_hash, weights)
        self.store.put_block(header, records_json, VALID, self._work_of(parent, header), peer=peer,
                             acc=(result.before.correct, result.after.correct) if result else None)
        stored = self.store.get(h)
        out = Outcome("accepted", "", "assumed valid" if assumed else f"validated in {elapsed:.2f}s", h)
        tip = self.tip()
        if stored.cumulative_work > tip.cumulative_work:
            out.reorg_depth = self._switch_tip(stored)
            out.new_tip = True
        return out

    def _work_of(self, parent: BlockHeader, header: BlockHeader) -> int:
        p = self.store.get(parent.hash)
        return p.cumulative_work + work(header.difficulty)

    def _reject(self, header, records_json, exc: errors.InvalidBlock, peer) -> Outcome:
        if len(header.encode()) > self.spec.limits.max_header_bytes:
            # never store an oversized header (it would cost the store its size); nothing
            # can descend from it and it is rejected again as cheaply as it would be looked up
            log.warning("rejected oversized header %s from %s", header.hash[:16], peer or "local")
            return Outcome("invalid", exc.code, exc.detail, header.hash)
        self.store.put_block(header, records_json, INVALID, 0, reason=exc.code, detail=exc.detail, peer=peer)
        n = self.store.mark_invalid_descendants(header.hash, exc.code)
        log.warning("rejected block %s height %d from %s: %s (%s)%s", header.hash[:16], header.height,
                    peer or "local", exc.code, exc.detail, f"; {n} descendants invalid" if n else "")
        for oh in [oh for oh, o in self.orphans.items() if o[0].parent == header.hash]:
            self.orphans.pop(oh, None)
        return Outcome("invalid", exc.code, exc.detail, header.hash)

    def _path_from_best(self, new_tip: StoredBlock) -> list[str]:
        """Hashes genesis..new_tip: the stored best chain up to where new_tip's branch leaves it, then
        the branch. Walks back only the branch (one block when the tip is extended), not to genesis,
        so a sync of n blocks costs O(n) block reads, not O(n^2)."""
        branch, b = [], new_tip
        while self.store.hash_at(b.height) != b.hash:
            branch.append(b.hash)
            parent = self.store.get(b.header.parent) if b.height > 0 else None
            if parent is None:
                return self.path_to(new_tip.hash)
            b = parent
        return self.store.best_hashes()[:b.height + 1] + branch[::-1]

    def _switch_tip(self, new_tip: StoredBlock) -> int:
        path = self._path_from_best(new_tip)
        fork, depth = self.store.set_tip(new_tip.header, path)
        if depth > 1 or (depth == 1 and fork < new_tip.height):
            log.warning("reorg: depth %d, fork at height %d, new tip %s height %d", depth, fork,
                        new_tip.hash[:16], new_tip.height)
        log.info("new tip %s height %d k=%d work=%d acc=%s/%d", new_tip.hash[:16], new_tip.height,
                 new_tip.header.difficulty, new_tip.cumulative_work, new_tip.header.acc_after,
                 self.spec.evaluation.size)
        self._prune(new_tip.height, fork)
        reorg = depth if fork < new_tip.height else 0
        for fn in list(self.tip_listeners):
            try:
                fn(new_tip, reorg)
            except Exception:  # a listener must never break the chain
                log.exception("tip listener failed")
        return reorg

    # -- orphans -----------------------------------------------------------------
    def _hold_orphan(self, header, records_json, weights, peer) -> None:
        self.orphans[header.hash] = (header, records_json, weights, peer)
        self.orphans.move_to_end(header.hash)
        while len(self.orphans) > ORPHAN_LIMIT or self._orphan_bytes() > ORPHAN_BYTES_LIMIT:
            self.orphans.popitem(last=False)

    def _orphan_bytes(self) -> int:
        return sum(len(o[2] or b"") for o in self.orphans.values())

    def _connect_orphans(self, parent_hash: str) -> list[str]:
        connected, todo = [], [parent_hash]
        while todo:
            p = todo.pop()
            for oh in [oh for oh, o in self.orphans.items() if o[0].parent == p]:
                header, rec, w, peer = self.orphans.pop(oh)
                out = self._submit_one(header, rec, w, peer)
                if out.status == "accepted":
                    connected.append(oh)
                    todo.append(oh)
        return connected

    def missing_orphan_parents(self) -> list[str]:
        with self.lock:
            return [o[0].parent for o in self.orphans.values() if o[0].parent not in self.orphans]

    # -- pruning --------------------------------------------------------------------
    def _prune(self, tip_height: int, fork: int | None = None) -> None:
        """Delete the weights of best-chain blocks below ``tip - keep_weights`` (genesis stays).

        The meta key ``pruned_below`` records how far pruning got, so a tip change visits
        only the new heights, a jump of many blocks (sync, reorg) leaves nothing behind, and
        a restart with a smaller --keep-weights catches up; a reorg moves it back to the fork.
        """
        if self.archival:
            return
        cutoff = tip_height - self.keep_weights
        if cutoff <= 1:
            return
        start = int(self.store.get_meta("pruned_below") or 1)
        if fork is not None:
            start = min(start, max(fork, 1))
        if start >= cutoff:
            return
        keep = {self.spec.model.genesis_weights_sha256}
        for b in self.store.best_range(cutoff, self.keep_weights + 1):
            keep.add(b.header.weights_hash)
        h = start
        while h < cutoff:
            page = self.store.best_range(h, min(500, cutoff - h))
            if not page:
                break
            for b in page:
                if b.height < cutoff and b.header.weights_hash not in keep:
                    self.store.weights.delete(b.header.weights_hash)
            h = page[-1].height + 1
        self.store.set_meta("pruned_below", str(cutoff))


def _open_store(datadir: Path) -> Store:
    """Open the SQLite store; a file SQLite cannot read at all is a clear start-up error."""
    try:
        store = Store(datadir)
        problem = store.integrity_problem()
    except DatabaseError as exc:
        problem = str(exc.orig) if getattr(exc, "orig", None) else str(exc)
    if problem:
        raise StartupError(f"SQLite store {datadir / 'chain.sqlite'} is corrupt: {problem}. Restore the datadir "
                           "from a backup, or move it aside and sync again from peers")
    return store
