"""Helpers for the consensus tests: full validation, re-signing, proof search."""
from __future__ import annotations

import random
from dataclasses import dataclass, replace
from typing import Callable, Iterator

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from consensus.block import BlockHeader, parse_records
from consensus.requirements import derive_requirements, requirements_hold
from consensus.spec import ChainSpec
from consensus.training import Accuracy, Replayer
from consensus.validation import (ProofResult, check_records_commitment, decode_weights, validate_header,
                                  validate_proof, validate_records)
from consensus.weights import State


def resign(header: BlockHeader, key: Ed25519PrivateKey, **changes) -> BlockHeader:
    """The header with ``changes``, signed again (so only the intended rule breaks)."""
    return replace(header, **changes).signed(key)


def validate_block(spec: ChainSpec, header: BlockHeader, body: bytes, records_json: list, view,
                   replayer: Replayer, now_ms: int, template: State) -> ProofResult:
    """The node's whole pipeline, in its order (node/chain.py): header, records commitment,
    records, weights, proof."""
    parent = validate_header(header, spec, view, now_ms)
    check_records_commitment(header, records_json)
    records = parse_records(records_json)
    w = decode_weights(header, body, spec, template)
    validate_records(header, records, spec)
    return validate_proof(header, parent, w, replayer, spec)


@dataclass(frozen=True)
class Trial:
    batch: tuple[int, ...]
    r_holds: bool
    before: Accuracy
    after: Accuracy


def trials(spec: ChainSpec, r: Replayer, w: State, parent_hash: str, k: int, *, seed: int = 0,
           count: int = 200, r_holds: bool | None = None) -> Iterator[Trial]:
    """Random canonical steps at a fixed W: does R hold (validator rule), accuracies before/after.

    With ``r_holds`` set, only steps with that R verdict are yielded (the others skip
    the accuracy evaluation, the expensive part).
    """
    rng = random.Random(seed)
    reqs = derive_requirements(parent_hash, k, r.index.total)
    acc_before = r.accuracy(w)
    for _ in range(count):
        batch = tuple(rng.sample(range(spec.dataset.train_size), spec.training.batch_size))
        r.load(w)
        before = r.index.gather(reqs)
        r.step(batch)
        after = r.index.gather(reqs)
        holds = requirements_hold(before, after, reqs)
        if r_holds is not None and holds != r_holds:
            continue
        yield Trial(batch, holds, acc_before, r.accuracy())


def find_trial(spec, r, w, parent_hash, k, want: Callable[[Trial], bool], **kw) -> Trial:
    for t in trials(spec, r, w, parent_hash, k, **kw):
        if want(t):
            return t
    raise AssertionError("no trial with the wanted property found")
