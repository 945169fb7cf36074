"""How a cheater builds blocks: forged headers, doctored weights, searched proofs.

Everything here talks to the consensus code the way an attacker with the
source would: it signs headers with its own key, picks W and P freely, and
replays steps with the canonical ``Replayer`` to look for a proof that passes
as many rules as possible before the one the test is about.
"""
from __future__ import annotations

import random
import struct
from dataclasses import dataclass, replace
from typing import Callable

import torch
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from safetensors.torch import save as st_save

from consensus import errors
from consensus.block import BlockHeader
from consensus.hashing import ZERO_HASH
from consensus.requirements import derive_requirements, requirements_hold
from consensus.spec import ChainSpec
from consensus.training import Accuracy, Replayer
from consensus.weights import State, clone_state, encode_state, weights_hash

HONEST_KEY = Ed25519PrivateKey.from_private_bytes(bytes([1]) * 32)
THIEF_KEY = Ed25519PrivateKey.from_private_bytes(bytes([2]) * 32)
BLOCK_INTERVAL_MS = 2000


def outcome_class(code: str) -> type[errors.BlockError]:
    """The exception class (and so the outcome family) of a wire reason code."""
    return errors.all_reason_codes()[code]


def signed(header: BlockHeader, key: Ed25519PrivateKey = THIEF_KEY, **changes) -> BlockHeader:
    return replace(header, **changes).signed(key)


@dataclass
class Proof:
    w: State                  # W, before the step
    batch: tuple[int, ...]    # P
    before: Accuracy
    after: Accuracy
    attempts: int


class Forge:
    """A cheater's workbench: one Replayer, the spec, a private RNG."""

    def __init__(self, spec: ChainSpec, dataset, seed: int = 99):
        self.spec = spec
        self.replayer = Replayer(spec, dataset)
        self.rng = random.Random(seed)

    # -- headers ---------------------------------------------------------------
    def header(self, parent: BlockHeader, w: State, batch, *, key: Ed25519PrivateKey = THIEF_KEY,
               timestamp_ms: int | None = None, difficulty: int | None = None,
               acc: tuple[int, int] | None = None, **changes) -> BlockHeader:
        """A well-formed, signed header for (W, P) on ``parent``; accuracy claims measured honestly."""
        if acc is None:
            a, b = self.accuracies(w, batch)
            acc = (a.correct, b.correct)
        h = BlockHeader(
            version=self.spec.header_version, chain_id=self.spec.chain_id, height=parent.height + 1,
            parent=parent.hash,
            timestamp_ms=parent.timestamp_ms + BLOCK_INTERVAL_MS if timestamp_ms is None else timestamp_ms,
            difficulty=parent.difficulty if difficulty is None else difficulty, miner="", batch=tuple(batch),
            weights_hash=weights_hash(w), acc_before=acc[0], acc_after=acc[1], records_root=ZERO_HASH)
        return replace(h, **changes).signed(key)

    def accuracies(self, w: State, batch) -> tuple[Accuracy, Accuracy]:
        r = self.replayer
        before = r.accuracy(w)
        r.load(w)
        r.step(tuple(batch))
        return before, r.accuracy()

    def step(self, w: State, batch) -> State:
        return self.replayer.update(w, tuple(batch))

    def random_batch(self) -> tuple[int, ...]:
        return tuple(self.rng.sample(range(self.spec.dataset.train_size), self.spec.training.batch_size))

    def requirements_hold(self, parent_hash: str, k: int, w: State, batch) -> bool:
        r = self.replayer
        reqs = derive_requirements(parent_hash, k, r.index.total)
        r.load(w)
        before = r.index.gather(reqs)
        r.step(tuple(batch))
        return requirements_hold(before, r.index.gather(reqs), reqs)

    # -- searches ----------------------------------------------------------------
    def search(self, parent_hash: str, k: int, w_start: State,
               accept: Callable[[Accuracy, Accuracy], bool], *, perturb: float = 0.0,
               keep_training: bool = True, max_attempts: int = 20000, seed: int | None = None) -> Proof:
        """Look for (W, P) whose step meets R (validator rule, no margin) and ``accept(before, after)``.

        ``perturb`` > 0: W is never trained; before each attempt it moves by Gaussian noise of
        that scale (a random-walk perturbation search); otherwise training continues from W'
        after each failed attempt when ``keep_training``, or W stays fixed.
        """
        r = self.replayer
        reqs = derive_requirements(parent_hash, k, r.index.total)
        w = clone_state(w_start)
        if seed is not None:
            self.rng = random.Random(seed)
        gen = torch.Generator().manual_seed(self.rng.randrange(1 << 30))
        names = self.learnable_names()
        for attempt in range(1, max_attempts + 1):
            if perturb:  # a random walk instead of training: W never takes an SGD step
                w = dict(w)
                for name in names:
                    w[name] = w[name] + perturb * torch.randn(w[name].shape, generator=gen)
            batch = self.random_batch()
            r.load(w)
            before = r.index.gather(reqs)
            r.step(batch)
            after = r.index.gather(reqs)
            w_after = r.state() if keep_training and not perturb else None
            if requirements_hold(before, after, reqs):
                acc_after = r.accuracy()
                acc_before = r.accuracy(w)
                if accept(acc_before, acc_after):
                    return Proof(clone_state(w), batch, acc_before, acc_after, attempt)
            if w_after is not None:
                w = w_after
        raise AssertionError(f"no proof found in {max_attempts} attempts")

    def learnable_names(self) -> list[str]:
        return [n for n, _ in self.replayer.model.named_parameters()]

    def param_of_index(self, index: int) -> tuple[str, int]:
        """Flat parameter index -> (state name, offset in the flattened tensor)."""
        i, off = self.replayer.index.locate(index)
        return self.learnable_names()[i], off


# -- weights containers ---------------------------------------------------------------
def safetensors_bytes(state: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> bytes:
    return st_save({k: v.contiguous() for k, v in state.items()}, metadata=metadata)


def raw_safetensors(header: dict | bytes, payload: bytes = b"", declared_len: int | None = None) -> bytes:
    """A hand-built safetensors container: u64 LE header length | JSON header | data."""
    import json
    hb = header if isinstance(header, bytes) else json.dumps(header).encode()
    n = len(hb) if declared_len is None else declared_len
    return struct.pack("<Q", n) + hb + payload


def encode(state: State) -> bytes:
    return encode_state(state)
