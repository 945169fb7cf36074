"""``Chain``: the block pipeline and fork choice, over the store.

``Chain.submit`` judges one ``Block`` (``_judge``: the four stages of consensus.validation, with the
parent's post-state supplied between them and fast relay as one named event, ``_work_checked``),
then applies the verdict: the block is kept (W', the row), the tip moves by cumulative work (first
seen wins ties), orphans waiting for it are connected. ``submit_mined`` takes the node's own block
with the W' and accuracy its miner computed (no replay); ``submit_header(s)`` and ``accept_assumed``
take headers alone (headers-first) and snapshot blocks. A block is validated from its parent's
post-state W'_parent (content-addressed in the state store), so a fork needs no state rollback: a
reorg is a rewrite of the best-chain index in one transaction.

What the chain leans on, each in its own module: ``PostStates`` (node/post_states.py: W' on disk,
in memory, rebuilt by replay), ``Pruner`` (node/pruning.py), ``StoreHealth`` (node/store_health.py),
``OrphanPool`` (node/orphans.py). ``stage_timer`` is the timing hook: a context-manager factory called
with each stage's name (the pipeline's, then ``store``).
"""
from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Callable

from consensus import errors
from consensus.block import Block, BlockHeader, genesis_header
from consensus.data import Dataset
from consensus.difficulty import work
from consensus.errors import BlockStatus, Stage, Verdict
from consensus.spec import HEADER_VERSION, NODE_PRESETS, ChainSpec
from consensus.training import Accuracy, canonical_step, genesis_state
from consensus.validation import (ProofMemo, StageTimer, Validated, check_accuracy, check_header_and_records,
                                  check_recalled_commitment, check_work, judged_at, no_timer, recall_proof,
                                  validate_header, validate_paid, validate_size)
from consensus.weights import State, weights_hash

from .fork_choice import branch_claims_more_work, path_from_best, work_of
from .header_batch import check_batch
from .orphans import OrphanPool
from .outcome import Outcome
from .post_states import PostStates
from .pruning import HEADER_CAP, HEADER_WINDOW, INVALID_CAP, Pruner
from .startup_checks import StartupError, check_tip_weights, init_genesis, open_store
from .store import HEADER_ONLY, INVALID, VALID, StoredBlock
from .store_health import STORE_FAILURES, StoreHealth
from .store_view import StoreView

log = logging.getLogger("polchain.chain")

PROOF_CACHE = 1024   # replayed proofs remembered, so a re-signed sibling costs no replay
WorkChecked = Callable[[Block, "str | None"], None]   # a fast-relay listener: (block, its sender)
__all__ = ["Chain", "StartupError", "StoreView"]


class Chain:
    def __init__(self, spec: ChainSpec, datadir: Path, dataset: Dataset, *, keep_weights: int = 100,
                 archival: bool = False, clock: Callable[[], float] = time.time,
                 header_window: int = HEADER_WINDOW, header_cap: int = HEADER_CAP,
                 invalid_cap: int = INVALID_CAP):
        if spec.is_paper:
            raise StartupError(f"the {spec.name!r} spec uses the DGG paper's rules, which are forgeable and kept for "
                               f"research only (docs/protocol.md); run a v{HEADER_VERSION} chain "
                               f"({', '.join(NODE_PRESETS)})")
        self.spec, self.dataset, self.clock = spec, dataset, clock
        self.store = open_store(Path(datadir))
        self.view = StoreView(self.store)
        self.replayer = canonical_step(spec, dataset)    # the canonical step every replay here runs
        self._rebuild_step = None                         # another one for rebuilds outside the lock (lazily)
        self.template = genesis_state(spec)
        self.states = PostStates(self.store, spec, self.template, archival=archival)
        self.pruner = Pruner(self.store, spec, keep_weights=keep_weights, archival=archival,
                             header_window=header_window, header_cap=header_cap, invalid_cap=invalid_cap)
        self.health = StoreHealth(self.store)
        self.orphans = OrphanPool()
        self.proofs = ProofMemo(PROOF_CACHE)
        self.lock = threading.RLock()
        self.replays = 0              # proofs replayed (a cached sibling does not count)
        self.gave_way = 0             # replays stopped by the caller's should_stop (a known sender's block)
        self.stage_timer: StageTimer = no_timer   # the timing hook (bench/verify.py)
        self.relaying: dict[str, Block] = {}      # work checked, accuracy not yet: served to peers (fast relay)
        self.work_checked_listeners: list[WorkChecked] = []
        self.tip_listeners: list[Callable[[StoredBlock, int], None]] = []
        self._tip_model: tuple[str, State] | None = None
        self.genesis = genesis_header(spec)
        init_genesis(self.store, spec, self.genesis, self.template, self.replayer)
        self._recover_tip()
        check_tip_weights(self.store)

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

    def in_flight(self, block_hash: str) -> StoredBlock | None:
        """A block being relayed before its accuracy is checked (fast relay), as peers fetch it:
        status ``validating``."""
        block = self.relaying.get(block_hash)
        parent = self.store.get(block.header.parent) if block is not None else None
        if parent is None:
            return None
        return StoredBlock(block.header, block.wire_records, BlockStatus.VALIDATING, None, None,
                           parent.cumulative_work + work(block.header.difficulty), None, None, time.time(), None, 0)

    def load_weights(self, state_hash: str) -> State | None:
        """W' by hash, unchecked (``PostStates.load``)."""
        return self.states.load(state_hash)

    def tip_model(self) -> tuple[StoredBlock, State]:
        """The tip block and its post-state W' (the genesis weights at height 0)."""
        with self.lock:
            tip = self.tip()
            if self._tip_model is None or self._tip_model[0] != tip.hash:
                state = self.states.load(tip.header.state_hash)
                if state is None:
                    raise LookupError(f"post-state of tip {tip.hash[:16]} is not stored")
                self._tip_model = (tip.hash, state)
            return tip, self._tip_model[1]

    def missing_orphan_parents(self) -> list[str]:
        with self.lock:
            return self.orphans.missing_parents()

    # -- the store's health ---------------------------------------------------------
    def probe_store(self, force: bool = False) -> bool:
        """Whether the store takes writes now (StoreHealth.probe, with a block's size: the tip's W')."""
        with self.lock:
            try:
                size = max(4096, self.store.weights.path(self.tip().header.state_hash).stat().st_size)
            except OSError:
                size = 4096
            return self.health.probe(size, force)

    def _store_failed(self, block_hash: str, exc: BaseException, state_hash: str | None = None) -> Outcome:
        why = self.health.failed(exc, state_hash)
        return Outcome(Verdict.IGNORED, errors.StoreUnavailable.code,
                       f"this node cannot write its store ({why}); send the block again later", block_hash)

    # -- the pipeline -----------------------------------------------------------
    def submit(self, block: Block, peer: str | None = None, *, assumed: bool = False,
               should_stop: Callable[[], bool] | None = None) -> Outcome:
        """One block through the pipeline. ``assumed`` (snapshot sync, ``--assume-valid``): the header
        rules and the records are checked, the proof is not replayed (the caller installed the block's
        post-state). ``should_stop()``: asked before each replayed step; true stops the replay, nothing
        of the block is kept, and the outcome is ignored ``busy`` (a stranger's block gives way to a
        known sender's, node/admission.py)."""
        return self._submit(block, peer, assumed=assumed, should_stop=should_stop)

    def submit_mined(self, block: Block, state: State, after: Accuracy) -> Outcome:
        """The node's own block, with the W' and acc(W') its miner computed: every rule that costs no
        training step (header, records, the state commitment as a hash of ``state``, the accuracy rules
        on ``after``) and no replay or evaluation, so mining goes on at the new tip at once."""
        return self._submit(block, None, mined=(state, after))

    def unpaid(self, header: BlockHeader) -> Outcome | None:
        """The invalid outcome of a header too large, or without a valid signature or ticket (v4), or None:
        at most one Ed25519 check and one scrypt evaluation, without the lock or the store (nothing of such a
        header is kept, ``errors.InvalidBlock.recorded``)."""
        try:
            with judged_at(Stage.HEADER):
                validate_size(header, self.spec)
                validate_paid(header, self.spec)
        except errors.InvalidBlock as exc:
            log.debug("refused header %s: %s", header.hash[:16], exc.code)
            return Outcome(Verdict.INVALID, exc.code, exc.detail, header.hash, stage=Stage.HEADER)
        return None

    def _submit(self, block: Block, peer: str | None, *, assumed: bool = False,
                mined: tuple[State, Accuracy] | None = None, should_stop: Callable[[], bool] | None = None) -> Outcome:
        refused = self.unpaid(block.header)
        if refused is not None:
            return refused
        try:
            base = self._heavier_branch_base(block.header)
            if base is not None:            # the block makes a held branch heavier: its first block is judged next
                self.rebuild_unlocked(base, should_stop, heavier=True)
            else:
                self.rebuild_unlocked(block.header, should_stop)
        except errors.ReplayStopped:
            return Outcome(Verdict.IGNORED, errors.ReplayStopped.code, "a rebuild for this block gave way to a known "
                           "sender's block", block.hash)
        except STORE_FAILURES as exc:
            return self._store_failed(block.hash, exc)
        with self.lock:
            if self.health.error is not None and not self.probe_store():
                # fail fast: a replay whose result could not be kept is wasted
                return Outcome(Verdict.IGNORED, errors.StoreUnavailable.code,
                               f"this node cannot write its store ({self.health.error}); the block was not "
                               "judged: send it again later", block.hash)
            try:
                out = self._submit_one(block, peer, assumed=assumed, mined=mined, should_stop=should_stop)
                if out.code == errors.ReplayStopped.code:
                    self.gave_way += 1
                elif out.status == Verdict.ACCEPTED:
                    out.connected = self._connect_orphans(block.hash)
                elif out.code in (errors.ParentNotValidated.code, errors.RebuildDeferred.code):
                    out.connected = self._judge_heavier_branch(block.header)
            except STORE_FAILURES as exc:
                return self._store_failed(block.hash, exc, block.header.state_hash)
            if out.status in (Verdict.ACCEPTED, Verdict.INVALID):
                self.health.ok()
            return out

    def _submit_one(self, block: Block, peer: str | None, *, assumed: bool = False,
                    mined: tuple[State, Accuracy] | None = None, should_stop=None) -> Outcome:
        """The verdict on one block, then its effects: kept and maybe the new tip, or recorded invalid,
        or held as an orphan."""
        h = block.hash
        known = self.store.status(h)
        t0 = time.perf_counter()
        try:
            try:
                if known in (VALID, INVALID):
                    raise errors.Duplicate(f"already {known}")
                checked = self._judge(block, peer, assumed=assumed, mined=mined, should_stop=should_stop)
            except errors.BlockError as exc:
                if isinstance(exc, errors.ParentNotValidated) and known is None:
                    self.store.put_block(block.header, block.wire_records, HEADER_ONLY,
                                         work_of(self.store, block.header), peer=peer)
                    self.pruner.header_added()
                return self._not_accepted(exc, block, peer, hold=True)
            elapsed = time.perf_counter() - t0
            with self.stage_timer("store"):
                self._keep(block, checked, peer)
                stored = self.store.get(h)
                how = "assumed valid" if assumed else "mined here" if mined else f"validated in {elapsed:.2f}s"
                out = Outcome(Verdict.ACCEPTED, "", how, h, relayed_early=h in self.relaying)
                if stored.cumulative_work > self.tip().cumulative_work:
                    out.reorg_depth = self._switch_tip(stored)
                    out.new_tip = True
            return out
        finally:
            # served as "validating" until its verdict is stored (kept, or recorded invalid or held): a peer
            # that heard of the block early (fast relay) finds it here or in the store, never in neither
            self.relaying.pop(h, None)

    def _judge(self, block: Block, peer: str | None, *, assumed: bool, mined: tuple[State, Accuracy] | None,
               should_stop) -> Validated:
        """The four stages of consensus.validation (as ``validate_block`` runs them), with the parent's
        post-state supplied before the replay and the fast-relay event after it. Raises a typed
        BlockError carrying its stage."""
        header, spec, timer = block.header, self.spec, self.stage_timer
        parent = check_header_and_records(block, spec, self.view, int(self.clock() * 1000), timer)
        if assumed:
            return Validated(parent, None, None, None)
        state = None
        if mined is not None:
            state, after = mined
            with judged_at(Stage.REPLAY), timer("state_hash"):
                check_recalled_commitment(header, weights_hash(state))
        else:
            after = recall_proof(block, parent, spec, self.proofs, timer)
            if after is None:
                with judged_at(Stage.REPLAY), timer("load_state"):
                    parent_state = self._parent_state(parent, header, should_stop)
                state = check_work(block, parent, parent_state, self.replayer, spec, should_stop=should_stop,
                                   timer=timer)
            self._work_checked(block, peer)
        with timer("accuracy"):
            if after is None:
                after = self.replayer.cached_accuracy(header.state_hash)
            check_accuracy(block, parent, after, spec)
        return Validated(parent, state, after, ProofMemo.key(header, parent, spec))

    def _work_checked(self, block: Block, peer: str | None) -> None:
        """The pipeline's one event before its verdict: the replayed steps met R and W' is the committed
        one (the 2^k work is checked), so peers may hear of the block while this node evaluates its
        accuracy (fast relay, docs/p2p.md); meanwhile ``relaying`` serves it as ``validating``."""
        if not self.work_checked_listeners:
            return
        self.relaying[block.hash] = block
        for fn in list(self.work_checked_listeners):
            try:
                fn(block, peer)
            except Exception:  # a relay must never break validation
                log.exception("work-checked listener failed")

    def _parent_state(self, parent: BlockHeader, child: BlockHeader, should_stop) -> State:
        """The parent's post-state: kept (PostStates.stored), else rebuilt by replay. A parent inside the
        keep window (a damaged file) is rebuilt at once; below it, only for a ``child`` on a branch that
        claims more work than the tip (``fork_choice.branch_claims_more_work``), else the child waits (``RebuildDeferred``),
        so a block on an old parent costs its sender a signature and this node no replay."""
        if self.store.status(parent.hash) != VALID:
            raise errors.ParentNotValidated(f"parent {parent.hash[:16]} is not validated")
        state = self.states.stored(parent)
        if state is None:
            if not self.states.kept_on_disk(parent.height) and not branch_claims_more_work(self.store, child, self.tip().cumulative_work):
                raise errors.RebuildDeferred(
                    f"the post-state of parent {parent.hash[:16]} (height {parent.height}) is not kept here and no "
                    "known branch through this block claims more work than the tip: held until one does")
            state = self.states.rebuild(parent, self.replayer, should_stop)
            if state is None:
                raise errors.StateUnavailable(f"the post-state of parent {parent.hash[:16]} is not kept here and "
                                              "could not be rebuilt")
        self.replays += 1      # the replay follows
        return state

    def rebuild_unlocked(self, header: BlockHeader, should_stop=None, *, heavier: bool = False) -> None:
        """Before ``header`` is judged: when its parent's post-state is pruned and its branch claims more work
        than the tip (``_parent_state``'s condition for a rebuild; ``heavier``: the caller knows it does),
        rebuild the state now -- outside the chain's lock, on a canonical step of its own, one rebuild at a
        time -- so the tip's blocks are judged meanwhile (issue 33.3; v3 replayed up to the parent's height
        under the lock). The judgment that follows finds the state in memory. A no-op otherwise."""
        parent = self.store.get(header.parent)
        if parent is None or parent.status != VALID or self.states.kept_on_disk(parent.height):
            return
        if not heavier and not branch_claims_more_work(self.store, header, self.tip().cumulative_work):
            return
        with self.states.rebuild_lock:
            if self.states.stored(parent.header) is None:
                if self._rebuild_step is None:
                    self._rebuild_step = canonical_step(self.spec, self.dataset)
                self.states.rebuild(parent.header, self._rebuild_step, should_stop)

    def _keep(self, block: Block, checked: Validated, peer: str | None) -> None:
        """W' into the state store first (a crash leaves at most an unreferenced file), the proof
        remembered, then the block row."""
        header = block.header
        if checked.replayed:
            self.states.keep(header, checked.state)
        if checked.proof_key is not None:
            self.proofs.put(checked.proof_key, header.state_hash, checked.after)
        self.store.put_block(header, block.wire_records, VALID, work_of(self.store, header), peer=peer,
                             acc=(None, checked.after.correct) if checked.after else None)

    def _not_accepted(self, exc: errors.BlockError, block: Block, peer, *, hold: bool) -> Outcome:
        """The verdict for a block (or a header alone) that a rule stopped; ``hold``: keep a block whose
        parent is missing or not validated yet as an orphan."""
        h = block.hash
        if isinstance(exc, errors.InvalidBlock):
            return self._reject(block, exc, peer)
        if isinstance(exc, errors.BadBody):
            return Outcome(Verdict.BAD_BODY, exc.code, exc.detail, h, stage=exc.stage)
        if isinstance(exc, (errors.UnknownParent, errors.ParentNotValidated)):
            if hold:
                self.orphans.hold(block, peer)
            return Outcome(Verdict.ORPHAN, exc.code, exc.detail, h)
        if isinstance(exc, errors.Duplicate):
            return Outcome(Verdict.DUPLICATE, exc.code, exc.detail, h)
        return Outcome(Verdict.IGNORED, exc.code, exc.detail, h)

    def _reject(self, block: Block, exc: errors.InvalidBlock, peer) -> Outcome:
        header = block.header
        verdict = Outcome(Verdict.INVALID, exc.code, exc.detail, header.hash, stage=exc.stage or Stage.HEADER)
        if len(header.encode()) > self.spec.limits.max_header_bytes or not exc.recorded:
            # never store an oversized header (it would cost the store its size) or one without a ticket
            # (it paid for nothing): nothing can descend from it and it is rejected again as cheaply as it
            # would be looked up
            log.debug("rejected header %s from %s without storing it: %s", header.hash[:16], peer or "local",
                      exc.code)
            return verdict
        self.store.put_block(header, block.wire_records, INVALID, 0, reason=exc.code, detail=exc.detail, peer=peer)
        n = self.store.mark_invalid_descendants(header.hash, exc.code)
        self.pruner.invalid_added(1 + n)
        log.warning("rejected block %s height %d from %s: %s (%s)%s", header.hash[:16], header.height,
                    peer or "local", exc.code, exc.detail, f"; {n} descendants invalid" if n else "")
        self.orphans.take_children(header.hash)
        return verdict

    # -- headers alone, and snapshot blocks -----------------------------------------
    def submit_header(self, header: BlockHeader, peer: str | None = None) -> Outcome:
        """A header alone (headers-first): the header rules; stored header-only, the block fetched later."""
        with self.lock:
            h = header.hash
            known = self.store.status(h)
            try:
                if known in (VALID, INVALID):
                    raise errors.Duplicate(f"already {known}")
                with judged_at(Stage.HEADER):
                    validate_header(header, self.spec, self.view, int(self.clock() * 1000))
            except errors.BlockError as exc:
                return self._not_accepted(exc, Block(header), peer, hold=False)
            if known is None:
                try:
                    self.store.put_block(header, [], HEADER_ONLY, work_of(self.store, header), peer=peer)
                    self.pruner.header_added()      # an announcement flood is capped here, not at the next block
                except STORE_FAILURES as exc:
                    return self._store_failed(h, exc)
                self.health.ok()
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
                    self.pruner.prune_headers(self.tip().height)      # the global cap holds after every batch
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
        """``header_batch.check_batch``, then ``store(rows)`` writes the good ones in one transaction, before
        the first item that failed is recorded (an invalid one as invalid, with its sender)."""
        outs, good, failed = check_batch(items, self.spec, self.view, self.store, int(self.clock() * 1000))
        store(good)
        if failed is not None:
            outs.append(self._not_accepted(failed[1], failed[0], peer, hold=False))
        return outs

    # -- fork choice (node/fork_choice.py) -------------------------------------------------------------------
    def _heavier_branch_base(self, header: BlockHeader) -> BlockHeader | None:
        """The first block of the header-only branch below ``header`` (its parent valid), when ``header``
        makes that branch claim more work than the tip; else None. (Store reads only: no lock.)"""
        row = self.store.get(header.parent)
        if row is None or row.status != HEADER_ONLY or work_of(self.store, header) <= self.tip().cumulative_work:
            return None
        while True:
            parent = self.store.get(row.header.parent)
            if parent is None or parent.status != HEADER_ONLY:
                break
            row = parent
        return row.header if parent is not None and parent.status == VALID else None

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

    def _connect_orphans(self, parent_hash: str) -> list[str]:
        connected, todo = [], [parent_hash]
        while todo:
            for held in self.orphans.take_children(todo.pop()):
                if self._submit_one(held.block, held.peer).status == Verdict.ACCEPTED:
                    connected.append(held.block.hash)
                    todo.append(held.block.hash)
        return connected

    def _switch_tip(self, new_tip: StoredBlock) -> int:
        path = path_from_best(self.store, new_tip)
        fork, depth = self.store.set_tip(new_tip.header, path)
        if depth > 1 or (depth == 1 and fork < new_tip.height):
            # a depth-1 reorg (two blocks at one height, the heavier wins) is routine proof-of-work
            log.log(logging.WARNING if depth > 1 else logging.INFO, "reorg: depth %d, fork at height %d, new tip %s "
                    "height %d", depth, fork, new_tip.hash[:16], new_tip.height)
        log.info("new tip %s height %d k=%d work=%d acc=%s/%d", new_tip.hash[:16], new_tip.height,
                 new_tip.header.difficulty, new_tip.cumulative_work, new_tip.header.acc_after,
                 self.spec.evaluation.size)
        self.pruner.after_tip_change(new_tip.height, fork)
        reorg = depth if fork < new_tip.height else 0
        for fn in list(self.tip_listeners):
            try:
                fn(new_tip, reorg)
            except Exception:  # a listener must never break the chain
                log.exception("tip listener failed")
        return reorg
