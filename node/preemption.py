"""A stranger's replay gives way to a known sender's block, between two training steps (issue 19).

A junk block (a fresh key, a valid signature, random nonces) costs its sender one signature and a
validator J+1 canonical steps before R fails. ``LaneQueue`` (node/admission.py) serves senders with a
record first, but a block of a known peer that arrives while a stranger's replay runs waited for the
whole replay (3.0x its quiet latency on tiny under a 32-sender flood). With ``YieldingStep`` as the
chain's canonical step, a replay for a stranger checks before each step whether a known sender's block
is waiting, and if so stops with ``GaveWay``: nothing of the stranger's block is stored or judged, its
sender is answered 503 ``busy`` (send it again), and the known block waits for at most one step.

Policy, not consensus: the steps that do run are the canonical ones, unchanged; a block that gave way
is judged in full when it comes again.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator, Sequence

from consensus.training import CanonicalStep

BUSY = "busy"      # the reason code a block that gave way is answered with (the lane refusals' code)


class GaveWay(Exception):
    """A replay stopped between two steps because ``give_way()`` said so: the block was not judged."""

    def __init__(self, steps_done: int):
        super().__init__(f"gave way to a block from a known sender after {steps_done} step(s); send it again")
        self.steps_done = steps_done


class YieldingStep:
    """The chain's canonical step: ``CanonicalStep`` by delegation, whose ``step`` first asks
    ``give_way`` (set by the caller for one replay, None otherwise) and raises ``GaveWay`` on yes."""

    def __init__(self, inner: CanonicalStep):
        self._inner = inner
        self.give_way: Callable[[], bool] | None = None
        self.steps_done = 0             # steps since give_way was set (what a GaveWay reports)

    def step(self, indices: Sequence[int]) -> None:
        if self.give_way is not None:
            if self.give_way():
                raise GaveWay(self.steps_done)
            self.steps_done += 1
        self._inner.step(indices)

    @contextmanager
    def yielding_to(self, give_way: Callable[[], bool] | None) -> Iterator["YieldingStep"]:
        """``with step.yielding_to(fn):`` -- a replay that gives way when ``fn()`` is true (None: never);
        ``steps_done`` counts its steps and stays readable after the block."""
        self.give_way, self.steps_done = give_way, 0
        try:
            yield self
        finally:
            self.give_way = None

    def __getattr__(self, name: str):
        return getattr(self._inner, name)

