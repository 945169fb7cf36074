"""Algorithm 1 of the DGG paper under protocol v3, kept flat: the reference miner.

From the parent's post-state, each attempt is one canonical SGD step on the batch of a fresh
random nonce (the batch is derived from parent, miner key and nonce: consensus.proof). The
loop stops when R holds with the miner's margin and W' clears the accuracy floor with room to
spare, and returns the nonces (advance steps, then the winner) and W'. Training continues on
failure while the block may still hold advance steps (j < J): the failed step becomes one;
after J of them each attempt starts again from W_J. A trajectory whose W_J has fallen below
the accuracy floor cannot win, so the miner goes back to the parent's state and starts another.
"""
from __future__ import annotations

import dataclasses
import random
import time
from dataclasses import dataclass, field
from typing import Callable

from consensus.block import BlockHeader
from consensus.difficulty import median_time_past
from consensus.proof import derive_batch, redraw_epoch, requirements_for
from consensus.spec import ChainSpec
from consensus.training import Accuracy, CanonicalStep
from consensus.validation import accuracy_floor, miner_accuracy_failure, miner_requirements_ok
from consensus.weights import State, weights_hash


@dataclass
class Found:
    nonces: tuple[int, ...]   # advance steps, then the winning step
    state: State              # W', the block's post-state
    acc_after: Accuracy
    timestamp_ms: int         # the timestamp R was drawn for (its redraw epoch)
    attempts: int
    seconds: float

    @property
    def state_hash(self) -> str:
        return weights_hash(self.state)


@dataclass
class Progress:
    attempts: int = 0
    r_hits: int = 0                 # R met with the miner's margin: the accuracy check ran
    acc_floor_failed: int = 0       # ... and W' was below the parent's floor (counting borderline as wrong)
    acc_borderline_failed: int = 0  # ... and more borderline predictions than the claim tolerance
    restarts: int = 0               # trajectories abandoned at W_J for the parent's state
    search_cpu_s: float = 0.0       # process CPU seconds spent judging candidates (bench mine's cost per candidate)
    started: float = 0.0

    def rate(self) -> float:
        dt = time.perf_counter() - self.started
        return self.attempts / dt if dt > 0 else 0.0

    COUNTERS = ("attempts", "r_hits", "acc_floor_failed", "acc_borderline_failed", "restarts")

    def snapshot(self) -> "Progress":
        return dataclasses.replace(self)

    def since(self, earlier: "Progress") -> dict[str, int]:
        """Each counter's growth since ``earlier`` (a ``snapshot``)."""
        return {c: getattr(self, c) - getattr(earlier, c) for c in self.COUNTERS}


@dataclass
class Job:
    """One block search: parent, k, the miner key the batches are bound to, and the clock."""
    parent: BlockHeader
    k: int
    miner: str                                  # public key hex
    mtp_ms: int                                 # a timestamp must be above this
    now_ms: Callable[[], int] = field(default=lambda: int(time.time() * 1000))

    def timestamp(self) -> int:
        """Now, but after the median time past and (v4) after the parent."""
        return max(self.now_ms(), self.mtp_ms + 1, self.parent.timestamp_ms + 1)

    def epoch(self, spec: ChainSpec, ts: int) -> int:
        """The redraw epoch of a block stamped ``ts``: its batches and R are this epoch's."""
        return redraw_epoch(spec, self.parent.timestamp_ms, ts)


def make_job(spec: ChainSpec, parent: BlockHeader, k: int, miner: str, view,
             now_ms: Callable[[], int] | None = None) -> Job:
    job = Job(parent, k, miner, median_time_past(spec, parent, view))
    if now_ms is not None:
        job.now_ms = now_ms
    return job


class ReferenceMiner:
    """``min_advance``: advance steps a block takes before a hit may be published (0: publish the
    first hit; ``make_miner`` fills the spec's J, docs/mining.md "advance steps first")."""

    def __init__(self, spec: ChainSpec, replayer: CanonicalStep, seed: int | None = None, min_advance: int = 0):
        self.spec = spec
        self.replayer = replayer
        self.rng = random.Random(seed)
        self.progress = Progress(started=time.perf_counter())
        self.min_advance = min(min_advance, spec.proof.max_advance_steps)

    def random_nonce(self) -> int:
        return self.rng.getrandbits(64)

    def batch(self, job: Job, epoch: int, nonce: int) -> tuple[int, ...]:
        return derive_batch(self.spec, job.parent.hash, job.miner, epoch, nonce)

    def requirements(self, job: Job, ts: int):
        return requirements_for(self.spec, job.parent, ts, job.k, self.replayer.r_space)

    def below_floor(self, job: Job) -> bool:
        """The loaded W is so far below the parent's accuracy that one more step will not do."""
        acc = self.replayer.accuracy()
        floor = accuracy_floor(self.spec, job.parent, job.timestamp())
        return acc.correct + self.spec.evaluation.claim_tolerance < floor

    def accept(self, job: Job, nonces: list[int], ts: int, attempts: int, t0: float) -> Found | None:
        """The loaded model holds a candidate W' whose step met R: a block if the accuracy floor holds."""
        self.progress.r_hits += 1
        acc = self.replayer.accuracy()
        why = miner_accuracy_failure(acc, job.parent, self.spec, ts)
        if why is not None:
            if why == "borderline":
                self.progress.acc_borderline_failed += 1
            else:
                self.progress.acc_floor_failed += 1
            return None
        return Found(tuple(nonces), self.replayer.state(), acc, ts, attempts, time.perf_counter() - t0)

    def mine(self, job: Job, parent_state: State, *, should_stop: Callable[[], bool] = lambda: False,
             max_attempts: int | None = None) -> Found | None:
        r, J = self.replayer, self.spec.proof.max_advance_steps
        path: list[int] = []
        r.load(parent_state)
        w_j = parent_state
        t0, attempts, epoch, reqs = time.perf_counter(), 0, None, ()
        while not should_stop() and (max_attempts is None or attempts < max_attempts):
            ts = job.timestamp()
            if job.epoch(self.spec, ts) != epoch:
                if epoch is not None:           # a new epoch: new batches, so the path so far is not this epoch's
                    path, w_j = self.new_epoch(parent_state)
                epoch, reqs = job.epoch(self.spec, ts), self.requirements(job, ts)
            nonce = self.random_nonce()
            c0 = time.process_time()
            before = r.values(reqs)
            r.step(self.batch(job, epoch, nonce))
            after = r.values(reqs)
            self.progress.search_cpu_s += time.process_time() - c0
            attempts += 1
            self.progress.attempts += 1
            if len(path) >= self.min_advance and miner_requirements_ok(before, after, reqs, self.spec):
                found = self.accept(job, path + [nonce], ts, attempts, t0)
                if found is not None:
                    return found
            if len(path) < J:
                path.append(nonce)                    # the failed step trains: an advance step
                path, w_j = self.after_advance(job, path, parent_state, w_j)
            else:
                r.load(w_j)
        return None

    def new_epoch(self, parent_state: State) -> tuple[list[int], State]:
        """A redraw epoch began: every batch of a block is its epoch's (v4), so the advance steps taken so
        far cannot be part of this epoch's block; start again from the parent's state."""
        self.progress.restarts += 1
        self.replayer.load(parent_state)
        return [], parent_state

    def after_advance(self, job: Job, path: list[int], parent_state: State, w_j: State) -> tuple[list[int], State]:
        """The path and the state later attempts start from: the parent's state when W_J has fallen too
        far below the floor to win (a dead trajectory: start another); a copy of the loaded model only
        where the loop will reload it (``returns_to(j)``), else the previous one unchanged."""
        if len(path) == self.spec.proof.max_advance_steps and self.below_floor(job):
            self.progress.restarts += 1
            self.replayer.load(parent_state)
            return [], parent_state
        return path, self.replayer.state() if self.returns_to(len(path)) else w_j

    def returns_to(self, j: int) -> bool:
        """Attempts restart from W_j: here only from W_J (before it, a failed step trains on)."""
        return j == self.spec.proof.max_advance_steps
