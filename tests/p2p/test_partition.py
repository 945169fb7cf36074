"""A two-way partition heals into one chain by cumulative work; the losing side reorgs and its
miner moves to the new tip."""
from __future__ import annotations

import pytest

from tests.nodeproc import wait_for

from .util import miner_key, same_tip

pytestmark = pytest.mark.slow      # node processes or long mining: in the full suite, not in `-m "not slow"`


def test_partition_heals_into_the_chain_with_most_work(nodes):
    p = nodes.add("p", "--mine")
    q = nodes.add("q", "--mine")
    nodes.start_all([p, q])                       # no peers: two separate chains from genesis
    wait_for(lambda: p.status()["height"] >= 4 and q.status()["height"] >= 4, timeout=120,
             what="both sides at height 4")
    tp, tq = p.status()["tip"], q.status()["tip"]
    assert tp != tq

    assert p.post("/peers", json={"url": q.url}).status_code == 202      # the partition heals
    assert q.post("/peers", json={"url": p.url}).status_code == 202
    wait_for(lambda: same_tip(p, q), timeout=120, interval=0.2, what="one tip on both sides")

    hashes = {b["hash"] for b in p.best_chain()}
    assert (tp in hashes) != (tq in hashes)       # exactly one side's history survives
    winner, loser, pre = (p, q, tp) if tp in hashes else (q, p, tq)
    # the reorg line is written just after the tip moved: wait for it
    reorgs = wait_for(lambda: loser.log_lines(r"reorg: depth \d+, fork at height \d+"), timeout=30,
                      what="the loser's reorg line")
    assert "fork at height 1," in " ".join(reorgs)   # the two chains shared only genesis

    # the loser's miner now extends the winning chain
    loser_key, pre_height = miner_key(loser), winner.block(pre)["height"]
    wait_for(lambda: any(b["header"]["miner"] == loser_key for b in winner.best_chain(pre_height + 1)),
             timeout=120, what="a block of the losing miner on the winning chain")
