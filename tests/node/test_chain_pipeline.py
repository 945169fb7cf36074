"""Chain.submit on the one pipeline, in-process on copies of the template chain (real SQLite):
verdicts as ``Verdict`` values, the stage-timing hook, the work-checked hook of fast relay (the block
served as ``validating`` meanwhile), who is at fault for an invalid block, orphans held as Blocks."""
from __future__ import annotations

import json
import time
from contextlib import contextmanager

import pytest

from consensus.block import Block
from consensus.difficulty import work
from consensus.errors import Verdict
from node.chain import VALIDATING, Held

from .test_proof_cache import open_copy, sibling


@pytest.fixture
def side(smith, tmp_path):
    s = smith.fork(tmp_path / "side", seed=23)
    yield s
    s.chain.store.close()


@pytest.fixture
def chain(smith, tmp_path):
    c = open_copy(smith, tmp_path / "node", clock=lambda: time.time() + 3600)
    yield c
    c.store.close()


def test_verdicts_are_enum_values_with_the_old_wire_strings(chain, side):
    built = side.next_block()
    out = chain.submit(Block(built.header, built.records))
    assert out.status is Verdict.ACCEPTED and out.status == "accepted" and json.dumps(out.status) == '"accepted"'
    again = chain.submit(Block(built.header, built.records))
    assert again.status is Verdict.DUPLICATE and again.code == "duplicate"       # errors.Duplicate, raised
    assert chain.submit_header(built.header).status is Verdict.DUPLICATE
    assert {v.value for v in Verdict} == {"accepted", "header-ok", "orphan", "duplicate", "ignored", "invalid",
                                          "bad-body"}


def test_stage_timer_hook_sees_every_stage_in_order(chain, side):
    seen = []

    @contextmanager
    def timer(stage):
        seen.append(stage)
        yield

    chain.stage_timer = timer
    built = side.next_block()
    assert chain.submit(Block(built.header, built.records)).status == Verdict.ACCEPTED
    assert seen == ["header", "records", "load_state", "replay", "state_hash", "accuracy", "store"]


def test_work_checked_hook_runs_before_accuracy_and_the_block_is_served_meanwhile(chain, side):
    built = side.next_block()
    parent = chain.store.get(built.header.parent)
    during = []

    def hook(block):
        served = chain.in_flight(block.hash)
        during.append((served.status, served.cumulative_work, chain.store.get(block.hash), served.records))

    out = chain.submit(Block(built.header, built.records), on_work_checked=hook)
    assert out.status == Verdict.ACCEPTED
    assert during == [(VALIDATING, parent.cumulative_work + work(built.header.difficulty), None, built.records)]
    assert chain.in_flight(built.header.hash) is None and chain.relaying == {}


def test_a_block_failing_only_accuracy_was_relayed_and_its_sender_is_not_at_fault(chain, side):
    built = side.next_block()
    assert chain.submit(Block(built.header, built.records)).ok
    relayed = []
    tol = chain.spec.evaluation.claim_tolerance
    wrong_claim = sibling(side, built.header, 1, acc_after=built.header.acc_after + tol + 1)
    out = chain.submit(Block(wrong_claim), "http://relay.invalid:1", on_work_checked=relayed.append)
    assert (out.status, out.code, out.stage) == (Verdict.INVALID, "bad-accuracy-claim", "accuracy")
    assert not out.sender_at_fault and [b.hash for b in relayed] == [wrong_claim.hash]
    assert chain.relaying == {}

    wrong_state = sibling(side, built.header, 2, state_hash="55" * 32)
    out = chain.submit(Block(wrong_state), "http://liar.invalid:1", on_work_checked=relayed.append)
    assert (out.status, out.code, out.stage) == (Verdict.INVALID, "state-mismatch", "replay")
    assert out.sender_at_fault and len(relayed) == 1                 # never relayed


def test_orphans_are_held_as_blocks_and_connect(chain, side):
    a = side.next_block(submit=True)
    b = side.next_block(submit=True)
    out = chain.submit(Block(b.header, b.records), "http://peer.invalid:1")
    assert (out.status, out.code) == (Verdict.ORPHAN, "unknown-parent")
    assert chain.orphans[b.header.hash] == Held(Block(b.header, b.records), "http://peer.invalid:1")
    assert chain.missing_orphan_parents() == [a.header.hash]
    out = chain.submit(Block(a.header, a.records))
    assert out.status == Verdict.ACCEPTED and out.connected == [b.header.hash] and not chain.orphans


def test_a_block_on_a_header_only_parent_waits_for_it(chain, side):
    """Headers-first: the parent passed the header rules only. Its child passes header and records but
    cannot be replayed (no parent state): held as an orphan (parent-not-validated), stored header-only,
    and connected once the parent's block is validated."""
    a = side.next_block(submit=True)
    b = side.next_block(submit=True)
    assert chain.submit_header(a.header, "http://peer.invalid:1").status is Verdict.HEADER_OK
    replays = chain.replays
    out = chain.submit(Block(b.header, b.records), "http://peer.invalid:1")
    assert (out.status, out.code) == (Verdict.ORPHAN, "parent-not-validated") and chain.replays == replays
    assert chain.store.status(b.header.hash) == "header-only" and b.header.hash in chain.orphans
    out = chain.submit(Block(a.header, a.records))
    assert out.status is Verdict.ACCEPTED and out.connected == [b.header.hash]
    assert chain.tip().hash == b.header.hash and chain.replays == replays + 2


def test_a_replay_gives_way_between_steps_and_the_block_is_judged_when_it_comes_again(chain, side):
    """node/preemption.py: ``give_way()`` is asked before each replayed step; once true the replay stops,
    nothing of the block is kept (not even header-only), the outcome is ignored ``busy``, and the same block
    sent again is judged in full. A block that never gives way is accepted as before."""
    built = side.next_block()
    block = Block(built.header, built.records)
    tip, replays = chain.tip().hash, chain.replays
    asked = []

    def after_two_steps() -> bool:
        asked.append(1)
        return len(asked) > 2

    out = chain.submit(block, "203.0.113.7", give_way=after_two_steps)
    assert (out.status, out.code) == (Verdict.IGNORED, "busy"), out
    assert "after 2 step(s)" in out.detail and len(asked) == 3
    assert chain.gave_way == 1 and chain.replays == replays + 1
    assert chain.store.status(block.hash) is None and chain.tip().hash == tip and not chain.orphans
    assert chain.replayer.give_way is None                         # the next caller replays unhindered
    assert chain.submit(block, "203.0.113.7", give_way=lambda: False).status == Verdict.ACCEPTED
    assert chain.tip().hash == block.hash and chain.gave_way == 1
