"""Several miners on one tip (``--device cuda:0,cuda:1`` / ``cuda:all``): MinerGroup, with CPU workers.

A real NodeService (network threads not started) and two real MinerWorkers mining tiny on the CPU:
both search (each draws its own nonces), the chain grows, every block is the node's (one key),
and stopping the group stops every worker.
"""
from __future__ import annotations

import time

from node.mining import MinerGroup
from node.service import NodeService
from node.settings import Settings
from tests.chain_spec import TINY_TEST_FILE
from tests.nodeproc import patient


def test_two_workers_mine_one_chain(tmp_path):
    service = NodeService(Settings(datadir=tmp_path / "node", spec_file=TINY_TEST_FILE, threads=1, port=1))
    group = MinerGroup(service, ["cpu", "cpu"])
    assert group.device == "cpu,cpu"
    group.start()
    try:
        deadline = time.monotonic() + patient(120)
        while service.chain.tip().height < 3:
            assert time.monotonic() < deadline, "the group mined no 3 blocks in time"
            time.sleep(0.2)
        assert all(w.miner.progress.attempts > 0 for w in group.workers), "a worker never searched"
    finally:
        group.stop()
    assert not any(w._thread.is_alive() for w in group.workers)
    assert group.blocks_found >= 3
    miners = {service.chain.store.get(h).header.miner for h in service.chain.store.best_hashes()[1:]}
    assert len(miners) == 1
    service.stop()
