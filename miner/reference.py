"""Algorithm 1 of the DGG paper, kept flat: the reference miner.

Each attempt is one canonical SGD step from the current W on a fresh random
batch of S distinct indices; training continues on failure (W <- W'); the
loop stops when R holds with the miner's margin and the accuracy rule holds
with room to spare, and returns W (the state before the winning step) and P.
"""
from __future__ import annotations

import random
import time
from dataclasses import dataclass
from typing import Callable

from consensus.block import BlockHeader
from consensus.requirements import derive_requirements
from consensus.spec import ChainSpec
from consensus.training import Accuracy, Replayer
from consensus.validation import miner_accuracy_ok, miner_requirements_ok
from consensus.weights import State


@dataclass
class Found:
    weights: State          # W, before the winning step
    batch: tuple[int, ...]  # P
    acc_before: Accuracy
    acc_after: Accuracy
    attempts: int
    seconds: float


@dataclass
class Progress:
    attempts: int = 0
    r_hits: int = 0
    started: float = 0.0

    def rate(self) -> float:
        dt = time.perf_counter() - self.started
        return self.attempts / dt if dt > 0 else 0.0


class ReferenceMiner:
    def __init__(self, spec: ChainSpec, replayer: Replayer, seed: int | None = None):
        self.spec = spec
        self.replayer = replayer
        self.rng = random.Random(seed)
        self.progress = Progress(started=time.perf_counter())

    def random_batch(self) -> tuple[int, ...]:
        return tuple(self.rng.sample(range(self.spec.dataset.train_size), self.spec.training.batch_size))

    def mine(self, parent: BlockHeader, k: int, w: State, *, should_stop: Callable[[], bool] = lambda: False,
             max_attempts: int | None = None) -> Found | None:
        r = self.replayer
        reqs = derive_requirements(parent.hash, k, r.index.total)
        r.load(w)
        t0, attempts = time.perf_counter(), 0
        while not should_stop() and (max_attempts is None or attempts < max_attempts):
            batch = self.random_batch()
            w_before = r.state()
            before = r.index.gather(reqs)
            r.step(batch)
            after = r.index.gather(reqs)
            attempts += 1
            self.progress.attempts += 1
            if not miner_requirements_ok(before, after, reqs, self.spec):
                continue
            self.progress.r_hits += 1
            acc_after = r.accuracy()
            w_after = r.state()
            acc_before = r.accuracy(w_before)
            r.load(w_after)
            if miner_accuracy_ok(acc_before, acc_after, parent, self.spec):
                return Found(w_before, batch, acc_before, acc_after, attempts, time.perf_counter() - t0)
        return None
