"""The chain's proof cache and its kept post-states, in-process on copies of the template chain.

* A proof is replayed once per (parent state, R, miner, nonces): a re-signed sibling of an
  already validated proof (same nonces and post-state, a new timestamp in the same redraw
  epoch, other records) is judged from the cache -- accepted, or rejected for a claim that
  does not match -- and ``Chain.replays`` does not grow. A sibling in a later redraw epoch
  faces another R and is replayed.
* A block is validated from its parent's post-state: a child of a block whose post-state
  this node has pruned is ignored (``state-unavailable``), not judged, not stored.
"""
from __future__ import annotations

import shutil
from dataclasses import replace

import pytest

from consensus.ticket import sign_with_ticket
from consensus.block import Block
from consensus.proof import redraw_epoch
from node.chain import Chain

from .conftest import TEMPLATE_BLOCKS, certificate


@pytest.fixture
def side(smith, tmp_path):
    s = smith.fork(tmp_path / "side", seed=21)
    yield s
    s.chain.store.close()


def template_clock(smith, ahead_s: float = 3600):
    """A node clock ``ahead_s`` after the template's tip, whatever the wall clock says (blocks stamped
    up to that far ahead of the tip are not from the future)."""
    now = smith.chain.tip().header.timestamp_ms / 1000 + ahead_s
    return lambda: now


def open_copy(smith, dest, **kw) -> Chain:
    """A chain on a copy of the template's datadir, on ``template_clock`` unless ``clock`` is given."""
    smith.chain.store.engine.dispose()
    shutil.copytree(smith.datadir, dest, ignore=shutil.ignore_patterns("*.log"))
    kw.setdefault("clock", template_clock(smith))
    return Chain(smith.spec, dest, smith.chain.dataset, **kw)


@pytest.fixture
def chain(smith, tmp_path):
    c = open_copy(smith, tmp_path / "node")         # template_clock: siblings may be stamped ahead
    yield c
    c.store.close()


def sibling(side, header, dt_ms: int, **changes):
    return sign_with_ticket(side.spec, replace(header, timestamp_ms=header.timestamp_ms + dt_ms, **changes), side.key)


def test_resigned_sibling_is_judged_without_a_second_replay(chain, side):
    built = side.next_block()
    header, parent = built.header, chain.store.get(built.header.parent).header
    out = chain.submit(Block(header, built.records))
    assert out.status == "accepted" and out.new_tip and chain.replays == 1

    # same proof, new timestamp (same redraw epoch) and another record set: valid, no replay
    dt = 1
    assert redraw_epoch(chain.spec, parent.timestamp_ms, header.timestamp_ms + dt) == \
        redraw_epoch(chain.spec, parent.timestamp_ms, header.timestamp_ms)
    cert = certificate(7)
    from consensus.block import records_root
    twin = sibling(side, header, dt, records_root=records_root([cert]))
    out = chain.submit(Block(twin, [cert.body]))
    assert (out.status, out.new_tip) == ("accepted", False), out      # a valid fork block, seen second
    assert chain.store.get(twin.hash).status == "valid" and chain.replays == 1

    # same proof, claims that do not match what the replay measured: rejected from the cache
    bad_state = sibling(side, header, 2, state_hash="44" * 32)
    out = chain.submit(Block(bad_state, []))
    assert (out.status, out.code) == ("invalid", "state-mismatch"), out
    bad_claim = sibling(side, header, 3, acc_after=min(header.acc_after + 40, chain.spec.evaluation.size))
    out = chain.submit(Block(bad_claim, []))
    assert (out.status, out.code) == ("invalid", "bad-accuracy-claim"), out
    assert chain.replays == 1
    assert chain.tip().hash == header.hash

    # a later redraw epoch draws another R: the same nonces must be replayed against it
    later = sibling(side, header, chain.spec.proof.redraw_interval_ms)
    assert redraw_epoch(chain.spec, parent.timestamp_ms, later.timestamp_ms) > \
        redraw_epoch(chain.spec, parent.timestamp_ms, header.timestamp_ms)
    out = chain.submit(Block(later, []))
    assert chain.replays == 2, out
    assert out.status in ("accepted", "invalid") and out.code in ("", "requirements-not-met"), out


def test_cache_does_not_outlive_a_restart_but_the_verdicts_do(smith, side, tmp_path):
    """The cache is memory only: after a restart a new sibling is replayed once more (and valid),
    while the blocks already judged answer `duplicate` without any replay."""
    built = side.next_block()
    first = open_copy(smith, tmp_path / "node")
    assert first.submit(Block(built.header, built.records)).status == "accepted" and first.replays == 1
    first.store.close()
    again = Chain(smith.spec, tmp_path / "node", smith.chain.dataset, clock=template_clock(smith))
    try:
        assert again.submit(Block(built.header, built.records)).status == "duplicate" and again.replays == 0
        out = again.submit(Block(sibling(side, built.header, 1), []))
        assert out.status == "accepted" and again.replays == 1
    finally:
        again.store.close()


def test_child_of_a_pruned_parent_waits_until_its_branch_is_heavier(smith, side, tmp_path):
    """keep_weights=2: once the tip moves, the post-states of blocks 1..tip-3 are deleted. A valid block
    on block 2 is a branch lighter than the tip: rebuilding block 2's state (a replay from genesis) would
    be work for a fork that cannot win, so the block waits header-only, unjudged (rebuild-deferred), the
    tip unchanged and nothing replayed; tests/adversarial/test_deep_fork.py judges such a branch once it
    is heavier. The archival template chain, which still has block 2's state, judges it at once."""
    from tests.conftest import mine_block

    pruned = open_copy(smith, tmp_path / "pruned", keep_weights=2)
    try:
        nxt = side.next_block()
        assert pruned.submit(Block(nxt.header, nxt.records)).new_tip          # tip TEMPLATE + 1: pruning runs
        b2 = smith.chain.store.get(smith.chain.store.hash_at(2)).header
        assert not pruned.store.weights.has(b2.state_hash)
        assert pruned.store.weights.has(pruned.tip().header.state_hash)

        fork = mine_block(smith.spec, smith.chain.dataset, b2, smith.chain.load_weights(b2.state_hash),
                          smith.chain.view, side.key, seed=4)
        tip, best = pruned.tip().hash, pruned.store.best_hashes()
        out = pruned.submit(Block(fork.header, fork.records), "http://peer.invalid:1")
        assert (out.status, out.code, out.new_tip) == ("orphan", "rebuild-deferred", False), out
        assert pruned.store.status(fork.header.hash) == "header-only"
        assert (pruned.tip().hash, pruned.store.best_hashes()) == (tip, best)
        assert pruned.replays == 1                                      # `nxt` only
        assert not pruned.store.weights.has(b2.state_hash)
    finally:
        pruned.store.close()
    archival = open_copy(smith, tmp_path / "archival", archival=True)
    try:
        out = archival.submit(Block(fork.header, fork.records))
        assert out.status == "accepted" and not out.new_tip, out
        assert archival.tip().height == TEMPLATE_BLOCKS
    finally:
        archival.store.close()
