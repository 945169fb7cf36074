"""Pruned peers under protocol v2: a node prunes post-states, never blocks (header + records).

* A new node whose only peer is pruned still syncs and validates the whole chain: every block
  is replayed from genesis, each from the post-state the previous replay produced.
* Snapshot sync (``--assume-valid HASH``): blocks up to the checkpoint are accepted on their
  header checks, the checkpoint's post-state is fetched from a peer that keeps it (checked
  against the header's state_hash), and the blocks after it are validated from it.
* When no peer keeps the checkpoint's post-state, the node validates from genesis instead.
"""
from __future__ import annotations

import pytest
from safetensors.torch import load as st_load

from consensus.weights import weights_hash
from tests.nodeproc import wait_for

from .util import same_tip

pytestmark = pytest.mark.slow      # node processes or long mining: in the full suite, not in `-m "not slow"`


def measured(node, height: int) -> bool:
    return node.block(str(height))["accuracy"]["measured_after"] is not None


def test_pruned_peer_serves_full_sync_and_snapshots(nodes):
    a = nodes.add("a", "--mine", "--archival", "--no-discover")
    r = nodes.add("r", "--keep-weights", "2", "--no-discover", peers=(a,))
    nodes.start_all([a, r])
    wait_for(lambda: r.status()["height"] >= 10, timeout=120, what="R following A")
    early = r.block("2")
    assert r.get(f"/blocks/{early['hash']}/state").json()["error"] == "pruned"
    assert r.get(f"/blocks/{early['hash']}").json()["status"] == "valid"      # the block itself is kept
    checkpoint = a.block("4")
    assert r.get(f"/blocks/{checkpoint['hash']}/state").status_code == 404

    # N: R (pruned) and A (archival); blocks 1..4 assumed valid, block 4's state from A, the rest replayed
    n = nodes.add("n", "--no-discover", "--assume-valid", checkpoint["hash"], peers=(r, a))
    # M: only R, no assume-valid: replays everything from genesis out of R's headers and records
    m = nodes.add("m", "--no-discover", peers=(r,))
    # P: only R, assume-valid at a block whose post-state R has pruned: no snapshot, so from genesis
    p = nodes.add("p", "--no-discover", "--assume-valid", checkpoint["hash"], peers=(r,))
    nodes.start_all([n, m, p])

    wait_for(lambda: same_tip(a, n), timeout=120, interval=0.2, what="N on A's tip")
    assert n.log_lines(r"assume-valid: accepted 4 blocks \(heights 1\.\.4, checkpoint "), n.log_text()[-3000:]
    assert n.log_lines(r"snapshot: post-state of block 4 \(\w+\) from " + a.url)
    b3, b9 = n.block("3"), n.block("9")
    assert b3["status"] == "valid" and b3["accuracy"]["measured_after"] is None      # not replayed
    assert n.get(f"/blocks/{b3['hash']}/state").status_code == 404                   # never downloaded
    snap = n.get(f"/blocks/{checkpoint['hash']}/state")
    assert snap.status_code == 200 and weights_hash(st_load(snap.content)) == checkpoint["header"]["state_hash"]
    assert b9["status"] == "valid" and b9["accuracy"]["measured_after"] is not None   # replayed
    assert n.block("4")["hash"] == checkpoint["hash"]

    for node in (m, p):
        wait_for(lambda: same_tip(a, node) and node.status()["height"] >= 10, timeout=180, interval=0.5,
                 what=f"{node.name} on A's tip, synced from the pruned R alone")
        assert all(measured(node, h) for h in range(1, 11)), node.name              # every block replayed
        assert all(peer["state"] != "banned" for peer in node.peers())              # pruning is no misbehaviour
    assert p.log_lines(r"snapshot: no peer served the post-state of checkpoint \w+; validating from genesis")
    assert not p.log_lines(r"assume-valid: accepted")
