"""After the store recovers, a node syncs at once and does not mine on a tip it knows to be beaten
(issue 30, "after the store recovers").

Measured before: a mining node whose disk filled while a peer was 11-15 blocks ahead kept the
per-peer sync backoff (up to 60 s) it had set while its own writes failed, mined 3-4 blocks on its
stale tip with /health 200, and reached the peer's tip 35-57 s after space returned; the store
probe's own backoff kept /health 503 for ~24 s after space returned.

Here: a peer P holds 12 blocks and does not mine; node N (mining, its datadir on a tmpfs filled to
the last byte) is told of P. While N cannot write, every sync from P fails and backs off. Then the
filler goes: N must (1) sync from P at once (``StoreHealth.on_recovered`` -> ``Network.sync_now``),
(2) mine no block at a height P already has (``Syncer.behind``: no mining while a peer claims more
work), (3) never answer /health 200 before it has P's tip, and (4) reach P's tip within 10 s of the
store writing again (a bound stretched by POLCHAIN_TEST_PATIENCE, printed as a figure).

Skipped where a tmpfs cannot be mounted (needs root and CAP_SYS_ADMIN)."""
from __future__ import annotations

import re
from datetime import datetime

import pytest

from tests.node.test_store_refuses import fill, tmpfs
from tests.nodeproc import NodeProc, patient, wait_for
from tests.chain_spec import TINY_TEST_ARGS

BOUND_S = 60
P_HEIGHT = 12


def _stamp(line: str) -> float:
    return datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f").timestamp()


@pytest.mark.slow
def test_a_node_whose_store_recovers_syncs_at_once_and_mines_nothing_stale(tmp_path):
    peer = NodeProc(tmp_path / "p", *TINY_TEST_ARGS, "--mine", name="p")
    mnt = tmp_path / "mnt"
    with tmpfs(mnt, "48m"):
        node = NodeProc(mnt / "n", *TINY_TEST_ARGS, "--mine", "--no-discover", log=tmp_path / "n.log", name="n")
        try:
            peer.start(timeout=BOUND_S)
            peer.wait_height(P_HEIGHT, timeout=2 * BOUND_S)
            peer.restart(*TINY_TEST_ARGS, timeout=BOUND_S)            # P stands still from here
            target = peer.status()
            node.start(timeout=BOUND_S)
            node.wait_height(1, timeout=BOUND_S)
            filler = fill(mnt)
            wait_for(lambda: node.get("/health").json().get("status") == "store-error", timeout=BOUND_S,
                     what="n: store-error after the disk filled")
            assert node.post("/peers", json={"url": peer.url}).status_code in (200, 202)
            # every sync from P fails on N's side meanwhile, and the per-peer backoff grows
            wait_for(lambda: len(node.log_lines(r"sync: from .*headers first")) >= 3, timeout=2 * BOUND_S,
                     what="n: three syncs from p tried while its store fails")
            stalled = node.status()["height"]
            assert stalled < target["height"]

            filler.unlink()
            samples = []

            def caught_up():
                health = node.get("/health")
                st = node.status()
                samples.append((health.status_code, st["tip"]))
                return st if st["tip"] == target["tip"] else None

            wait_for(caught_up, timeout=BOUND_S, interval=0.2, what="n on p's tip")
            recovered = _stamp(node.log_lines(r"the store writes again")[-1])
            at_tip = _stamp(node.log_lines(rf"new tip {target['tip'][:16]}")[-1])
            print(f"FIGURES store writes again -> p's tip in {at_tip - recovered:.1f} s "
                  f"(n at height {stalled}, p at {target['height']})")
            assert at_tip - recovered < patient(10), (at_tip, recovered)
            # no 200 on /health while behind: the samples before the last one are all 503
            assert all(code == 503 for code, tip in samples if tip != target["tip"]), samples
            stale = [line for line in node.log_lines(r"mined block ") if _stamp(line) > recovered
                     and int(re.search(r"height (\d+)", line).group(1)) <= target["height"]]
            assert stale == [], stale
        finally:
            node.stop()
            peer.stop()
