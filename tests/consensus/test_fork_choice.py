"""Fork choice through node.chain.Chain: most cumulative work wins, ties go to the first seen,
a reorg rewrites the best-chain index; orphans connect when their parent arrives.

The blocks are real (reference miner, k = 1 chain so each is a few steps away); under v2 a block is
its header and records, validated from its parent's stored post-state.
"""
from __future__ import annotations

import pytest

from consensus.ticket import sign_with_ticket
from consensus.block import Block, genesis_header
from consensus.difficulty import work
from consensus.training import genesis_state
from consensus.weights import encode_state, weights_hash
from node.chain import Chain

from ..conftest import MemoryView


@pytest.fixture(scope="module")
def blocks(k1_spec, tiny_dataset, block_miner):
    """A and B compete at height 1; C is B's child."""
    g = genesis_header(k1_spec)
    w0 = genesis_state(k1_spec)
    view = MemoryView([g])
    a = block_miner(k1_spec, g, w0, view, seed=1)
    b = block_miner(k1_spec, g, w0, view, seed=2)
    assert a.header.hash != b.header.hash
    view.add(b.header)
    c = block_miner(k1_spec, b.header, b.state, view, seed=3)
    return g, a, b, c


def open_chain(spec, dataset, path) -> Chain:
    def clock():
        return (spec.time.genesis_timestamp_ms + 3_600_000) / 1000   # an hour after genesis

    return Chain(spec, path, dataset, archival=True, clock=clock)


def test_ties_go_to_the_first_seen_and_more_work_reorgs(k1_spec, tiny_dataset, blocks, tmp_path):
    g, a, b, c = blocks
    chain = open_chain(k1_spec, tiny_dataset, tmp_path / "d")
    seen = []
    chain.tip_listeners.append(lambda tip, depth: seen.append((tip.hash, depth)))
    assert chain.tip().hash == g.hash

    out = chain.submit(Block(a.header, a.records))
    assert (out.status, out.new_tip, out.reorg_depth) == ("accepted", True, 0)
    assert chain.tip().hash == a.header.hash

    out = chain.submit(Block(b.header, b.records))                       # same work as A: A stays
    assert (out.status, out.new_tip) == ("accepted", False)
    assert chain.store.get(a.header.hash).cumulative_work == chain.store.get(b.header.hash).cumulative_work \
        == work(g.difficulty) + work(1)
    assert chain.tip().hash == a.header.hash
    assert chain.store.best_hashes() == [g.hash, a.header.hash]
    assert chain.submit(Block(b.header, b.records)).status == "duplicate"
    assert chain.replays == 2                      # A and B each replayed once; the duplicate not at all

    # the tie-break survives a restart (first seen = lower sequence number in the store)
    chain.store.close()
    chain = open_chain(k1_spec, tiny_dataset, tmp_path / "d")
    chain.tip_listeners.append(lambda tip, depth: seen.append((tip.hash, depth)))
    assert chain.tip().hash == a.header.hash

    out = chain.submit(Block(c.header, c.records))                       # B's branch now has more work
    assert (out.status, out.new_tip, out.reorg_depth) == ("accepted", True, 1)
    assert chain.tip().hash == c.header.hash
    assert chain.store.best_hashes() == [g.hash, b.header.hash, c.header.hash]
    assert chain.store.hash_at(1) == b.header.hash
    assert chain.tip().cumulative_work == work(g.difficulty) + 2 * work(1)
    assert seen[-1] == (c.header.hash, 1)
    # the tip model is C's post-state, the one C's header commits to
    tip, model = chain.tip_model()
    assert tip.hash == c.header.hash
    assert weights_hash(model) == c.header.state_hash == weights_hash(c.state)
    assert chain.replays == 1                      # after the restart: C only
    chain.store.close()


def test_orphan_connects_when_its_parent_arrives(k1_spec, tiny_dataset, blocks, tmp_path):
    g, a, b, c = blocks
    chain = open_chain(k1_spec, tiny_dataset, tmp_path / "d")
    assert chain.submit(Block(a.header, a.records)).new_tip
    out = chain.submit(Block(c.header, c.records))
    assert (out.status, out.code) == ("orphan", "unknown-parent")
    assert chain.missing_orphan_parents() == [b.header.hash]
    assert chain.tip().hash == a.header.hash
    out = chain.submit(Block(b.header, b.records))
    assert out.status == "accepted" and out.connected == [c.header.hash]
    assert chain.tip().hash == c.header.hash
    assert chain.store.best_hashes() == [g.hash, b.header.hash, c.header.hash]
    chain.store.close()


def test_invalid_block_never_becomes_tip_and_poisons_descendants(k1_spec, tiny_dataset, blocks, tmp_path, miner_key):
    g, a, b, c = blocks
    chain = open_chain(k1_spec, tiny_dataset, tmp_path / "d")
    bad_b = b.header.__class__.from_dict({**b.header.to_dict(), "acc_after": 0})
    bad_b = sign_with_ticket(k1_spec, bad_b, miner_key)             # a false accuracy claim
    out = chain.submit(Block(bad_b, b.records))
    assert (out.status, out.code) == ("invalid", "bad-accuracy-claim")
    assert chain.tip().hash == g.hash
    # a child of the invalid block is invalid without any replay
    child = sign_with_ticket(k1_spec, c.header.__class__.from_dict({**c.header.to_dict(), "parent": bad_b.hash}),
                             miner_key)
    out = chain.submit(Block(child, c.records))
    assert (out.status, out.code) == ("invalid", "bad-parent")
    assert chain.tip().hash == g.hash
    chain.store.close()


def test_child_of_a_pruned_post_state_is_rebuilt_and_judged(k1_spec, tiny_dataset, blocks, tmp_path):
    """A node that no longer keeps the parent's post-state rebuilds it by replaying the parent from the
    nearest kept ancestor (here: a), checked against its state_hash, and judges the child."""
    g, a, b, c = blocks
    chain = open_chain(k1_spec, tiny_dataset, tmp_path / "d")
    assert chain.submit(Block(b.header, b.records)).status == "accepted"
    chain.store.weights.delete(b.header.state_hash)               # what pruning does to an old state
    out = chain.submit(Block(c.header, c.records))
    assert (out.status, out.code) == ("accepted", ""), out
    assert chain.tip().hash == c.header.hash
    assert chain.store.weights.has(b.header.state_hash)            # within the window: back on disk
    chain.store.close()


def test_child_past_the_rebuild_limit_is_ignored_not_invalid(k1_spec, tiny_dataset, blocks, tmp_path, monkeypatch):
    """Where the rebuild would replay more than REBUILD_LIMIT blocks, the node cannot judge the child:
    state-unavailable, no verdict (the block stays acceptable where the state is kept)."""
    import node.post_states

    g, a, b, c = blocks
    chain = open_chain(k1_spec, tiny_dataset, tmp_path / "d")
    assert chain.submit(Block(b.header, b.records)).status == "accepted"
    chain.store.weights.delete(b.header.state_hash)
    monkeypatch.setattr(node.post_states, "REBUILD_LIMIT", 0)
    out = chain.submit(Block(c.header, c.records))
    assert (out.status, out.code) == ("ignored", "state-unavailable")
    assert chain.store.status(c.header.hash) is None and chain.tip().hash == b.header.hash
    chain.store.weights.put(b.header.state_hash, encode_state(b.state))
    assert chain.submit(Block(c.header, c.records)).status == "accepted"
    assert chain.tip().hash == c.header.hash
    chain.store.close()
