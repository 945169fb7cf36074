"""A mining node: /status and /metrics while it mines, weights pruning (--keep-weights),
and a clean shutdown on SIGTERM and SIGINT (exit 0, "node stopped cleanly").

The tests of this module run in order on one node (one datadir).
"""
from __future__ import annotations

import signal
import time

import pytest
from safetensors.torch import load as st_load

from consensus.weights import weights_hash

from .conftest import NodeProc
from .test_api import assert_error

KEEP = 3
TARGET = 2 * KEEP + 3      # enough blocks that some weights must have been pruned


@pytest.fixture(scope="module")
def miner_node(tmp_path_factory):
    node = NodeProc(tmp_path_factory.mktemp("mining") / "data", "--preset", "tiny", "--mine",
                    "--keep-weights", str(KEEP)).start()
    yield node
    if node.alive():
        node.stop()


def metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    raise KeyError(name)


def test_mining_status(miner_node):
    st = miner_node.wait_height(2, timeout=90)
    assert st["mining"]["enabled"] is True
    assert st["mining"]["device"] == "cpu"
    # attempts/s is a rate over windows of 2 s
    deadline = time.monotonic() + 30
    while (st := miner_node.status())["mining"]["attempts_per_second"] <= 0:
        assert time.monotonic() < deadline, st
        time.sleep(0.5)
    assert st["mining"]["blocks_found"] >= 2
    assert st["height"] >= 2


def test_mining_metrics(miner_node):
    miner_node.wait_height(2, timeout=90)
    deadline = time.monotonic() + 30
    while True:
        text = miner_node.get("/metrics").text
        if metric(text, "polchain_mining_attempts_per_second") > 0:
            break
        assert time.monotonic() < deadline, text
        time.sleep(0.5)
    assert metric(text, "polchain_height") >= 2
    assert metric(text, "polchain_blocks_found_total") >= 2
    assert metric(text, "polchain_blocks_accepted_total") >= 2
    assert metric(text, "polchain_validation_seconds_count") >= 2
    assert metric(text, "polchain_validation_seconds_sum") > 0


def test_pruning_while_mining(miner_node):
    st = miner_node.wait_height(TARGET, timeout=120)
    # pruning only ever grows: heights below tip - KEEP at this moment stay pruned
    for h in range(1, st["height"] - KEEP):
        r = miner_node.get(f"/blocks/{h}/weights")
        assert_error(r, 404, "pruned")
        # the header and its figures stay served
        assert miner_node.get(f"/blocks/{h}").json()["status"] == "valid"
    g = miner_node.get("/blocks/0/weights")          # genesis weights are never pruned
    assert g.status_code == 200
    assert miner_node.get("/model").status_code == 200


def test_sigterm_stops_cleanly(miner_node):
    t0 = time.monotonic()
    rc = miner_node.send(signal.SIGTERM, timeout=15)
    elapsed = time.monotonic() - t0
    assert rc == 0, miner_node.log_text()[-3000:]
    assert elapsed < 10, elapsed
    assert "node stopped cleanly" in miner_node.log_text().splitlines()[-1]


def test_restart_keeps_the_chain_and_the_pruning(miner_node):
    """Restarted without --mine: the tip is where it was, exactly the last KEEP+1 blocks'
    weights are served (and hash right), older ones answer 404 "pruned"."""
    log_before = miner_node.log_text()
    last_tip = [line for line in log_before.splitlines() if "new tip" in line][-1]
    miner_node.restart("--keep-weights", str(KEEP))
    st = miner_node.status()
    assert st["mining"]["enabled"] is False
    assert st["tip"].startswith(last_tip.split("new tip ")[1].split()[0])
    tip = st["height"]
    for h in range(0, tip + 1):
        b = miner_node.get(f"/blocks/{h}").json()
        r = miner_node.get(f"/blocks/{h}/weights")
        if h == 0 or h >= tip - KEEP:
            assert r.status_code == 200, (h, tip, r.text)
            assert weights_hash(st_load(r.content)) == b["header"]["weights_hash"]
        else:
            assert_error(r, 404, "pruned")


def test_sigint_stops_cleanly(miner_node):
    rc = miner_node.send(signal.SIGINT, timeout=15)
    assert rc == 0, miner_node.log_text()[-3000:]
    assert "node stopped cleanly" in miner_node.log_text().splitlines()[-1]
