"""Crash recovery: kill -9 a mining node at random moments, restart it, and check that
the tip never goes back and that `polchain verify` replays the stored chain from genesis.

Each round restarts the node on the same datadir, lets it mine, and kills it either
after a random delay or a few milliseconds after the height changed (when the next
block's post-state file, its row, the best-chain rewrite and pruning are being written,
since blocks come fast at this difficulty). ROUNDS via POLCHAIN_TEST_CRASH_ROUNDS.
"""
from __future__ import annotations

import os
import random
import re
import subprocess
import sys
import time

import pytest

from tests.nodeproc import node_env, patient

from .conftest import NodeProc
from tests.chain_spec import TINY_TEST_ARGS

pytestmark = pytest.mark.slow      # node processes or long mining: in the full suite, not in `-m "not slow"`

ROUNDS = int(os.environ.get("POLCHAIN_TEST_CRASH_ROUNDS", "3"))


def wait_new_block(node: NodeProc, above: int, timeout: float = 90) -> int:
    """Poll /status until the height passes ``above``; the last height seen (``timeout`` stretched by
    PATIENCE: only a broken node never mines)."""
    timeout = patient(timeout)
    deadline = time.monotonic() + timeout
    while True:
        h = node.status()["height"]
        if h > above:
            return h
        assert time.monotonic() < deadline, f"no block above {above} within {timeout}s"
        time.sleep(0.01)


def test_kill_9_and_recover(tmp_path):
    seed = int(os.environ.get("POLCHAIN_TEST_CRASH_SEED", str(time.time_ns() % 10**9)))
    rng = random.Random(seed)
    datadir = tmp_path / "data"
    node = NodeProc(datadir, *TINY_TEST_ARGS, "--mine", "--archival")
    last_seen = 0
    history = [("seed", seed)]
    try:
        for round_ in range(ROUNDS):
            node.start()
            st = node.status()
            assert st["height"] >= last_seen, (round_, st["height"], last_seen, history)
            # let it mine at least one block after the restart, then pick the moment
            last_seen = wait_new_block(node, st["height"])
            if round_ % 2 == 0:
                # a random moment: mostly mining, now and then writing a block
                deadline = time.monotonic() + rng.uniform(0.0, 2.0)
                while time.monotonic() < deadline:
                    last_seen = max(last_seen, node.status()["height"])
                    time.sleep(0.02)
                how = "random"
            else:
                # just behind a new block: its tip switch and pruning, or the next block's
                # weights and row, are being written
                last_seen = wait_new_block(node, last_seen)
                time.sleep(rng.uniform(0, 0.03))
                how = "after-block"
            node.kill()
            history.append((round_, how, last_seen))
        node.start()
        st = node.status()
        assert st["height"] >= last_seen, (st["height"], last_seen, history)
        assert st["height"] >= ROUNDS
        assert node.stop() == 0
    finally:
        node.kill()

    # no partial post-state file survives a restart; the store replays from genesis
    assert not list((datadir / "weights").glob("*/.tmp-*")), "partial weights files left behind"
    proc = subprocess.run([sys.executable, "-m", "node.cli", "verify", "--datadir", str(datadir)],
                          capture_output=True, text=True, timeout=patient(180), env=node_env())
    assert proc.returncode == 0, (proc.stdout, proc.stderr[-3000:], history)
    assert proc.stdout.startswith("OK:"), proc.stdout
    # the node was still mining between the last status and the stop, so the store may hold
    # a block or two more than that status said; never fewer
    m = re.search(r" height (\d+);", proc.stdout)
    assert m, proc.stdout
    assert int(m.group(1)) >= st["height"], (proc.stdout, st)


def test_recovers_each_crash_window(smith, tmp_path):
    """The states a crash can leave between the steps of writing a block, built on purpose:
    the block's row committed but the tip not moved yet, a post-state file with no row, and a
    half-written temp file. The restarted node moves its tip to the best valid block and
    removes the temp file."""
    from safetensors.torch import load as st_load

    from consensus.difficulty import work
    from consensus.weights import weights_hash
    from node.store import VALID

    from .conftest import TEMPLATE_BLOCKS

    side = smith.fork(tmp_path / "data", seed=11)
    built = side.next_block(submit=False)               # post-state + row, tip not switched
    header, state = built.header, built.state_bytes
    parent = side.chain.store.get(header.parent)
    side.chain.store.weights.put(header.state_hash, state)
    side.chain.store.put_block(header, built.records, VALID, parent.cumulative_work + work(header.difficulty),
                               acc=(None, header.acc_after))
    orphan_w = b"\x08\x00\x00\x00\x00\x00\x00\x00{}      "   # a state with no row (crash before the row)
    side.chain.store.weights.put("ee" * 32, orphan_w)
    partial = side.chain.store.weights.root / "ab" / ".tmp-crash.part"
    partial.parent.mkdir(exist_ok=True)
    partial.write_bytes(b"half a file")
    assert side.chain.store.tip_hash() != header.hash
    side.chain.store.close()

    node = NodeProc(tmp_path / "data").start()
    try:
        st = node.status()
        assert (st["height"], st["tip"]) == (TEMPLATE_BLOCKS + 1, header.hash)
        assert [b["hash"] for b in node.best_chain()][-1] == header.hash
        assert not partial.exists()
        assert node.get(f"/blocks/{header.hash}/state").content == state
        model = node.get("/model")                             # the recovered tip's W' is the node's model
        assert weights_hash(st_load(model.content)) == header.state_hash
    finally:
        assert node.stop() == 0
