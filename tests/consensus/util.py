"""Helpers for the consensus tests: the node's validation pipeline, honest replays, proof search at a
fixed parent state, and the reason-code assertion shared by the test modules. Blocks, re-signed headers
and replays come from tests/blocks.py (``resign`` and ``replay`` are re-exported for the test modules)."""
from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Callable, Iterator, Sequence

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from consensus import errors
from consensus.block import Block, BlockHeader
from consensus.hashing import ZERO_HASH
from consensus.proof import derive_batch, redraw_epoch, requirements_for
from consensus.requirements import requirements_hold
from consensus.spec import ChainSpec
from consensus.training import Accuracy, Replayer
from consensus import validation
from consensus.weights import State
from tests.blocks import BlockSmith, replay, resign  # noqa: F401  (replay and resign: for the test modules)

IGNORED, BAD_BODY, INVALID = errors.Ignored, errors.BadBody, errors.InvalidBlock


def expect(cls: type[errors.BlockError], family: type[errors.BlockError], fn, *args, **kw):
    """``fn(*args, **kw)`` raises exactly ``cls``, whose code and family are as wanted."""
    with pytest.raises(errors.BlockError) as info:
        fn(*args, **kw)
    exc = info.value
    assert type(exc) is cls, f"wanted {cls.__name__}, got {type(exc).__name__}: {exc}"
    assert exc.code == cls.code
    assert isinstance(exc, family)
    for other in {IGNORED, BAD_BODY, INVALID} - {family}:
        assert not isinstance(exc, other)
    return exc


def honest_child(spec: ChainSpec, r: Replayer, parent: BlockHeader, parent_state: State, key: Ed25519PrivateKey,
                 nonces: Sequence[int], timestamp_ms: int, k: int | None = None,
                 records_root: str = ZERO_HASH) -> tuple[BlockHeader, State, Accuracy]:
    """A signed child of ``parent`` whose state_hash and acc_after are what its nonces really give, replayed
    on ``r`` (tests.blocks.BlockSmith.replayed); R is not looked at."""
    return BlockSmith(spec, r.dataset, key).replayed(parent, parent_state, nonces, timestamp_ms, k=k,
                                                     records_root=records_root, replayer=r)


def validate_block(spec: ChainSpec, header: BlockHeader, records_json: list, view, replayer: Replayer,
                   now_ms: int, parent_state: State) -> validation.Validated:
    """The node's whole pipeline (consensus.validation.validate_block, as node/chain.py runs it, without
    a proof memo): header, records commitment, records, the proof replayed from the parent's post-state."""
    return validation.validate_block(Block(header, records_json), spec, view, now_ms, replayer=replayer,
                                     parent_state=parent_state)


@dataclass(frozen=True)
class Trial:
    nonce: int
    r_holds: bool          # the validator rule (with the spec's band)


def trials(spec: ChainSpec, r: Replayer, parent: BlockHeader, parent_state: State, miner: str, k: int,
           timestamp_ms: int, *, seed: int = 0, count: int = 200) -> Iterator[Trial]:
    """Single-step proofs (no advance step) from the parent's post-state on random nonces: does R
    (from the parent's post-state and the epoch of ``timestamp_ms``) hold with the validators' band?"""
    rng = random.Random(seed)
    reqs = requirements_for(spec, parent, timestamp_ms, k, r.r_space)
    epoch = redraw_epoch(spec, parent.timestamp_ms, timestamp_ms)
    band = (spec.requirements.band_ulps, float(spec.requirements.band_abs))
    for _ in range(count):
        nonce = rng.getrandbits(64)
        r.load(parent_state)
        before = r.index.gather(reqs)
        r.step(derive_batch(spec, parent.hash, miner, epoch, nonce))
        after = r.index.gather(reqs)
        yield Trial(nonce, requirements_hold(before, after, reqs, *band))


def find_nonce(spec, r, parent, parent_state, miner, k, timestamp_ms, want: Callable[[Trial], bool], **kw) -> int:
    for t in trials(spec, r, parent, parent_state, miner, k, timestamp_ms, **kw):
        if want(t):
            return t.nonce
    raise AssertionError("no nonce with the wanted property found")
