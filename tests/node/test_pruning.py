"""Pruning on the real store (copies of the template chain, real SQLite and state files).

* Post-states of side-branch blocks deeper than --keep-weights are deleted like the best
  chain's; the block rows stay; the best chain's recent states (which snapshot sync serves) and
  genesis stay. A node restarted with a smaller window catches up.
* Header-only rows: a fork more than the window below the tip goes with the header-only rows
  above it; past the global cap, the least-work branch is trimmed from its top, never its base.
"""
from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from consensus.block import Block
from node.chain import Chain
from node.fork_choice import path_to
from node.store import HEADER_ONLY, VALID
from tests.blocks import BlockSmith, mine_block

from .conftest import TEMPLATE_BLOCKS
from .test_proof_cache import open_copy, template_clock
from tests.chain_spec import TINY_TEST_ARGS

FORK_KEY = Ed25519PrivateKey.from_private_bytes(bytes([41]) * 32)   # mined blocks: the same on every run


@pytest.fixture
def side(smith, tmp_path):
    s = smith.fork(tmp_path / "side", seed=23)
    yield s
    s.chain.store.close()


def ancestors(chain, block_hash: str):
    return [chain.store.get(h).header for h in path_to(chain.store, block_hash)]


def archival_copy_with_a_side_block(smith, dest, key, seed: int):
    """A copy of the template chain (archival) holding one more valid block, at height 2 on block 1
    (a side branch); the block is returned, the store closed."""
    c = open_copy(smith, dest, archival=True)
    try:
        parent = c.store.get(c.store.hash_at(1)).header
        fork = mine_block(smith.spec, c.dataset, parent, c.load_weights(parent.state_hash), c.view, key, seed=seed)
        assert c.submit(Block(fork.header, fork.records)).status == "accepted"
        return fork
    finally:
        c.store.close()


def test_side_branch_states_are_pruned_past_the_window(smith, side, tmp_path):
    T = TEMPLATE_BLOCKS
    c = open_copy(smith, tmp_path / "node", keep_weights=2)
    try:
        parent = c.store.get(c.store.hash_at(T - 1)).header
        fork = mine_block(smith.spec, c.dataset, parent, c.load_weights(parent.state_hash), c.view, side.key,
                          seed=5)
        out = c.submit(Block(fork.header, fork.records), "http://peer.invalid:1")
        assert out.status == "accepted" and not out.new_tip               # a side branch at height T
        assert c.store.weights.has(fork.header.state_hash)
        kept = []
        for i in range(1, 4):
            nb = side.next_block(submit=True)
            assert c.submit(Block(nb.header, nb.records)).new_tip
            kept.append(nb.header.state_hash)
            # the window keeps heights >= tip - 2 = T + i - 2: the side block (height T) goes at i = 3
            assert c.store.weights.has(fork.header.state_hash) == (i <= 2)
        assert not c.store.weights.has(fork.header.state_hash)             # pruned at tip T + 3
        assert c.store.status(fork.header.hash) == VALID                   # the block itself stays
        assert all(c.store.weights.has(s) for s in kept)                  # the window's states
        assert not c.store.weights.has(c.store.get(c.store.hash_at(T)).header.state_hash)
        assert c.store.weights.has(smith.spec.model.genesis_weights_sha256)
        assert c.store.get_meta("states_pruned_below") == str(T + 1)
    finally:
        c.store.close()


def test_restart_with_a_smaller_window_prunes_old_side_states(smith, tmp_path):
    """An archival copy holding a side block deep below the tip, reopened with keep_weights=1: the next
    tip change deletes the side block's state (a datadir pruned before this rule existed catches up)."""
    T = TEMPLATE_BLOCKS
    key = FORK_KEY
    fork = archival_copy_with_a_side_block(smith, tmp_path / "node", key, seed=6)
    c = Chain(smith.spec, tmp_path / "node", smith.chain.dataset, keep_weights=1)
    try:
        assert c.store.weights.has(fork.header.state_hash)
        tip = c.tip().header
        nb = mine_block(smith.spec, c.dataset, tip, c.load_weights(tip.state_hash), c.view, key, seed=7)
        assert c.submit(Block(nb.header, nb.records)).new_tip
        assert not c.store.weights.has(fork.header.state_hash)
        assert c.store.weights.has(nb.header.state_hash) and c.store.weights.has(tip.state_hash)
        assert c.tip().height == T + 1
    finally:
        c.store.close()


def test_header_only_rows_below_the_window_and_over_the_cap(smith, tmp_path):
    headers = BlockSmith(smith.spec, None, Ed25519PrivateKey.generate()).headers
    c = open_copy(smith, tmp_path / "node", keep_weights=2, header_window=3, header_cap=50,
                  clock=template_clock(smith, 7200))
    try:
        tip = c.tip()
        # a fork from block 1, 12 headers long: it starts more than 3 below the tip, so it goes whole
        deep = headers(12, ancestors=ancestors(c, c.store.hash_at(1)), salt="deep")
        assert all(o.status == "header-ok" for o in c.submit_headers(deep))
        assert not any(c.store.status(h.hash) for h in deep)
        # two forks near the tip: A (40 headers on the tip), B (30 headers on the tip's parent)
        a = headers(40, ancestors=ancestors(c, tip.hash), salt="a")
        b = headers(30, ancestors=ancestors(c, tip.header.parent), salt="b")
        assert all(o.status == "header-ok" for o in c.submit_headers(a))
        assert c.store.count_by_status()[HEADER_ONLY] == 40
        assert all(o.status == "header-ok" for o in c.submit_headers(b))
        # 70 > 50: trimmed to 45 (90 % of the cap) from the least-work tip, B's, from the top down
        assert c.store.count_by_status()[HEADER_ONLY] == 45
        assert all(c.store.status(h.hash) == HEADER_ONLY for h in a)
        assert [c.store.status(h.hash) for h in b] == [HEADER_ONLY] * 5 + [None] * 25
        assert c.tip().hash == tip.hash
    finally:
        c.store.close()


@pytest.mark.slow
def test_a_mining_node_prunes_a_side_branch_state(smith, tmp_path, node_factory):
    """A real node process (--keep-weights 2) on a copy of the template chain that holds a valid side
    block at height 2 (its state kept, served at GET /blocks/{hash}/state): once the node has mined
    past the window, the side block's state is gone (404 pruned), the block itself is still served
    valid, and the best chain's recent states are served."""
    fork = archival_copy_with_a_side_block(smith, tmp_path / "node", FORK_KEY, seed=8)
    node = node_factory(tmp_path / "node", *TINY_TEST_ARGS, "--mine", "--keep-weights", "2",
                        "--no-discover", "--poll-interval", "0.5")
    side = f"/blocks/{fork.header.hash}/state"
    node.wait_for(lambda: node.status()["height"] >= TEMPLATE_BLOCKS + 1, timeout=120)
    # pruned just after the tip moves: wait for the 404, then check what it says
    r = node.wait_for(lambda: (r := node.get(side)).status_code == 404 and r, timeout=60, what="the side state pruned")
    assert r.status_code == 404 and r.json()["error"] == "pruned"
    assert node.block(fork.header.hash)["status"] == "valid"
    tip = node.status()["tip"]
    assert node.get(f"/blocks/{tip}/state").status_code == 200
