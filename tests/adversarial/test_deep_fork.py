"""deep_fork: a node keeping few post-states follows a heavier fork that branches deeper than its window.

Under v2 the fork's first block was `state-unavailable` (ignored, never judged) and the node stayed on
the lighter chain for good, also when the fork came again. Under v3 the node rebuilds the missing
post-state by replaying the stored headers' nonces from the nearest kept ancestor (genesis at worst),
each step checked against its block's state_hash, then judges the block.
"""
from __future__ import annotations

import pytest

from tests.blocks import BlockSmith
from tests.node.conftest import TEMPLATE_BLOCKS, smith  # noqa: F401 (the template chain fixture)
from tests.node.test_proof_cache import open_copy

pytestmark = pytest.mark.slow      # node processes or long mining: in the full suite, not in `-m "not slow"`

FORK_AT = 1          # the fork branches on block 1
FORK_LEN = TEMPLATE_BLOCKS   # heights 2 .. TEMPLATE_BLOCKS + 1: one block more than the main chain


@pytest.fixture(scope="module")
def fork_blocks(smith, tmp_path_factory):  # noqa: F811
    """A heavier side branch on block 1, mined on an archival copy of the template chain (once per module:
    the blocks are deterministic and every test submits them to a copy of its own)."""
    c = open_copy(smith, tmp_path_factory.mktemp("fork-builder") / "builder", archival=True)
    try:
        parent = c.store.get(c.store.hash_at(FORK_AT)).header
        fork = BlockSmith(smith.spec, c.dataset, smith.key).blocks(FORK_LEN, parent, c.load_weights(parent.state_hash),
                                                                   seed=50, chain=c)
        return [b.block for b in fork]
    finally:
        c.store.close()


def pruned_copy(smith, dest, keep: int = 2):  # noqa: F811
    """A copy of the template chain that keeps ``keep`` post-states (pruned as after a tip change)."""
    node = open_copy(smith, dest, keep_weights=keep)
    node.pruner.after_tip_change(node.store.tip().height)
    return node


def test_a_pruned_node_follows_a_heavier_fork_deeper_than_its_window(smith, fork_blocks, tmp_path):  # noqa: F811
    node = pruned_copy(smith, tmp_path / "pruned")
    try:
        tip_before = node.store.tip()
        assert tip_before.height == TEMPLATE_BLOCKS
        fork_parent = node.store.get(fork_blocks[0].header.parent).header
        assert not node.store.weights.has(fork_parent.state_hash), "the fork's base must lie outside the window"
        replays = node.replays
        outcomes = [node.submit(b, "http://peer.invalid:1") for b in fork_blocks[:-1]]
        replays_while_lighter = node.replays
        outcomes.append(node.submit(fork_blocks[-1], "http://peer.invalid:1"))
        # in order, without headers first: the branch claims less work than the tip until its last block,
        # so its first block waits (no rebuild for a lighter fork) and the rest wait on it ...
        assert [o.code for o in outcomes[:-1]] == ["rebuild-deferred"] + ["parent-not-validated"] * (FORK_LEN - 2)
        assert replays_while_lighter == replays, "a lighter fork cost a replay"
        # ... until the last one makes it heavier: then the whole branch is judged, with one rebuild
        assert outcomes[-1].connected == [b.header.hash for b in fork_blocks], (outcomes[-1].code, outcomes[-1].detail)
        assert all(node.store.status(b.header.hash) == "valid" for b in fork_blocks)
        tip = node.store.tip()
        assert tip.hash == fork_blocks[-1].header.hash and tip.height == TEMPLATE_BLOCKS + 1
        assert tip.cumulative_work > tip_before.cumulative_work
        assert node.store.hash_at(FORK_AT + 1) == fork_blocks[0].header.hash   # reorganised below the window
        # the new best chain's window is on disk (snapshot sync serves it); nothing below the line leaked
        keep = node.pruner.keep_weights
        window = {b.header.state_hash for b in node.store.best_range(tip.height - keep, keep + 1)}
        on_disk = set(node.store.weights.all_hashes())
        assert window <= on_disk
        cutoff = tip.height - keep
        assert not {b.header.state_hash for b in fork_blocks if b.header.height < cutoff} & on_disk
    finally:
        node.store.close()


def test_a_block_whose_ancestor_replays_to_another_state_is_not_rebuilt(smith, tmp_path):  # noqa: F811
    """The rebuild checks every replayed state against its block's commitment: a stored header whose
    nonces do not give its state_hash (a damaged store) stops the rebuild; the block is ignored, not
    judged invalid."""
    import dataclasses

    node = pruned_copy(smith, tmp_path / "pruned")
    try:
        h1 = node.store.get(node.store.hash_at(1)).header
        assert not node.store.weights.has(h1.state_hash)
        fake = dataclasses.replace(h1, nonces=h1.nonces[:-1] + (h1.nonces[-1] ^ 1,))
        assert node.states.rebuild(fake, node.replayer) is None
        assert node.states.rebuild(h1, node.replayer) is not None    # the real header rebuilds
        assert h1.state_hash in node.states.rebuilt                  # and is kept: in memory, it lies below
        assert not node.store.weights.has(h1.state_hash)    # the pruning line (on disk it would leak)
    finally:
        node.store.close()


def test_headers_first_lets_the_first_body_of_a_heavier_deep_fork_be_judged_at_once(smith, fork_blocks, tmp_path):  # noqa: F811
    """Sync stores a fork's headers before its bodies: the heaviest header-only descendant claims more
    work than the tip, so the first body's pruned parent state is rebuilt and the block judged on arrival."""
    node = pruned_copy(smith, tmp_path / "pruned")
    try:
        outs = node.submit_headers([b.header for b in fork_blocks], "http://peer.invalid:1")
        assert all(o.ok for o in outs), [(o.code, o.detail) for o in outs]
        outcomes = [node.submit(b, "http://peer.invalid:1") for b in fork_blocks]
        assert [o.status for o in outcomes] == ["accepted"] * FORK_LEN, [(o.code, o.detail) for o in outcomes]
        assert node.store.tip().hash == fork_blocks[-1].header.hash
    finally:
        node.store.close()


def test_a_block_on_an_old_parent_costs_no_replay(smith, fork_blocks, tmp_path):  # noqa: F811
    """The cheap attack on rebuilding: one signed block on an old valid parent whose state is pruned would
    make the node replay from the nearest kept ancestor (genesis at worst) before its own proof fails. A
    branch lighter than the tip is not worth a rebuild: the block waits (held, header-only), unjudged, its
    sender not at fault, and the node has replayed nothing."""
    node = pruned_copy(smith, tmp_path / "pruned")
    try:
        replays, tip = node.replays, node.store.tip().hash
        out = node.submit(fork_blocks[0], "http://stranger.invalid:1")
        assert (out.status, out.code) == ("orphan", "rebuild-deferred")
        assert out.stage is None                    # not judged: nobody is punished (p2p/punishment.py)
        assert node.replays == replays and not node.states.rebuilt
        assert node.store.status(fork_blocks[0].header.hash) == "header-only"
        assert node.store.tip().hash == tip
    finally:
        node.store.close()
