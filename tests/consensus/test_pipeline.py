"""The block as one value (consensus.block.Block) and the pipeline's stages (validate_block runs them):
their order, the ``Stage`` each failure is tagged with, the proof memo. The node's own run of the
stages (node/chain.py: the parent's state supplied, the work-checked event) is in
tests/node/test_chain_pipeline.py."""
from __future__ import annotations

import pytest

from consensus import errors
from consensus.errors import Stage
from consensus.block import Block, records_root
from consensus.hashing import canonical_json, merkle_root
from consensus.validation import STAGES, ProofMemo, validate_block
from tests.conftest import MemoryView
from tests.consensus.util import IGNORED, INVALID, expect, resign


class Recorder:
    """The stage timer: which stages ran, in order."""

    def __init__(self):
        self.events: list[str] = []

    def __call__(self, stage: str):
        recorder = self

        class _Stage:
            def __enter__(self):
                recorder.events.append(stage)

            def __exit__(self, *exc):
                return False
        return _Stage()


def run(spec, block, replayer, parent_state, rec=None, memo=None, genesis=None):
    rec = rec or Recorder()
    view = MemoryView([genesis])
    return validate_block(block, spec, view, block.header.timestamp_ms + 1000, replayer=replayer,
                          parent_state=parent_state, memo=memo, timer=rec)


def test_stages_run_cheapest_first(tiny_spec, tiny_block, tiny_genesis, replayer):
    rec = Recorder()
    block = Block(tiny_block.header, tiny_block.records)
    out = run(tiny_spec, block, replayer(), tiny_block.parent_state, rec, genesis=tiny_genesis)
    assert rec.events == ["header", "records", "replay", "state_hash", "accuracy"]
    assert set(rec.events) | {"load_state"} == set(STAGES)          # the node times loading the parent's state
    assert out.replayed and out.after.correct == tiny_block.header.acc_after and out.parent == tiny_genesis


def test_a_failed_claim_is_judged_in_the_accuracy_stage(tiny_spec, tiny_block, tiny_genesis, replayer, miner_key):
    """A wrong accuracy claim keeps R and the post-state: the work is checked and the block fails in the
    accuracy stage, which is what spares its relays a ban (p2p/punishment.py)."""
    rec = Recorder()
    h = tiny_block.header
    bad = Block(resign(h, miner_key, tiny_spec, acc_after=h.acc_after + tiny_spec.evaluation.claim_tolerance + 1))
    exc = expect(errors.BadAccuracyClaim, INVALID, run, tiny_spec, bad, replayer(), tiny_block.parent_state, rec,
                 genesis=tiny_genesis)
    assert exc.stage is Stage.ACCURACY and rec.events[-2:] == ["state_hash", "accuracy"]


def test_a_failed_work_is_judged_in_the_replay_stage(tiny_spec, tiny_block, tiny_genesis, replayer, miner_key):
    rec = Recorder()
    bad = Block(resign(tiny_block.header, miner_key, tiny_spec, state_hash="33" * 32))
    exc = expect(errors.StateMismatch, INVALID, run, tiny_spec, bad, replayer(), tiny_block.parent_state, rec,
                 genesis=tiny_genesis)
    assert exc.stage is Stage.REPLAY and "accuracy" not in rec.events


def test_should_stop_stops_the_replay_between_steps(tiny_spec, tiny_block, tiny_genesis, replayer):
    """``should_stop()`` is asked before each step; true raises ReplayStopped (not judged: an Ignored)."""
    asked = []

    def after_one() -> bool:
        asked.append(1)
        return len(asked) > 1

    block = Block(tiny_block.header, tiny_block.records)
    exc = expect(errors.ReplayStopped, IGNORED, validate_block, block, tiny_spec, MemoryView([tiny_genesis]),
                 block.header.timestamp_ms + 1000, replayer=replayer(), parent_state=tiny_block.parent_state,
                 should_stop=after_one)
    assert exc.steps_done == 1 and exc.stage is Stage.REPLAY


def test_header_failure_touches_no_records_and_no_tensor(tiny_spec, tiny_block, tiny_genesis, replayer, miner_key):
    rec = Recorder()
    bad = Block(resign(tiny_block.header, miner_key, tiny_spec, height=5), [{"not": "a record"}])
    exc = expect(errors.BadHeight, INVALID, run, tiny_spec, bad, replayer(), tiny_block.parent_state, rec,
                 genesis=tiny_genesis)
    assert exc.stage is Stage.HEADER and rec.events == ["header"]


def test_committed_junk_records_are_an_invalid_block_not_a_bad_body(tiny_spec, tiny_block, tiny_genesis, replayer,
                                                                   miner_key):
    """Records that match the header's root are the block's own: if they do not parse, the block is
    invalid. The wire constructor checks the commitment first and parses nothing."""
    junk = [{"type": "junk", "x": 1}]
    root = merkle_root(canonical_json(j) for j in junk)
    header = resign(tiny_block.header, miner_key, tiny_spec, records_root=root)
    block = Block.from_wire(header, junk)          # the commitment holds: no error here
    rec = Recorder()
    exc = expect(errors.BadRecord, INVALID, run, tiny_spec, block, replayer(), tiny_block.parent_state, rec,
                 genesis=tiny_genesis)
    assert exc.stage is Stage.RECORDS and rec.events == ["header", "records"]


@pytest.mark.parametrize("items", [[{"type": "junk"}], {"type": "junk"}, "records", [float("nan")]])
def test_records_not_committed_are_a_bad_body(tiny_block, items):
    """Before any parsing: other records, not a list, no canonical encoding -> a bad body."""
    expect(errors.RecordsMismatch, errors.BadBody, Block.from_wire, tiny_block.header, items)


def test_block_values(tiny_block):
    b = Block.from_wire(tiny_block.header, list(tiny_block.records))
    assert b.hash == tiny_block.header.hash and b.records_json == tuple(tiny_block.records)
    assert b.wire_records == list(tiny_block.records) and b.records == ()
    assert Block.of(tiny_block.header, ()) == Block(tiny_block.header, [])
    assert records_root(b.records) == tiny_block.header.records_root
    with pytest.raises(AttributeError):
        b.header = None                              # frozen


def test_proof_memo_skips_the_replay_of_a_resigned_sibling(tiny_spec, tiny_block, tiny_genesis, replayer,
                                                           miner_key):
    memo = ProofMemo(4)
    first = run(tiny_spec, Block(tiny_block.header), replayer(), tiny_block.parent_state, memo=memo,
                genesis=tiny_genesis)
    memo.put(first.proof_key, tiny_block.header.state_hash, first.after)
    sib = Block(resign(tiny_block.header, miner_key, tiny_spec, timestamp_ms=tiny_block.header.timestamp_ms + 1))
    rec = Recorder()
    no_state = {}          # a memoised proof never reads the parent's state
    out = validate_block(sib, tiny_spec, MemoryView([tiny_genesis]), sib.header.timestamp_ms + 1000,
                         replayer=replayer(), parent_state=no_state, memo=memo, timer=rec)
    assert not out.replayed and out.after == first.after
    assert rec.events == ["header", "records", "replay", "accuracy"]
    # a sibling claiming another post-state for the same proof is caught without a replay
    liar = Block(resign(tiny_block.header, miner_key, tiny_spec, timestamp_ms=tiny_block.header.timestamp_ms + 2,
                        state_hash="44" * 32))
    exc = expect(errors.StateMismatch, INVALID, validate_block, liar, tiny_spec, MemoryView([tiny_genesis]),
                 liar.header.timestamp_ms + 1000, replayer=replayer(), parent_state=no_state, memo=memo)
    assert exc.stage is Stage.REPLAY
