"""Chain.submit on the one pipeline, in-process on copies of the template chain (real SQLite):
verdicts as ``Verdict`` values, the stage-timing hook, the work-checked event of fast relay (the block
served as ``validating`` meanwhile), who is punished for an invalid block (p2p/punishment.py),
orphans held as Blocks, a replay stopped by ``should_stop``, the node's own block without a replay."""
from __future__ import annotations

import json
from contextlib import contextmanager

import pytest

from consensus.block import Block
from consensus.difficulty import work
from consensus.errors import BlockStatus, Stage, Verdict
from node.orphans import Held
from p2p.punishment import Punishment, Sender, punishment

from .test_proof_cache import open_copy, sibling


@pytest.fixture
def side(smith, tmp_path):
    s = smith.fork(tmp_path / "side", seed=23)
    yield s
    s.chain.store.close()


@pytest.fixture
def chain(smith, tmp_path):
    c = open_copy(smith, tmp_path / "node")
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


def test_work_checked_event_comes_before_accuracy_and_the_block_is_served_meanwhile(chain, side):
    built = side.next_block()
    parent = chain.store.get(built.header.parent)
    during = []
    seen = []

    @contextmanager
    def timer(stage):
        seen.append(stage)
        yield

    def listener(block, peer):
        served = chain.in_flight(block.hash)
        seen.append("work-checked")
        during.append((served.status, served.cumulative_work, chain.store.get(block.hash), served.records, peer))

    chain.stage_timer = timer
    chain.work_checked_listeners.append(listener)
    out = chain.submit(Block(built.header, built.records), "http://peer.invalid:1")
    assert out.status == Verdict.ACCEPTED and out.relayed_early
    assert during == [(BlockStatus.VALIDATING, parent.cumulative_work + work(built.header.difficulty), None,
                       built.records, "http://peer.invalid:1")]
    assert seen.index("work-checked") == seen.index("state_hash") + 1 == seen.index("accuracy") - 1
    assert chain.in_flight(built.header.hash) is None and chain.relaying == {}


def test_a_block_relayed_early_is_served_until_its_verdict_is_stored(chain, side):
    """Never in neither: from the work-checked event to the stored verdict, ``GET /blocks/{hash}`` finds the
    block (``in_flight``, then the store). It was dropped from ``relaying`` before the store step, and a
    peer that fetched the announced block in that window got a 404 and waited for its next poll
    (bench propagate: 60 s for a hop of 0.1 s)."""
    built = side.next_block()
    h, served = built.header.hash, []

    def findable() -> bool:
        return (chain.in_flight(h) or chain.store.get(h)) is not None

    @contextmanager
    def timer(stage):
        if stage in ("accuracy", "store"):
            served.append((stage, "enter", findable()))
        yield
        if stage in ("accuracy", "store"):
            served.append((stage, "exit", findable()))

    chain.stage_timer = timer
    chain.work_checked_listeners.append(lambda block, peer: None)
    out = chain.submit(Block(built.header, built.records), "http://peer.invalid:1")
    assert out.status == Verdict.ACCEPTED and out.relayed_early
    assert served == [(s, e, True) for s in ("accuracy", "store") for e in ("enter", "exit")]
    assert chain.in_flight(h) is None and chain.store.get(h).status == BlockStatus.VALID and chain.relaying == {}


def test_without_listeners_nothing_is_served_early(chain, side):
    built = side.next_block()
    out = chain.submit(Block(built.header, built.records))
    assert out.status == Verdict.ACCEPTED and not out.relayed_early


def test_the_nodes_own_block_is_the_tip_at_once_without_a_replay(chain, side):
    """submit_mined: the miner's W' and acc(W') stand in for the replay and the evaluation (every rule
    that costs no step still runs); a W' that is not the committed one is refused like a replay's."""
    built = side.next_block()
    replays, seen = chain.replays, []

    @contextmanager
    def timer(stage):
        seen.append(stage)
        yield

    chain.stage_timer = timer
    after = side.chain.replayer.accuracy(built.state)
    wrong = {k: v.clone() for k, v in built.state.items()}
    next(iter(wrong.values())).view(-1)[0] += 1.0
    out = chain.submit_mined(Block(built.header, built.records), wrong, after)
    assert (out.status, out.code, out.stage) == (Verdict.INVALID, "state-mismatch", Stage.REPLAY)
    chain.store.delete_oldest_invalid(1)
    seen.clear()
    out = chain.submit_mined(Block(built.header, built.records), built.state, after)
    assert out.status == Verdict.ACCEPTED and out.detail == "mined here" and chain.tip().hash == built.header.hash
    assert chain.replays == replays and "replay" not in seen and "load_state" not in seen
    assert chain.load_weights(built.header.state_hash) is not None


def test_a_block_failing_only_accuracy_was_relayed_and_its_sender_is_not_punished(chain, side):
    built = side.next_block()
    assert chain.submit(Block(built.header, built.records)).ok
    relayed = []
    chain.work_checked_listeners.append(lambda block, peer: relayed.append(block))
    tol = chain.spec.evaluation.claim_tolerance
    wrong_claim = sibling(side, built.header, 1, acc_after=built.header.acc_after + tol + 1)
    out = chain.submit(Block(wrong_claim), "http://relay.invalid:1")
    assert (out.status, out.code, out.stage) == (Verdict.INVALID, "bad-accuracy-claim", Stage.ACCURACY)
    assert punishment(out.status, out.stage, Sender.REMOTE) is Punishment.NONE
    assert [b.hash for b in relayed] == [wrong_claim.hash] and chain.relaying == {}

    wrong_state = sibling(side, built.header, 2, state_hash="55" * 32)
    out = chain.submit(Block(wrong_state), "http://liar.invalid:1")
    assert (out.status, out.code, out.stage) == (Verdict.INVALID, "state-mismatch", Stage.REPLAY)
    assert punishment(out.status, out.stage, Sender.REMOTE) is Punishment.BAN
    assert punishment(out.status, out.stage, Sender.TRUSTED) is Punishment.NONE
    assert len(relayed) == 1                 # never relayed


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
    """``should_stop()`` is asked before each replayed step; once true the replay stops,
    nothing of the block is kept (not even header-only), the outcome is ignored ``busy``, and the same block
    sent again is judged in full. A block that never gives way is accepted as before."""
    built = side.next_block()
    block = Block(built.header, built.records)
    tip, replays = chain.tip().hash, chain.replays
    asked = []

    def after_two_steps() -> bool:
        asked.append(1)
        return len(asked) > 2

    out = chain.submit(block, "203.0.113.7", should_stop=after_two_steps)
    assert (out.status, out.code) == (Verdict.IGNORED, "busy"), out
    assert "after 2 step(s)" in out.detail and len(asked) == 3
    assert chain.gave_way == 1 and chain.replays == replays + 1
    assert chain.store.status(block.hash) is None and chain.tip().hash == tip and not chain.orphans
    assert chain.submit(block, "203.0.113.7").status == Verdict.ACCEPTED      # the next caller: unhindered
    assert chain.tip().hash == block.hash and chain.gave_way == 1
