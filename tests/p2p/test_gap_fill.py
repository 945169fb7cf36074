"""An announced block whose parent is missing here, on a branch its origin holds but does not follow,
brings its missing ancestors by hash from the origin (p2p/relay.py ``_fill_gap``, issue 20.2).

Sync reads a peer's best chain only, so before this such a block waited until the origin's tip moved
to its branch: after a partition heals, a node relays each block of the heavier branch as its work is
checked, long before that branch is its tip, and one skipped announcement left every later one
parentless. Here the origin A holds a side branch (heights 3..5, as much work as its best chain, seen
second, so not its tip); B hears of the branch's last block alone and must end up with all three,
validated, while A's best chain never offered them."""
from __future__ import annotations

import pytest

from tests.blocks import BlockSmith
from tests.node.conftest import post_block
from tests.nodeproc import wait_for

pytestmark = pytest.mark.slow      # node processes or long mining: in the full suite, not in `-m "not slow"`


def test_an_announced_side_branch_block_brings_its_missing_ancestors(nodes, tmp_path):
    main = BlockSmith.open(tmp_path / "main")
    main.mine(2)
    side = main.fork(tmp_path / "side", seed=11)
    main.mine(3)                                                     # best chain: heights 1..5
    branch = [side.next_block(submit=True) for _ in range(3)]         # side branch: 3..5 on block 2
    for name in ("a", "b"):
        main.copy_datadir(tmp_path / name)
    a = nodes.start("a", "--no-discover")
    main_tip = main.chain.tip().hash
    for blk in branch:        # A has no peer yet: it relays the branch to nobody
        r = post_block(a, blk.header, blk.records)
        assert r.status_code == 200 and r.json()["status"] == "accepted", r.text
    b = nodes.start("b", "--no-discover", peers=(a,))
    assert a.status()["tip"] == main_tip                              # a tie: A stays on its first chain
    assert [x["hash"] for x in a.best_chain()][-1] == main_tip       # so sync from A cannot offer the branch
    wait_for(lambda: a.url in {p["url"] for p in b.peers()}, timeout=60, what="A in B's peer book")

    last = branch[-1].header
    r = b.post("/blocks", content=last.encode(),
               headers={"content-type": "application/json", "x-polchain-origin": a.url})
    assert r.status_code in (200, 202), r.text

    def on_b(blk):
        got = b.block(blk.header.hash)
        return got is not None and got["status"] == "valid"
    wait_for(lambda: all(on_b(blk) for blk in branch), timeout=60, what="the whole side branch valid at B")
    assert b.log_lines(r"fetching 2 missing ancestor\(s\) of " + last.hash[:16]), b.log_text()[-3000:]
    assert b.status()["tip"] == main_tip
