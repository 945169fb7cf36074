"""The chain: consensus rules applied to the store.

``Chain.submit`` runs the one pipeline (consensus.validation.validate_block) for a
``Block``, records the verdict (``Verdict``), moves the tip by cumulative work
(first seen wins ties) and connects orphans waiting for this block;
``Chain.submit_header`` takes a header alone (headers-first). ``stage_timer`` is the
timing hook: a context-manager factory called with each stage's name (the
pipeline's, then ``store``). Under protocol v2 a block is
validated from its parent's post-state W'_parent (kept content-addressed in the
state store for recent blocks of every branch), so a fork needs no state
rollback: a reorg is a rewrite of the best-chain index in one transaction.
"""
from __future__ import annotations

import json
import logging
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, NamedTuple

from sqlalchemy.exc import DatabaseError, OperationalError

from consensus import errors
from consensus.block import Block, BlockHeader, genesis_header
from consensus.data import Dataset
from consensus.difficulty import work
from consensus.errors import Verdict
from consensus.proof import derive_batch
from consensus.spec import NODE_PRESETS, ChainSpec
from consensus.training import canonical_step, genesis_state
from consensus.validation import ProofMemo, StageTimer, Validated, no_timer, validate_block, validate_header
from consensus.weights import State, decode_state, encode_state, weights_hash

from .preemption import BUSY, GaveWay, YieldingStep
from .store import HEADER_ONLY, INVALID, VALID, Store, StoredBlock

log = logging.getLogger("polchain.chain")

VALIDATING = "validating"   # wire status of a block served while its accuracy is being checked
ORPHAN_LIMIT = 64
ORPHAN_BYTES = 8 << 20   # ... and at most this many bytes of them (header + records as JSON)
HEADER_WINDOW = 1000     # header-only rows this far below the tip are pruned (with the rows above them)
HEADER_CAP = 50_000      # header-only rows kept at most (above MAX_ASSUME_HEADERS of a snapshot sync)
INVALID_CAP = 10_000     # invalid rows kept at most: past it the oldest go (see _invalid_added)
REBUILD_LIMIT = 10_000   # blocks replayed at most to rebuild a post-state that is not kept
STORE_FAILURES = (OSError, OperationalError)   # disk full, read-only, I/O errors (SQLite or the state files)
STORE_LOG_EVERY_S = 60.0  # a failing store is logged once, then once a minute with the count, never per block
HEAVIER_BRANCHES_CHECKED = 16   # header-only tips heavier than the active tip looked at for a deferred rebuild
STORE_PROBE_FIRST_S = 2.0  # a failing store is probed again after 2 s, the pause doubling up to STORE_PROBE_MAX_S
STORE_PROBE_MAX_S = 60.0
REBUILT_IN_MEMORY = 4    # rebuilt post-states below the pruning line kept in memory (a deep fork's tip and parent)
PROOF_CACHE = 1024   # replayed proofs remembered, so a re-signed sibling costs no replay


class StartupError(Exception):
    """The node must not start (wrong genesis weights, corrupt store...)."""


@dataclass
class Outcome:
    status: Verdict
    code: str = ""
    detail: str = ""
    block_hash: str = ""
    reorg_depth: int = 0
    new_tip: bool = False
    connected: list[str] = field(default_factory=list)  # orphans connected as a result
    stage: str = ""                # the pipeline stage that judged an invalid block

    @property
    def ok(self) -> bool:
        return self.status in (Verdict.ACCEPTED, Verdict.HEADER_OK)

    @property
    def sender_at_fault(self) -> bool:
        """Invalid before the accuracy stage. A block that fails only accuracy carried a real 2^k search
        and may have been relayed in good faith before the relay's own accuracy check (fast relay,
        docs/p2p.md): its sender is not banned for it."""
        return self.status == Verdict.INVALID and self.stage != "accuracy"


class Held(NamedTuple):
    """An orphan: a block waiting for its parent, and who sent it."""
    block: Block
    peer: str | None


class StoreView:
    """consensus.validation.ChainView over the store (valid and header-only blocks)."""

    def __init__(self, store: Store):
        self.store = store

    def header(self, block_hash: str) -> BlockHeader | None:
        b = self.store.get(block_hash)
        return b.header if b is not None and b.status != INVALID else None

    def is_invalid(self, block_hash: str) -> bool:
        return self.store.status(block_hash) == INVALID


class _BatchView:
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


class Chain:
    def __init__(self, spec: ChainSpec, datadir: Path, dataset: Dataset, *, keep_weights: int = 100,
                 archival: bool = False, clock: Callable[[], float] = time.time,
                 header_window: int = HEADER_WINDOW, header_cap: int = HEADER_CAP,
                 invalid_cap: int = INVALID_CAP):
        if spec.is_paper:
            raise StartupError(f"the {spec.name!r} spec uses the DGG paper's rules, which are forgeable and kept for "
                               f"research only (docs/protocol.md); run a v2 chain ({', '.join(NODE_PRESETS)})")
        self.spec = spec
        self.dataset = dataset
        self.store = _open_store(Path(datadir))
        self.view = StoreView(self.store)
        self.replayer = canonical_step(spec, dataset)     # wrapped: a stranger's replay may give way (below)
        self.template = genesis_state(spec)
        self.keep_weights = keep_weights
        self.archival = archival
        self.header_window, self.header_cap, self.invalid_cap = header_window, header_cap, invalid_cap
        # upper bounds on the header-only and invalid row counts (every insert adds to them; a deletion
        # or an upgrade is not subtracted), so a cap is checked with one COUNT only when one crosses it
        self._header_rows = self.store.count_header_only()
        self._invalid_rows = self.store.count_status(INVALID)
        self.clock = clock
        self.lock = threading.RLock()
        self.gave_way = 0             # replays stopped for a known sender's block (node/preemption.py)
        self.orphans: OrderedDict[str, Held] = OrderedDict()
        self._orphan_sizes: dict[str, int] = {}     # held orphan -> bytes (see _hold_orphan)
        self.proofs = ProofMemo(PROOF_CACHE)
        self.replays = 0   # proofs replayed (a cached sibling does not count)
        self.store_error: str | None = None        # why the last write failed; None while the store writes
        self.store_error_since: float | None = None
        self._store_failures, self._store_logged = 0, 0.0
        self._probe_pause, self._next_probe = STORE_PROBE_FIRST_S, 0.0   # backoff of the store probe (monotonic)
        self._fault_dir: Path | None = None       # the state directory the failed write went to, if a block's
        self.rebuilt: OrderedDict[str, State] = OrderedDict()   # post-states below the pruning line (memory only)
        self.stage_timer: StageTimer = no_timer   # the timing hook (bench/verify.py)
        self.relaying: dict[str, Block] = {}      # work checked, accuracy not yet: served to peers (fast relay)
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
        stored_genesis = self.store.hash_at(0)
        if stored_genesis is None:
            self.store.weights.put(got, encode_state(state))
            # the genesis model measured on E once, so every learning curve starts at a true point (its
            # header claims 0: the floor for block 1, not a measurement)
            measured = self.replayer.accuracy(state).correct
            log.info("genesis model: %d/%d on E (measured once)", measured, self.spec.evaluation.size)
            self.store.put_block(self.genesis, [], VALID, work(self.genesis.difficulty), acc=(None, measured))
            self.store.set_tip(self.genesis, [self.genesis.hash])
        elif stored_genesis != self.genesis.hash:
            other = self.store.raw_chain_id(stored_genesis) or "unknown"
            raise StartupError(
                f"the datadir holds chain {other[:16]}..., not this node's chain {self.spec.chain_id[:16]}... "
                f"({self.spec.name}, protocol v{self.spec.header_version}); a protocol v1 or v2 datadir cannot be "
                "upgraded in place (v1 stored weights in blocks; v3 replays with the exact step): keep it for "
                "its node, or use another --datadir")

    def _check_tip_weights(self) -> None:
        """The tip's weights are the node's working state (mining, serving peers): a stored file
        that no longer hashes to the tip's weights_hash stops the start-up with a clear message."""
        tip = self.store.tip()
        if tip is None:
            return
        want = tip.header.state_hash
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

    def in_flight(self, block_hash: str) -> StoredBlock | None:
        """A block being relayed before its accuracy is checked (fast relay), as peers fetch it:
        status ``validating``."""
        block = self.relaying.get(block_hash)
        parent = self.store.get(block.header.parent) if block is not None else None
        if parent is None:
            return None
        return StoredBlock(block.header, block.wire_records, VALIDATING, None, None,
                           parent.cumulative_work + work(block.header.difficulty), None, None, time.time(), None, 0)

    def load_weights(self, weights_hash_hex: str) -> State | None:
        if weights_hash_hex in self.rebuilt:
            return self.rebuilt[weights_hash_hex]
        data = self.store.weights.get(weights_hash_hex)
        return decode_state(data) if data is not None else None

    def tip_model(self) -> tuple[StoredBlock, State]:
        """The tip block and its post-state W' (the genesis weights at height 0)."""
        with self.lock:
            tip = self.tip()
            if self._tip_model is None or self._tip_model[0] != tip.hash:
                state = self.load_weights(tip.header.state_hash)
                if state is None:
                    raise LookupError(f"post-state of tip {tip.hash[:16]} is not stored")
                self._tip_model = (tip.hash, state)
            return tip, self._tip_model[1]

    @property
    def replayer(self) -> YieldingStep:
        """The chain's canonical step, always behind ``YieldingStep`` (a replay may give way)."""
        return self._replayer

    @replayer.setter
    def replayer(self, step) -> None:
        self._replayer = step if isinstance(step, YieldingStep) else YieldingStep(step)

    # -- the pipeline -----------------------------------------------------------
    def submit(self, block: Block, peer: str | None = None, *, assumed: bool = False,
               on_work_checked: Callable[[Block], None] | None = None,
               give_way: Callable[[], bool] | None = None) -> Outcome:
        """One block through the pipeline. ``assumed`` (snapshot sync, ``--assume-valid``): the header
        rules and the records are checked, the proof is not replayed (the caller installed the block's
        post-state). ``on_work_checked(block)``: called once the replayed steps met R and the post-state
        matched, before the accuracy evaluation (fast relay); meanwhile ``relaying`` holds the block.
        ``give_way()``: asked before each replayed step; true stops the replay, nothing of the block is
        kept, and the outcome is ignored ``busy`` (node/preemption.py: a stranger's block gives way to a
        known sender's)."""
        with self.lock:
            if self.store_error is not None and not self.probe_store():
                # fail fast: a replay whose result could not be kept is wasted (issue 20)
                return Outcome(Verdict.IGNORED, errors.StoreUnavailable.code,
                               f"this node cannot write its store ({self.store_error}); the block was not "
                               "judged: send it again later", block.hash)
            try:
                try:
                    with self.replayer.yielding_to(give_way):
                        out = self._submit_one(block, peer, assumed, on_work_checked)
                except GaveWay as exc:
                    self.gave_way += 1
                    log.debug("block %s gave way: %s", block.hash[:16], exc)
                    return Outcome(Verdict.IGNORED, BUSY, str(exc), block.hash)
                if out.status == Verdict.ACCEPTED:
                    out.connected = self._connect_orphans(block.hash)
                elif out.code in (errors.ParentNotValidated.code, errors.RebuildDeferred.code):
                    out.connected = self._judge_heavier_branch(block.header)
            except STORE_FAILURES as exc:
                return self._store_failed(block.hash, exc, block.header.state_hash)
            if out.status in (Verdict.ACCEPTED, Verdict.INVALID):
                self._store_ok()
            return out

    # -- the store's health: a write that fails (ENOSPC, read-only) is reported, never a traceback ----------
    def _store_failed(self, block_hash: str, exc: BaseException, state_hash: str | None = None) -> Outcome:
        """Nothing of the block was stored (the weights file goes first, the row in one transaction).
        ``state_hash``: the block's post-state, whose directory the probe then writes to."""
        why = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:300]
        now = time.monotonic()
        if self.store_error is None:
            self.store_error_since = time.time()
            self._probe_pause, self._next_probe = STORE_PROBE_FIRST_S, now + STORE_PROBE_FIRST_S
        if state_hash is not None:
            self._fault_dir = self.store.weights.path(state_hash).parent
        self.store_error = why
        self._store_failures += 1
        if now - self._store_logged >= STORE_LOG_EVERY_S:
            log.error("cannot write the store (%s): blocks are not stored until it writes again "
                      "(%d failed writes so far); /health answers 503", why, self._store_failures)
            self._store_logged = now
        return Outcome(Verdict.IGNORED, errors.StoreUnavailable.code,
                       f"this node cannot write its store ({why}); send the block again later", block_hash)

    def _store_ok(self) -> None:
        if self.store_error is not None:
            log.info("the store writes again (after %.0f s, %d failed writes)",
                     time.time() - (self.store_error_since or time.time()), self._store_failures)
        self.store_error, self.store_error_since, self._store_failures, self._store_logged = None, None, 0, 0.0
        self._probe_pause, self._next_probe, self._fault_dir = STORE_PROBE_FIRST_S, 0.0, None

    def store_health(self) -> dict:
        """What /status shows of the store: ok, why not, since when, failed writes, seconds to the next probe."""
        with self.lock:
            retry = max(0.0, self._next_probe - time.monotonic()) if self.store_error is not None else None
            return {"ok": self.store_error is None, "error": self.store_error, "since": self.store_error_since,
                    "failed_writes": self._store_failures, "retry_in_s": None if retry is None else round(retry, 1),
                    "retry_pause_s": self._probe_pause if self.store_error is not None else None}

    def store_retry_in(self) -> float:
        """Seconds until the store may be probed again (0 when it writes)."""
        return max(0.0, self._next_probe - time.monotonic()) if self.store_error is not None else 0.0

    def probe_store(self, force: bool = False) -> bool:
        """Whether the store takes writes now. While a write failure is recorded, the probe runs at most when
        its backoff allows (2 s doubling to 60 s; ``force``: now): what a block writes, of a block's size, in
        the place the failed block's went (its post-state directory, else the state root), synced and removed,
        and a meta row in the database. Clears the store error when both go through; False otherwise,
        without touching the disk when the backoff says not yet."""
        with self.lock:
            now = time.monotonic()
            if self.store_error is not None and not force and now < self._next_probe:
                return False
            try:
                size = self._state_size()
                self.store.weights.probe(self._fault_dir, size)
                self.store.set_meta("write_probe", "0" * min(size, 16384))
                self.store.set_meta("write_probe", "")
            except STORE_FAILURES as exc:
                self._store_failed("", exc)
                self._probe_pause = min(2 * self._probe_pause, STORE_PROBE_MAX_S)
                self._next_probe = time.monotonic() + self._probe_pause
                return False
            self._store_ok()
            return True

    def _state_size(self) -> int:
        """Bytes of a post-state file here (the tip's), so the probe needs the room a block needs."""
        try:
            return max(4096, self.store.weights.path(self.tip().header.state_hash).stat().st_size)
        except OSError:
            return 4096

    def submit_header(self, header: BlockHeader, peer: str | None = None) -> Outcome:
        """A header alone (headers-first): the header rules; stored header-only, the block fetched later."""
        with self.lock:
            h = header.hash
            known = self.store.status(h)
            try:
                if known in (VALID, INVALID):
                    raise errors.Duplicate(f"already {known}")
                validate_header(header, self.spec, self.view, int(self.clock() * 1000))
            except errors.BlockError as exc:
                return self._not_accepted(exc, Block(header), peer, hold=False)
            if known is None:
                try:
                    self.store.put_block(header, [], HEADER_ONLY, self._work_of(header), peer=peer)
                    self._header_added()      # an announcement flood is capped here, not at the next block
                except STORE_FAILURES as exc:
                    return self._store_failed(h, exc)
                self._store_ok()
            return Outcome(Verdict.HEADER_OK, "", "", h)

    def submit_headers(self, headers: list[BlockHeader], peer: str | None = None) -> list[Outcome]:
        """Headers-first in a batch: every header gets the header rules, in order, each against the
        ones before it; the good ones are stored header-only in one transaction (a crash keeps all
        or none of them). The first header that fails stops the batch: its outcome is the last one
        returned (the good prefix is committed first, then an invalid header is recorded as one);
        the headers after it are not looked at."""
        with self.lock:
            added = []
            try:
                outs = self._check_batch(headers, peer,
                                         lambda rows: added.append(self.store.put_headers(rows, peer)))
                if any(added):
                    self._prune_headers(self.tip().height)      # the global cap holds after every batch
            except STORE_FAILURES as exc:
                return [self._store_failed(headers[0].hash if headers else "", exc)]
            return outs

    def accept_assumed(self, blocks: list[Block], peer: str | None = None) -> list[Outcome]:
        """Snapshot sync (assume-valid) in a batch: blocks up to a checkpoint whose post-state the caller
        has installed, each checked like ``submit(..., assumed=True)`` (header rules, records; no proof
        replay), stored valid in one transaction, then one tip change. Stops at the first block that
        fails, like ``submit_headers``."""
        with self.lock:
            try:
                outs = self._check_batch(blocks, peer, lambda rows: self.store.put_assumed(rows, peer))
            except STORE_FAILURES as exc:
                return [self._store_failed(blocks[0].hash if blocks else "", exc)]
            accepted = [o for o in outs if o.status == Verdict.ACCEPTED]
            if accepted:
                last = self.store.get(accepted[-1].block_hash)
                if last.cumulative_work > self.tip().cumulative_work:
                    accepted[-1].reorg_depth = self._switch_tip(last)
                    accepted[-1].new_tip = True
                for o in accepted:
                    o.connected = self._connect_orphans(o.block_hash)
            return outs

    def _check_batch(self, items: list[BlockHeader] | list[Block], peer, store) -> list[Outcome]:
        """The loop of ``submit_headers`` (headers) and ``accept_assumed`` (blocks): header rules against
        the store and the batch's earlier headers, a block's records too (the pipeline without the proof);
        ``store(rows)`` writes the good ones [(header, records or None, cumulative work)] in one
        transaction, before an invalid block is recorded and at the end."""
        batch = _BatchView(self.view)
        works: dict[str, int] = {}
        good: list[tuple[BlockHeader, list | None, int]] = []
        outs: list[Outcome] = []
        now_ms = int(self.clock() * 1000)
        stored = self.store.statuses([item.hash for item in items])
        for item in items:
            block = item if isinstance(item, Block) else None
            header = block.header if block is not None else item
            h = header.hash
            known = stored.get(h)
            if known in (VALID, INVALID) or h in works:
                outs.append(Outcome(Verdict.DUPLICATE, errors.Duplicate.code,
                                    f"already {known or 'in this batch'}", h))
                if known == INVALID:
                    break
                batch.add(header)
                continue
            try:
                parent = (validate_header(header, self.spec, batch, now_ms) if block is None else
                          validate_block(block, self.spec, batch, now_ms, replayer=self.replayer,
                                         parent_state=self._parent_state, check_proof=False).parent)
            except errors.BlockError as exc:
                if isinstance(exc, errors.InvalidBlock):
                    store(good)
                    good = []
                outs.append(self._not_accepted(exc, block or Block(header), peer, hold=False))
                break
            base = works.get(parent.hash)
            works[h] = (base if base is not None else self.store.get(parent.hash).cumulative_work) \
                + work(header.difficulty)
            batch.add(header)
            if block is not None or known is None:
                good.append((header, block.wire_records if block is not None else None, works[h]))
            outs.append(Outcome(Verdict.HEADER_OK, "", "", h) if block is None
                        else Outcome(Verdict.ACCEPTED, "", "assumed valid", h))
        store(good)
        return outs

    def _submit_one(self, block: Block, peer, assumed: bool = False, on_work_checked=None) -> Outcome:
        try:
            return self._validate_and_keep(block, peer, assumed, on_work_checked)
        finally:
            # served as "validating" until the verdict is stored: a peer that heard of the block early
            # (fast relay) must find it here or in the store, never in neither
            self.relaying.pop(block.hash, None)

    def _validate_and_keep(self, block: Block, peer, assumed: bool, on_work_checked) -> Outcome:
        h = block.hash
        known = self.store.status(h)
        t0 = time.perf_counter()
        try:
            if known in (VALID, INVALID):
                raise errors.Duplicate(f"already {known}")
            checked = validate_block(
                block, self.spec, self.view, int(self.clock() * 1000), replayer=self.replayer,
                parent_state=lambda parent: self._parent_state(parent, block.header), memo=self.proofs, check_proof=not assumed,
                on_work_checked=self._relay_hook(on_work_checked), stage=self.stage_timer)
        except errors.BlockError as exc:
            if isinstance(exc, errors.ParentNotValidated) and known is None:
                self.store.put_block(block.header, block.wire_records, HEADER_ONLY, self._work_of(block.header),
                                     peer=peer)
                self._header_added()
            return self._not_accepted(exc, block, peer, hold=True)
        elapsed = time.perf_counter() - t0
        with self.stage_timer("store"):
            self._keep(block, checked, peer)
            stored = self.store.get(h)
            out = Outcome(Verdict.ACCEPTED, "", "assumed valid" if assumed else f"validated in {elapsed:.2f}s", h)
            if stored.cumulative_work > self.tip().cumulative_work:
                out.reorg_depth = self._switch_tip(stored)
                out.new_tip = True
        return out

    def _not_accepted(self, exc: errors.BlockError, block: Block, peer, *, hold: bool) -> Outcome:
        """The verdict for a block (or a header alone) that a rule stopped; ``hold``: keep a block whose
        parent is missing or not validated yet as an orphan."""
        h = block.hash
        if isinstance(exc, errors.InvalidBlock):
            return self._reject(block, exc, peer)
        if isinstance(exc, errors.BadBody):
            return Outcome(Verdict.BAD_BODY, exc.code, exc.detail, h)
        if isinstance(exc, (errors.UnknownParent, errors.ParentNotValidated)):
            if hold:
                self._hold_orphan(block, peer)
            return Outcome(Verdict.ORPHAN, exc.code, exc.detail, h)
        if isinstance(exc, errors.Duplicate):
            return Outcome(Verdict.DUPLICATE, exc.code, exc.detail, h)
        return Outcome(Verdict.IGNORED, exc.code, exc.detail, h)

    def _relay_hook(self, on_work_checked):
        if on_work_checked is None:
            return None

        def hook(block: Block) -> None:
            self.relaying[block.hash] = block
            try:
                on_work_checked(block)
            except Exception:  # a relay must never break validation
                log.exception("work-checked hook failed")
        return hook

    def _keep(self, block: Block, checked: Validated, peer: str | None) -> None:
        """W' into the state store first (a crash leaves at most an unreferenced file), the proof
        remembered, then the block row."""
        header = block.header
        if checked.replayed and not self._kept_on_disk(header.height):
            self._remember_rebuilt(header.state_hash, checked.state)
        elif checked.replayed and not self.store.weights.has(header.state_hash):
            self.store.weights.put(header.state_hash, encode_state(checked.state))
        if checked.proof_key is not None:
            self.proofs.put(checked.proof_key, header.state_hash, checked.after)
        self.store.put_block(header, block.wire_records, VALID, self._work_of(header), peer=peer,
                             acc=(None, checked.after.correct) if checked.after else None)

    def _parent_state(self, parent: BlockHeader, child: BlockHeader | None = None) -> State:
        """The parent's post-state: the stored file checked against its state_hash, else rebuilt by replay
        (``_rebuild_state``). A file damaged on this disk says nothing about the block (replaying from it
        would condemn a valid block for good): it is logged and the state rebuilt from an ancestor.
        A parent inside the keep window (a damaged file) is rebuilt from the window's nearest kept
        ancestor. Below the window a rebuild is done only for a ``child`` on a branch that claims more
        work than the tip (``_rebuild_worth_it``); otherwise the child waits (``RebuildDeferred``), so a
        block on an old parent costs its sender a signature and this node no replay."""
        if self.store.status(parent.hash) != VALID:
            raise errors.ParentNotValidated(f"parent {parent.hash[:16]} is not validated")
        state = self._stored_state(parent)
        if state is None:
            if child is not None and not self._kept_on_disk(parent.height) and not self._rebuild_worth_it(child):
                raise errors.RebuildDeferred(
                    f"the post-state of parent {parent.hash[:16]} (height {parent.height}) is not kept here and no "
                    "known branch through this block claims more work than the tip: held until one does")
            state = self._rebuild_state(parent)
            if state is None:
                raise errors.StateUnavailable(f"the post-state of parent {parent.hash[:16]} is not kept here and "
                                              "could not be rebuilt")
        self.replays += 1      # the replay follows
        return state

    def _stored_state(self, header: BlockHeader) -> State | None:
        """The post-state of ``header`` from memory or disk, or None where it is absent or damaged."""
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

    def _kept_on_disk(self, height: int) -> bool:
        """Whether a post-state at ``height`` belongs on disk: pruning has not passed it (a state below the
        line would never be visited again and leak)."""
        return self.archival or height >= int(self.store.get_meta("states_pruned_below") or 1)

    def _remember_rebuilt(self, state_hash: str, state: State) -> None:
        self.rebuilt[state_hash] = state
        self.rebuilt.move_to_end(state_hash)
        while len(self.rebuilt) > REBUILT_IN_MEMORY:
            self.rebuilt.popitem(last=False)

    def _rebuild_state(self, parent: BlockHeader) -> State | None:
        """The post-state of a valid block whose state is not kept (pruned, on a fork deeper than the
        window, or damaged on disk), rebuilt by replaying the stored headers' nonces from the nearest
        ancestor whose state is kept (genesis at worst), each block checked against its state_hash. The
        result goes to disk where pruning will visit it again, else to a small memory cache, so a deep
        fork's next block does not replay the path again. A heavier fork is thus always judged
        (protocol v3: no permanent split). Costs at most REBUILD_LIMIT blocks of J+1 steps; every block
        on the path carried its own 2^k work."""
        path, cur = [], parent
        while True:
            if cur.height == 0:
                state = {k: v.clone() for k, v in self.template.items()}
                break
            state = self._stored_state(cur) if cur is not parent else None
            if state is not None:
                break
            path.append(cur)
            row = self.store.get(cur.parent)
            if row is None or row.status != VALID or len(path) > REBUILD_LIMIT:
                return None
            cur = row.header
        log.info("rebuilding the post-state of block %s (height %d): replaying %d block(s) from height %d",
                 parent.hash[:16], parent.height, len(path), cur.height)
        r = self.replayer
        for h in reversed(path):
            r.load(state)
            for n in h.nonces:
                r.step(derive_batch(self.spec, h.parent, h.miner, n))
            state = r.state()
            if weights_hash(state) != h.state_hash:
                log.error("rebuilding: block %s (height %d) replays to another state than it commits to",
                          h.hash[:16], h.height)
                return None
        if self._kept_on_disk(parent.height):
            self.store.weights.delete(parent.state_hash)      # a damaged file, if that is why
            self.store.weights.put(parent.state_hash, encode_state(state))
        else:
            self._remember_rebuilt(parent.state_hash, state)
        return state

    def _rebuild_worth_it(self, child: BlockHeader) -> bool:
        """Whether a branch through ``child`` claims more work than the active tip: the child itself, or a
        header-only descendant (headers-first sync stores a fork's headers before its bodies). Claimed
        work is checked by the replay that follows; a false claim makes the first replayed block invalid,
        its descendants with it, and bans its sender."""
        tip_work = self.tip().cumulative_work
        if self._work_of(child) > tip_work:
            return True
        for row in self.store.header_only_heavier_than(tip_work, limit=HEAVIER_BRANCHES_CHECKED):
            cur = row
            while cur is not None and cur.header.height > child.height:
                cur = self.store.get(cur.header.parent)
            if cur is not None and cur.hash == child.hash:
                return True
        return False

    def _judge_heavier_branch(self, header: BlockHeader) -> list[str]:
        """A block just held header-only on top of a deferred one: once its branch claims more work than
        the tip, the branch's first held block (its parent valid, its state not kept) is judged, with a
        rebuild, and the held blocks above it follow. Returns the hashes accepted."""
        row = self.store.get(header.hash)
        if row is None or row.status != HEADER_ONLY or row.cumulative_work <= self.tip().cumulative_work:
            return []
        cur = row
        while True:
            parent = self.store.get(cur.header.parent)
            if parent is None or parent.status != HEADER_ONLY:
                break
            cur = parent
        if parent is None or parent.status != VALID or cur.hash not in self.orphans:
            return []      # the body is not held here: sync fetches it from a peer with the branch
        held = self.orphans.pop(cur.hash)
        if self._submit_one(held.block, held.peer).status != Verdict.ACCEPTED:
            return []
        return [cur.hash] + self._connect_orphans(cur.hash)

    def _work_of(self, header: BlockHeader) -> int:
        p = self.store.get(header.parent)
        return p.cumulative_work + work(header.difficulty)

    def _reject(self, block: Block, exc: errors.InvalidBlock, peer) -> Outcome:
        header = block.header
        verdict = Outcome(Verdict.INVALID, exc.code, exc.detail, header.hash, stage=getattr(exc, "stage", "header"))
        if len(header.encode()) > self.spec.limits.max_header_bytes:
            # never store an oversized header (it would cost the store its size); nothing
            # can descend from it and it is rejected again as cheaply as it would be looked up
            log.warning("rejected oversized header %s from %s", header.hash[:16], peer or "local")
            return verdict
        self.store.put_block(header, block.wire_records, INVALID, 0, reason=exc.code, detail=exc.detail, peer=peer)
        n = self.store.mark_invalid_descendants(header.hash, exc.code)
        self._invalid_added(1 + n)
        log.warning("rejected block %s height %d from %s: %s (%s)%s", header.hash[:16], header.height,
                    peer or "local", exc.code, exc.detail, f"; {n} descendants invalid" if n else "")
        for oh in [oh for oh, o in self.orphans.items() if o.block.header.parent == header.hash]:
            self.orphans.pop(oh, None)
        return verdict

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
            # a depth-1 reorg (two blocks at one height, the heavier wins) is routine proof-of-work
            log.log(logging.WARNING if depth > 1 else logging.INFO, "reorg: depth %d, fork at height %d, new tip %s "
                    "height %d", depth, fork, new_tip.hash[:16], new_tip.height)
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
    def _hold_orphan(self, block: Block, peer) -> None:
        """Keep a block until its parent comes: at most ORPHAN_LIMIT blocks and ORPHAN_BYTES bytes,
        the oldest going first (a block larger than the byte cap alone is not held)."""
        size = len(block.header.encode()) + len(json.dumps(block.wire_records))
        if size > ORPHAN_BYTES:
            return
        self.orphans[block.hash] = Held(block, peer)
        self.orphans.move_to_end(block.hash)
        sizes = self._orphan_sizes
        sizes[block.hash] = size
        for gone in sizes.keys() - self.orphans.keys():      # connected or dropped since
            del sizes[gone]
        while len(self.orphans) > ORPHAN_LIMIT or sum(sizes.values()) > ORPHAN_BYTES:
            oldest, _ = self.orphans.popitem(last=False)
            sizes.pop(oldest, None)

    def orphan_bytes(self) -> int:
        """Bytes held by the orphan pool (header and records of each held block, as JSON)."""
        with self.lock:
            return sum(self._orphan_sizes.get(h, 0) for h in self.orphans)

    def _connect_orphans(self, parent_hash: str) -> list[str]:
        connected, todo = [], [parent_hash]
        while todo:
            p = todo.pop()
            for oh in [oh for oh, o in self.orphans.items() if o.block.header.parent == p]:
                held = self.orphans.pop(oh)
                if self._submit_one(held.block, held.peer).status == Verdict.ACCEPTED:
                    connected.append(oh)
                    todo.append(oh)
        return connected

    def missing_orphan_parents(self) -> list[str]:
        with self.lock:
            parents = [o.block.header.parent for o in self.orphans.values()]
            return [p for p in parents if p not in self.orphans]

    # -- pruning --------------------------------------------------------------------
    def _prune(self, tip_height: int, fork: int | None = None) -> None:
        """After a tip change: stale header-only rows (``_prune_headers``), then the post-states of every
        valid block, best chain and side branches alike, below ``tip - keep_weights`` (genesis stays;
        the best chain's recent states stay, snapshot sync serves them, and a state shared with one of
        them stays).

        The meta key ``states_pruned_below`` records how far pruning got, so a tip change visits only
        the new heights, a jump of many blocks (sync, reorg) leaves nothing behind, and a restart with
        a smaller --keep-weights catches up; a reorg moves it back to the fork. Files go before the
        marker moves: a crash between the two only repeats deletions.
        """
        self._prune_headers(tip_height)
        if self.archival:
            return
        cutoff = tip_height - self.keep_weights
        if cutoff <= 1:
            return
        start = int(self.store.get_meta("states_pruned_below") or 1)
        if fork is not None:
            start = min(start, max(fork, 1))
        if start >= cutoff:
            return
        keep = {self.spec.model.genesis_weights_sha256}
        keep.update(b.header.state_hash for b in self.store.best_range(cutoff, self.keep_weights + 1))
        for lo in range(start, cutoff, 500):
            for _, state_hash in self.store.valid_states(lo, min(lo + 500, cutoff)):
                if state_hash not in keep:
                    self.store.weights.delete(state_hash)
        self.store.set_meta("states_pruned_below", str(cutoff))

    def _prune_headers(self, tip_height: int) -> None:
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

    def _header_added(self) -> None:
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

    def _invalid_added(self, n: int) -> None:
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
