"""Issue 21.12: a mining node stopped by SIGTERM waits until its miner thread has ended before it says
"node stopped cleanly" (a thread left inside torch at interpreter exit aborted a ResNet-18 node with
"terminate called without an active exception")."""
from __future__ import annotations

import signal

import pytest
from tests.chain_spec import TINY_TEST_ARGS


@pytest.mark.slow
def test_sigterm_while_mining_waits_for_the_miner(node_factory, tmp_path):
    node = node_factory(tmp_path / "miner", "--mine", *TINY_TEST_ARGS)
    # mid-search: the miner has made attempts on the current block
    node.wait_for(lambda: ((node.status()["mining"].get("current") or {}).get("attempts") or 0) > 0,
                  timeout=120, what="the miner searching")
    rc = node.send(signal.SIGTERM, timeout=120)
    log = node.log_text()
    assert rc == 0, log[-3000:]
    lines = log.splitlines()
    assert "terminate called" not in log and "Traceback" not in log, log[-3000:]
    assert "node stopped cleanly" in lines[-1], lines[-5:]
    stopped = [i for i, line in enumerate(lines) if "miner on cpu stopped" in line]
    assert stopped and stopped[-1] < len(lines) - 1, lines[-5:]       # the miner ended before the node said so
