"""Block validation, cheapest rule first. Each rule is one small function.

    validate_header  -- syntax and limits, signature, time not too new,
                        parent known and valid, height, difficulty, median time past
    validate_body    -- weights decode and match the header's hash, layout,
                        finite values; records match the root and are valid
    validate_proof   -- requirements R from the parent hash hold for
                        W' = update(W, P); accuracy claims, improvement, regression

Failures raise the typed errors of consensus.errors. No rule touches a tensor
before every header rule has passed.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, Sequence

import torch

from . import errors
from .block import BlockHeader, records_root
from .difficulty import median_time_past, next_difficulty
from .hashing import canonical_json, merkle_root
from .records import Record
from .requirements import (derive_requirements, first_failed, requirements_hold,
                           requirements_hold_with_margin)
from .spec import ChainSpec
from .training import Accuracy, Replayer
from .weights import State, all_finite, decode_state, layout_problem, weights_hash


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


def validate_fields(header: BlockHeader, spec: ChainSpec) -> None:
    d, m = spec.difficulty, spec.evaluation.size
    if header.height < 1:
        raise errors.BadHeight("only genesis has height 0")
    if not d.minimum <= header.difficulty <= d.maximum:
        raise errors.BadDifficulty(f"k={header.difficulty} outside [{d.minimum}, {d.maximum}]")
    if not (0 <= header.acc_before <= m and 0 <= header.acc_after <= m):
        raise errors.BadAccuracyClaim(f"accuracy counts must lie in [0, {m}]")
    if len(header.miner) != 64 or len(header.signature) != 128 or not set(header.miner + header.signature) <= set("0123456789abcdef"):
        raise errors.BadSignature("miner key must be 32 bytes and signature 64 bytes, lowercase hex")


def validate_batch_indices(header: BlockHeader, spec: ChainSpec) -> None:
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


def validate_header_standalone(header: BlockHeader, spec: ChainSpec, now_ms: int) -> None:
    """Every rule that needs no chain context."""
    validate_size(header, spec)
    validate_version(header, spec)
    validate_chain_id(header, spec)
    validate_fields(header, spec)
    validate_batch_indices(header, spec)
    validate_signature(header)
    validate_not_from_future(header, spec, now_ms)


def validate_header(header: BlockHeader, spec: ChainSpec, view: ChainView, now_ms: int) -> BlockHeader:
    """All header rules; returns the parent header."""
    validate_header_standalone(header, spec, now_ms)
    parent = lookup_parent(header, view)
    validate_height(header, parent)
    validate_difficulty(header, parent, spec, view)
    validate_timestamp(header, parent, spec, view)
    return parent


# == body rules ===================================================================
def decode_weights(header: BlockHeader, data: bytes, spec: ChainSpec, template: State) -> State:
    """Weights bytes -> W, checked against the header. Mismatch is a bad body."""
    if len(data) > spec.limits.max_weights_bytes:
        raise errors.MalformedWeights(f"weights file larger than {spec.limits.max_weights_bytes} bytes")
    state = decode_state(data)
    got = weights_hash(state)
    if got != header.weights_hash:
        raise errors.WeightsMismatch(f"weights hash {got[:16]} != header {header.weights_hash[:16]}")
    problem = layout_problem(state, template)
    if problem:  # the header itself commits to weights that do not fit the model
        raise errors.Malformed(f"committed weights do not fit {spec.model.arch}: {problem}")
    if not all_finite(state):
        raise errors.NonFiniteWeights("committed weights contain NaN or Inf")
    return state


def check_records_commitment(header: BlockHeader, items: Any) -> None:
    """Raw records (JSON from a peer) against the header's records_root, before any parsing.

    Records the header does not commit to say nothing about the header: a relay may have
    swapped them, and the genuine ones may still come. So a mismatch -- including items
    that are not a list or have no canonical encoding -- is a bad body, and only records
    that *do* match the root can make the block invalid (bad-record, when parsed).
    """
    if not isinstance(items, list):
        raise errors.RecordsMismatch("records must be a JSON list")
    try:
        root = merkle_root(canonical_json(item) for item in items)
    except (TypeError, ValueError, RecursionError):
        raise errors.RecordsMismatch("a record has no canonical encoding") from None
    if root != header.records_root:
        raise errors.RecordsMismatch("records do not match the header's records_root")


def validate_records(header: BlockHeader, records: Sequence[Record], spec: ChainSpec) -> None:
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
@dataclass(frozen=True)
class ProofResult:
    before: Accuracy
    after: Accuracy


def check_requirements(header: BlockHeader, parent: BlockHeader, replayer: Replayer, w: State) -> None:
    reqs = derive_requirements(parent.hash, header.difficulty, replayer.index.total)
    replayer.load(w)
    before = replayer.index.gather(reqs)
    replayer.step(header.batch)
    after = replayer.index.gather(reqs)
    if not requirements_hold(before, after, reqs):
        i = first_failed(before, after, reqs)
        r = reqs[i]
        raise errors.RequirementsNotMet(
            f"requirement {i} (weight {r.index}, {'+' if r.direction > 0 else '-'}) not met: "
            f"change {float(after[i] - before[i]):.3e}")


def check_accuracy_claims(header: BlockHeader, result: ProofResult, spec: ChainSpec) -> None:
    tol = spec.evaluation.claim_tolerance
    if abs(result.before.correct - header.acc_before) > tol or abs(result.after.correct - header.acc_after) > tol:
        raise errors.BadAccuracyClaim(
            f"claimed {header.acc_before}->{header.acc_after}, measured "
            f"{result.before.correct}->{result.after.correct} (tolerance {tol})")


def check_accuracy_improved(result: ProofResult) -> None:
    if result.after.correct <= result.before.correct:
        raise errors.AccuracyNotImproved(f"acc(W')={result.after.correct} <= acc(W)={result.before.correct}")


def check_accuracy_not_regressed(result: ProofResult, parent: BlockHeader, spec: ChainSpec) -> None:
    floor = parent.acc_after - spec.evaluation.regression_tolerance
    if result.after.correct < floor:
        raise errors.AccuracyRegressed(
            f"acc(W')={result.after.correct} below the parent's {parent.acc_after} minus tolerance")


def validate_proof(header: BlockHeader, parent: BlockHeader, w: State, replayer: Replayer,
                   spec: ChainSpec) -> ProofResult:
    """Replay the winning step and apply the accuracy rule. Leaves W loaded."""
    check_requirements(header, parent, replayer, w)
    after = replayer.accuracy()          # the model now holds W'
    before = replayer.accuracy(w)
    result = ProofResult(before, after)
    check_accuracy_claims(header, result, spec)
    check_accuracy_improved(result)
    check_accuracy_not_regressed(result, parent, spec)
    return result


# == the miner's publication policy (stricter than validation) =========================
def miner_requirements_ok(before: torch.Tensor, after: torch.Tensor, reqs, spec: ChainSpec) -> bool:
    return requirements_hold_with_margin(before, after, reqs, spec.requirements.margin_ulps,
                                         float(spec.requirements.margin_abs))


def miner_accuracy_ok(before: Accuracy, after: Accuracy, parent: BlockHeader, spec: ChainSpec) -> bool:
    """Publish only if no set of borderline predictions flipping could change the verdict."""
    slack = before.borderline + after.borderline
    if slack > spec.evaluation.claim_tolerance:
        return False
    worst_after = after.correct - after.borderline
    return (worst_after > before.correct + before.borderline
            and worst_after >= parent.acc_after - spec.evaluation.regression_tolerance)
