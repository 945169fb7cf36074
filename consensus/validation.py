"""Block validation (protocol v4): four stages, cheapest rule first (``validate_block`` runs them).

    header     -- syntax and limits, nonce count, signature, admission ticket, time not too new,
                  parent known and valid, height, difficulty, time after the parent and after
                  the median time past
    records    -- the records match the header's root (on the raw JSON), then parse and are valid
    replay     -- from the parent's post-state, the j advance steps and the winning
                  step on the miner-bound batches; R (from the parent's post-state and
                  the redraw epoch) holds with the validators' band; the post-state
                  hashes to the header's state_hash (the part that carries the 2^k work)
    accuracy   -- one evaluation of W' on E: the claim is within tolerance and W'
                  is no worse than the floor: the parent's claim + min_improvement, relaxed
                  per redraw epoch (accuracy_floor)

Each rule is one small function raising a typed ``consensus.errors.InvalidBlock`` (or
``Ignored`` / ``BadBody``); each stage function (``check_header_and_records``, ``recall_proof`` /
``check_work``, ``check_accuracy``) tags the error with its ``errors.Stage`` (``exc.stage``). No rule
touches a tensor before every header rule has passed. The dgg-paper research rules are in
consensus.paper.
"""
from __future__ import annotations

from collections import OrderedDict
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from typing import Callable, Iterator, Protocol, Sequence

import torch

from . import errors
from .errors import Stage
from .block import Block, BlockHeader, check_records_commitment, records_root
from .difficulty import median_time_past, next_difficulty
from .proof import derive_batch, r_seed, redraw_epoch, requirements_for
from .records import Record
from .requirements import first_failed, requirements_hold_with_margin
from .spec import ChainSpec
from .ticket import ticket_holds
from .training import Accuracy, CanonicalStep
from .weights import State, all_finite, weights_hash


class ChainView(Protocol):
    def header(self, block_hash: str) -> BlockHeader | None: ...
    def is_invalid(self, block_hash: str) -> bool: ...


# == header rules ===============================================================
def validate_size(header: BlockHeader, spec: ChainSpec) -> None:
    if len(header.encode()) > spec.limits.max_header_bytes:
        raise errors.Malformed(f"header larger than {spec.limits.max_header_bytes} bytes")


def validate_version(header: BlockHeader, spec: ChainSpec) -> None:
    if header.version != spec.header_version:
        raise errors.BadVersion(f"version {header.version}, this chain uses {spec.header_version}")


def validate_chain_id(header: BlockHeader, spec: ChainSpec) -> None:
    if header.chain_id != spec.chain_id:
        raise errors.BadChainId(f"block is for chain {header.chain_id[:16]}, not {spec.chain_id[:16]}")


def validate_fields(header, spec: ChainSpec) -> None:
    d, m = spec.difficulty, spec.evaluation.size
    if header.height < 1:
        raise errors.BadHeight("only genesis has height 0")
    if not d.minimum <= header.difficulty <= d.maximum:
        raise errors.BadDifficulty(f"k={header.difficulty} outside [{d.minimum}, {d.maximum}]")
    if not all(0 <= getattr(header, f) <= m for f in ("acc_before", "acc_after") if hasattr(header, f)):
        raise errors.BadAccuracyClaim(f"accuracy counts must lie in [0, {m}]")
    if len(header.miner) != 64 or len(header.signature) != 128 or not set(header.miner + header.signature) <= set("0123456789abcdef"):
        raise errors.BadSignature("miner key must be 32 bytes and signature 64 bytes, lowercase hex")


def validate_nonces(header: BlockHeader, spec: ChainSpec) -> None:
    most = spec.proof.max_advance_steps + 1
    if not 1 <= len(header.nonces) <= most:
        raise errors.BadNonces(f"{len(header.nonces)} nonces: a block has the winning step and at most "
                               f"{most - 1} advance steps")


def validate_batch_indices(header, spec: ChainSpec) -> None:
    """dgg-paper only: the miner names the batch (v2 derives it from nonces)."""
    batch, s, n = header.batch, spec.training.batch_size, spec.dataset.train_size
    if len(batch) != s:
        raise errors.BadBatchIndices(f"{len(batch)} indices, the spec wants {s}")
    if len(set(batch)) != s:
        raise errors.BadBatchIndices("indices repeat")
    if any(not 0 <= i < n for i in batch):
        raise errors.BadBatchIndices(f"index outside [0, {n})")


def validate_signature(header: BlockHeader) -> None:
    if not header.signature_valid():
        raise errors.BadSignature("Ed25519 signature does not verify")


def validate_ticket(header: BlockHeader, spec: ChainSpec) -> None:
    """v4: the header paid for being looked at (consensus.ticket): one scrypt evaluation, before anything
    that costs more."""
    if not ticket_holds(spec, header):
        raise errors.BadTicket(f"the ticket does not give {spec.proof.ticket_bits} leading zero bits")


def validate_not_from_future(header: BlockHeader, spec: ChainSpec, now_ms: int) -> None:
    if header.timestamp_ms > now_ms + spec.time.max_future_ms:
        raise errors.TimeTooNew(f"timestamp {header.timestamp_ms - now_ms} ms ahead of local clock")


def lookup_parent(header: BlockHeader, view: ChainView) -> BlockHeader:
    if view.is_invalid(header.parent):
        raise errors.BadParent(f"parent {header.parent[:16]} is invalid")
    parent = view.header(header.parent)
    if parent is None:
        raise errors.UnknownParent(f"parent {header.parent[:16]} not known")
    return parent


def validate_height(header: BlockHeader, parent: BlockHeader) -> None:
    if header.height != parent.height + 1:
        raise errors.BadHeight(f"height {header.height}, parent is at {parent.height}")


def validate_difficulty(header: BlockHeader, parent: BlockHeader, spec: ChainSpec, view: ChainView) -> None:
    want = next_difficulty(spec, parent, view)
    if header.difficulty != want:
        raise errors.BadDifficulty(f"k={header.difficulty}, the retarget rule gives {want}")


def validate_timestamp(header: BlockHeader, parent: BlockHeader, spec: ChainSpec, view: ChainView) -> None:
    mtp = median_time_past(spec, parent, view)
    if header.timestamp_ms <= mtp:
        raise errors.TimeTooOld(f"timestamp not after median time past {mtp}")
    if not spec.is_paper and header.timestamp_ms <= parent.timestamp_ms:
        # v4: a miner cannot stamp its block before its parent to open later redraw epochs for its next one
        raise errors.TimeTooOld(f"timestamp not after the parent's {parent.timestamp_ms}")


def validate_header_standalone(header, spec: ChainSpec, now_ms: int) -> None:
    """Every rule that needs no chain context."""
    validate_size(header, spec)
    validate_version(header, spec)
    validate_chain_id(header, spec)
    validate_fields(header, spec)
    if spec.is_paper:
        validate_batch_indices(header, spec)
    else:
        validate_nonces(header, spec)
    validate_paid(header, spec)
    validate_not_from_future(header, spec, now_ms)


def validate_paid(header, spec: ChainSpec) -> None:
    """The signature, then (v4) the ticket: the rules a node checks before a header takes any of its
    time beyond them (a POSTed block before it waits for the validator, too)."""
    validate_signature(header)
    if not spec.is_paper:
        validate_ticket(header, spec)


def validate_header(header, spec: ChainSpec, view: ChainView, now_ms: int) -> BlockHeader:
    """All header rules; returns the parent header."""
    validate_header_standalone(header, spec, now_ms)
    parent = lookup_parent(header, view)
    validate_height(header, parent)
    validate_difficulty(header, parent, spec, view)
    validate_timestamp(header, parent, spec, view)
    return parent


# == body rules ===================================================================
def validate_records(header, records: Sequence[Record], spec: ChainSpec) -> None:
    if records_root(list(records)) != header.records_root:
        raise errors.RecordsMismatch("records do not match the header's records_root")
    if len(records) > spec.limits.max_records:
        raise errors.BadRecord(f"more than {spec.limits.max_records} records")
    seen = set()
    for r in records:
        if r.type not in spec.record_types:
            raise errors.BadRecord(f"record type {r.type!r} not enabled on this chain")
        if len(r.encode()) > spec.limits.max_record_bytes:
            raise errors.BadRecord(f"record larger than {spec.limits.max_record_bytes} bytes")
        if r.id in seen:
            raise errors.BadRecord("duplicate record")
        seen.add(r.id)


# == proof rules ===================================================================
def batches(header: BlockHeader, parent: BlockHeader, spec: ChainSpec) -> list[tuple[int, ...]]:
    """The train indices of each of the block's steps (advance steps, then the winning one), all derived
    in the block's redraw epoch."""
    epoch = redraw_epoch(spec, parent.timestamp_ms, header.timestamp_ms)
    return [derive_batch(spec, header.parent, header.miner, epoch, n) for n in header.nonces]


def validator_band(spec: ChainSpec) -> tuple[int, float]:
    """The validators' band: a required change must be at least ``max(ulps * ulp(w), abs)``."""
    return spec.requirements.band_ulps, float(spec.requirements.band_abs)


def replay_steps(header: BlockHeader, parent: BlockHeader, parent_state: State, replayer: CanonicalStep,
                 spec: ChainSpec, should_stop: Callable[[], bool] | None = None) -> tuple[tuple, torch.Tensor,
                                                                                         torch.Tensor]:
    """Replay every step from the parent's post-state: (R, W at R's coordinates before the winning
    step, after it). Leaves W' loaded in the replayer. ``should_stop()`` is asked before each step; true
    stops the replay with ``errors.ReplayStopped`` (the block is then not judged)."""
    reqs = requirements_for(spec, parent, header.timestamp_ms, header.difficulty, replayer.r_space)
    steps = batches(header, parent, spec)
    replayer.load(parent_state)
    before = None
    for i, batch in enumerate(steps):
        if should_stop is not None and should_stop():
            raise errors.ReplayStopped(i)
        if i == len(steps) - 1:
            before = replayer.values(reqs)
        replayer.step(batch)
    return reqs, before, replayer.values(reqs)


def check_requirements(header: BlockHeader, parent: BlockHeader, parent_state: State, replayer: CanonicalStep,
                       spec: ChainSpec, should_stop: Callable[[], bool] | None = None) -> None:
    """Replay every step from the parent's post-state (the exact step: any thread count); R must hold
    for the winning step with the validators' band. Leaves W' loaded in the replayer."""
    reqs, before, after = replay_steps(header, parent, parent_state, replayer, spec, should_stop)
    band = validator_band(spec)
    i = first_failed(before, after, reqs, *band)
    if i is not None:
        r = reqs[i]
        raise errors.RequirementsNotMet(
            f"requirement {i} (weight {r.index}, {'+' if r.direction > 0 else '-'}) not met: "
            f"change {float(after[i] - before[i]):.3e} (band {band[0]} ulp, {band[1]:.1e})")


def check_state_commitment(header: BlockHeader, replayer: CanonicalStep) -> State:
    """The replayed post-state is the one the header commits to."""
    state = replayer.state()
    if not all_finite(state):
        raise errors.NonFiniteWeights("the replayed post-state contains NaN or Inf")
    got = weights_hash(state)
    if got != header.state_hash:
        raise errors.StateMismatch(f"replayed post-state hashes to {got[:16]}, header says {header.state_hash[:16]}")
    return state


def check_recalled_commitment(header: BlockHeader, state_hash: str) -> None:
    """A memoised proof: its post-state is the one the header commits to."""
    if state_hash != header.state_hash:
        raise errors.StateMismatch(f"this proof's post-state is {state_hash[:16]}, header says "
                                   f"{header.state_hash[:16]}")


def check_accuracy_claim(header, measured: Accuracy, spec: ChainSpec) -> None:
    tol = spec.evaluation.claim_tolerance
    if abs(measured.correct - header.acc_after) > tol:
        raise errors.BadAccuracyClaim(f"claimed {header.acc_after}, measured {measured.correct} (tolerance {tol})")


def accuracy_floor(spec: ChainSpec, parent: BlockHeader, timestamp_ms: int) -> int:
    """The least acc(W') a child stamped ``timestamp_ms`` may have: the parent's claim + min_improvement,
    lowered by floor_relax per redraw epoch since the parent (v3: a lucky or false claim cannot stall the
    chain), never below ``lowest_floor`` (v4; docs/protocol.md §6)."""
    epoch = redraw_epoch(spec, parent.timestamp_ms, timestamp_ms)
    return max(lowest_floor(spec), parent.acc_after + spec.proof.min_improvement - spec.proof.floor_relax * epoch)


def lowest_floor(spec: ChainSpec) -> int:
    """The floor no relaxation goes below (v4): half of chance on E, ``size // (2 * num_classes)`` (25 of 500
    for ten classes). A model that predicts one class scores that class's share of E, about chance, so no
    ordinary training step goes below it, while a block that wrecks the model does. (v3: 0, and since the
    genesis timestamp is fixed in the spec long before a chain starts, the epochs since it relaxed block 1's
    floor to 0. Not the genesis model's own score less a slack: from ResNet-18's genesis, 56/500 on E, the first
    two to five plain SGD steps give 38-50 as its predictions collapse onto one class, docs/protocol.md §6.)"""
    if spec.is_paper:
        return 0
    return spec.evaluation.size // (2 * spec.model.num_classes)


def check_accuracy_floor(measured: Accuracy, parent: BlockHeader, spec: ChainSpec, timestamp_ms: int) -> None:
    floor = accuracy_floor(spec, parent, timestamp_ms)
    if measured.correct < floor:
        raise errors.AccuracyNotImproved(
            f"acc(W')={measured.correct} below the floor {floor} (parent's claim {parent.acc_after}, "
            f"{spec.proof.min_improvement:+d}, relaxed {spec.proof.floor_relax} per redraw epoch)")


# == the pipeline: four stages, cheapest first ===========================================
STAGES = ("header", "records", "load_state", "replay", "state_hash", "accuracy")   # timed parts, in order
StageTimer = Callable[[str], AbstractContextManager]


def no_timer(_stage: str) -> AbstractContextManager:
    return nullcontext()


@contextmanager
def judged_at(stage: Stage) -> Iterator[None]:
    """``with judged_at(Stage.X):`` -- a BlockError raised inside is stage X's verdict (``exc.stage``)."""
    try:
        yield
    except errors.BlockError as exc:
        exc.stage = stage
        raise


class ProofMemo:
    """Replayed proofs (most recent ``size``), keyed by everything a replay depends on: the parent's
    state and R's seed, the parent, k, the batches' key and the nonces. A sibling that re-signs the
    same proof (new timestamp in the same redraw epoch, other records) costs a lookup, not a replay."""

    def __init__(self, size: int = 1024):
        self.size = size
        self._items: OrderedDict[tuple, tuple[str, Accuracy]] = OrderedDict()

    @staticmethod
    def key(header: BlockHeader, parent: BlockHeader, spec: ChainSpec) -> tuple:
        epoch = redraw_epoch(spec, parent.timestamp_ms, header.timestamp_ms)
        return (r_seed(spec, parent.state_hash, parent.height, epoch), parent.hash, header.difficulty,
                header.miner, header.nonces)

    def get(self, key: tuple) -> tuple[str, Accuracy] | None:
        return self._items.get(key)

    def put(self, key: tuple, state_hash: str, after: Accuracy) -> None:
        self._items[key] = (state_hash, after)
        self._items.move_to_end(key)
        while len(self._items) > self.size:
            self._items.popitem(last=False)

    def __len__(self) -> int:
        return len(self._items)


@dataclass(frozen=True)
class Validated:
    parent: BlockHeader
    state: State | None         # W' when replayed here; None when recalled from the memo or not checked
    after: Accuracy | None      # acc(W') on E; None when the proof was not checked (assume-valid)
    proof_key: tuple | None     # the ProofMemo key (None when not checked)

    @property
    def replayed(self) -> bool:
        return self.state is not None


def check_header_and_records(block: Block, spec: ChainSpec, view: ChainView, now_ms: int,
                             timer: StageTimer = no_timer) -> BlockHeader:
    """Stages ``header`` and ``records``: every rule that touches no tensor. Returns the parent header."""
    with judged_at(Stage.HEADER), timer("header"):
        parent = validate_header(block.header, spec, view, now_ms)
    with judged_at(Stage.RECORDS), timer("records"):
        check_records_commitment(block.header, block.records_json)
        validate_records(block.header, block.records, spec)
    return parent


def recall_proof(block: Block, parent: BlockHeader, spec: ChainSpec, memo: ProofMemo | None,
                 timer: StageTimer = no_timer) -> Accuracy | None:
    """Stage ``replay`` answered from ``memo``: acc(W') of the same proof replayed before (its commitment
    checked), or None when it was not."""
    recalled = memo.get(ProofMemo.key(block.header, parent, spec)) if memo is not None else None
    if recalled is None:
        return None
    with judged_at(Stage.REPLAY), timer("replay"):
        check_recalled_commitment(block.header, recalled[0])
    return recalled[1]


def check_work(block: Block, parent: BlockHeader, parent_state: State, replayer: CanonicalStep, spec: ChainSpec,
               *, should_stop: Callable[[], bool] | None = None, timer: StageTimer = no_timer) -> State:
    """Stage ``replay``: the block's steps from the parent's post-state meet R, and W' hashes to the
    header's state_hash (the part that carries the 2^k work). Returns W' (left loaded in the replayer).
    Raises ``errors.ReplayStopped`` when ``should_stop()`` says so between two steps."""
    with judged_at(Stage.REPLAY):
        with timer("replay"):
            check_requirements(block.header, parent, parent_state, replayer, spec, should_stop)
        with timer("state_hash"):
            return check_state_commitment(block.header, replayer)


def check_accuracy(block: Block, parent: BlockHeader, measured: Accuracy, spec: ChainSpec) -> Accuracy:
    """Stage ``accuracy``: acc(W') on E (``measured``) is the claim, within tolerance, and no worse than
    the floor."""
    with judged_at(Stage.ACCURACY):
        check_accuracy_claim(block.header, measured, spec)
        check_accuracy_floor(measured, parent, spec, block.header.timestamp_ms)
    return measured


def validate_block(block: Block, spec: ChainSpec, view: ChainView, now_ms: int, *, replayer: CanonicalStep,
                   parent_state: State, memo: ProofMemo | None = None,
                   should_stop: Callable[[], bool] | None = None, timer: StageTimer = no_timer) -> Validated:
    """Every rule for one block whose parent's post-state is at hand, cheapest first; raises a typed
    BlockError carrying its ``Stage``. The node's pipeline (node/chain.py, ``Chain._judge``) runs the
    same four stage functions, and between them supplies the parent's post-state (it may be pruned or
    on a lighter fork) and relays a block whose work is checked."""
    parent = check_header_and_records(block, spec, view, now_ms, timer)
    after = recall_proof(block, parent, spec, memo, timer)
    state = None
    if after is None:
        state = check_work(block, parent, parent_state, replayer, spec, should_stop=should_stop, timer=timer)
    with timer("accuracy"):
        if after is None:
            after = replayer.cached_accuracy(block.header.state_hash)
        check_accuracy(block, parent, after, spec)
    return Validated(parent, state, after, ProofMemo.key(block.header, parent, spec))


# == the miner's publication policy (stricter than validation) =========================
def miner_requirements_ok(before: torch.Tensor, after: torch.Tensor, reqs, spec: ChainSpec) -> bool:
    return requirements_hold_with_margin(before, after, reqs, spec.requirements.margin_ulps,
                                         float(spec.requirements.margin_abs))


def miner_accuracy_failure(after: Accuracy, parent: BlockHeader, spec: ChainSpec,
                           timestamp_ms: int | None = None) -> str | None:
    """Why a miner must not publish W' ("borderline": more predictions within the logit margin than
    the claim tolerance; "floor": below the parent's floor if every borderline one were wrong), or None."""
    if after.borderline > spec.evaluation.claim_tolerance:
        return "borderline"
    ts = parent.timestamp_ms if timestamp_ms is None else timestamp_ms
    if after.correct - after.borderline < accuracy_floor(spec, parent, ts):
        return "floor"
    return None


def miner_accuracy_ok(after: Accuracy, parent: BlockHeader, spec: ChainSpec, timestamp_ms: int | None = None) -> bool:
    """Publish only if no set of borderline predictions flipping could change the verdict."""
    return miner_accuracy_failure(after, parent, spec, timestamp_ms) is None
