"""The sync fork search anchors on a validated parent, never on a header-only one (p2p/sync.py).

Node N holds its own chain (heights 1..14) and, header-only, the headers of a competing branch
that leaves it at height 2 (heights 3..18, more work), as left by an earlier sync that got no
bodies. Once a peer serving that branch's bodies is up, N must reorg to it in one sync round:
the search walks below the header-only rows to block 2 and fetches the bodies from 3 on. Anchored
on a header-only parent (the bug), the first body came back ``parent-not-validated``, the round
ended and progress fell to one orphan-parent fetch per poll (67 s for a 30-block fork).
"""
from __future__ import annotations

import pytest

from node.store import HEADER_ONLY
from tests.blocks import BlockSmith
from tests.nodeproc import wait_for

from .util import same_tip

pytestmark = pytest.mark.slow      # node processes or long mining: in the full suite, not in `-m "not slow"`


def test_stored_header_only_branch_is_synced_from_its_validated_parent(nodes, tmp_path):
    base = BlockSmith.open(tmp_path / "base")
    base.mine(2)
    ours = base.fork(tmp_path / "ours", seed=31)
    ours.mine(12)
    theirs = base.fork(tmp_path / "theirs", seed=32)
    theirs.mine(16)
    branch = [theirs.chain.store.get(h).header for h in theirs.chain.store.best_hashes()[3:]]
    assert [h.height for h in (branch[0], branch[-1])] == [3, 18]
    assert theirs.chain.tip().cumulative_work > ours.chain.tip().cumulative_work
    outs = ours.chain.submit_headers(branch)
    assert [o.status for o in outs] == ["header-ok"] * len(branch)
    assert ours.chain.tip().height == 14                     # headers alone move nothing
    assert all(ours.chain.store.status(h.hash) == HEADER_ONLY for h in branch)

    ours.copy_datadir(nodes.root / "n")
    theirs.copy_datadir(nodes.root / "s")
    for smith in (base, ours, theirs):
        smith.chain.store.close()
    s = nodes.add("s", "--no-discover")
    n = nodes.add("n", "--no-discover", peers=(s,))
    nodes.start_all([s, n])
    assert n.status()["height"] == 14 and s.status()["height"] == 18
    wait_for(lambda: same_tip(n, s), timeout=90, interval=0.2, what="N reorged to S's branch")
    assert n.status()["height"] == 18
    # one sync round took N there (its done line follows the last block; wait for it): anchored on
    # a header-only parent, the first body came back parent-not-validated and the round ended
    wait_for(lambda: n.log_lines(r"sync: done at height 18"), timeout=30, what="N's sync done line")
    assert not n.log_lines(r"parent-not-validated"), "a sync round anchored on a header-only parent"
    assert n.block("3")["hash"] == branch[0].hash and n.block("3")["status"] == "valid"
