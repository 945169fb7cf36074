"""Pruned peers: a body a peer no longer keeps (404 "pruned") is asked of other peers; with
none left, a node stops at that height unless told to assume blocks valid up to a hash."""
from __future__ import annotations

from tests.nodeproc import wait_for

from .util import same_tip


def test_pruned_bodies_come_from_other_peers_and_assume_valid(nodes):
    a = nodes.add("a", "--mine", "--archival", "--no-discover")
    r = nodes.add("r", "--keep-weights", "2", "--no-discover", peers=(a,))
    nodes.start_all([a, r])
    wait_for(lambda: r.status()["height"] >= 10, timeout=120, what="R following A")
    early = r.block("2")
    assert r.get(f"/blocks/{early['hash']}/weights").json()["error"] == "pruned"
    checkpoint = a.block("4")

    # N: R (pruned) and A (archival); blocks 1..4 assumed valid, the rest validated with bodies
    n = nodes.add("n", "--no-discover", "--assume-valid", checkpoint["hash"], peers=(r, a))
    # M: only R, no assume-valid: it cannot get the early bodies from anyone
    m = nodes.add("m", "--no-discover", peers=(r,))
    nodes.start_all([n, m])

    wait_for(lambda: same_tip(a, n), timeout=120, interval=0.2, what="N on A's tip")
    assert n.log_lines(r"assume-valid: accepted 4 blocks \(heights 1\.\.4, checkpoint "), n.log_text()[-3000:]
    b3, b10 = n.block("3"), n.block("9")
    assert b3["status"] == "valid" and b3["accuracy"]["measured_after"] is None      # not replayed
    assert n.get(f"/blocks/{b3['hash']}/weights").status_code == 404                 # never downloaded
    assert b10["status"] == "valid" and b10["accuracy"]["measured_after"] is not None   # replayed
    assert n.block("4")["hash"] == checkpoint["hash"]

    wait_for(lambda: m.log_lines(r"every peer asked has pruned the body of block \w+ height 1 "), timeout=60,
             what="M reports the pruned bodies")
    assert m.status()["height"] == 0
    assert all(p["state"] != "banned" for p in m.peers())      # pruning is no misbehaviour
