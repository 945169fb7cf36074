"""lanes: a replay gives way only to a block that will be judged now, and a new network is served during
a flood (issue 30.3).

A real node over HTTP on loopback; each sender on its own 127.0.N.0/24. Every test compares an honest
block's wait during an attack with its wait in a quiet phase of the same test (the machine is shared,
so only ratios and counts are asserted, with room; the figures are printed as FIGURES lines).

* ``test_orphans_of_a_known_host_make_no_replay_give_way``: a known host (one valid block delivered)
  streams cheap orphans (unknown parents: never replayed, never banned) while an honest stranger posts
  its first block. Before: every orphan queued in the known lane made the stranger's replay give way
  (20 give-ways, 7.0 s against 0.46 s quiet); now only a block whose parent is valid here (it will be
  replayed now) may preempt.
* ``test_a_new_miners_first_block_is_served_during_a_flood``: 32 senders post junk from rotating
  addresses of 8 networks over kept-alive connections (tests/adversarial/junk_flood.py) while new
  miners, each on a network of its own, post their first blocks (three, one after the other). Before: the stranger lane was first come, first served, so the flood's
  many senders held it: 26 tries, 40.5 s (43x quiet); now the lane serves the network that was
  served longest ago first, and a newcomer takes the place of a waiting block of a network served
  more recently.
* ``test_the_stranger_lane_serves_the_network_served_longest_ago_first``: the same rule on the
  ``LaneQueue`` alone, step by step.
"""
from __future__ import annotations

import dataclasses
import json
import os
import random
import statistics
import threading
import time

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from bench.give_way import junk_block
from node.admission import GaveWay, Lane, LaneQueue
from tests.blocks import BlockSmith
from tests.chain_spec import TINY_TEST, TINY_TEST_ARGS
from tests.nodeproc import NodeProc, patient

from .junk_flood import NETWORKS, JunkFlood
from .loopback import client_from, post, post_until_judged

pytestmark = pytest.mark.slow      # node processes or long mining: in the full suite, not in `-m "not slow"`

HONEST = Ed25519PrivateKey.from_private_bytes(bytes([25]) * 32)
ORPHAN_THREADS = 4
MINERS = 3                 # new miners: quiet, then as many during the flood (medians compared)
WARM_JUDGED = 2      # junk judged per flood network before the new miners come (JunkFlood's NETWORKS)
MAX_TRIES = 40


@pytest.fixture
def node(tmp_path):
    # rate limits out of the way: these tests are about the order of validation, not about quotas
    n = NodeProc(tmp_path / "d", *TINY_TEST_ARGS, "--validation-queue", "16", "--rate-limit", "1000",
                 "--rate-burst", "1000").start()
    yield n
    n.stop()


@pytest.fixture(scope="module")
def blocks(tiny_dataset):
    return BlockSmith(TINY_TEST, tiny_dataset, HONEST).blocks(2 * MINERS, seed=31)


def first_try(node: NodeProc, ip: str, block):
    with client_from(ip, node.url) as c:
        out = post_until_judged(c, block.header, block.records, max_tries=MAX_TRIES)
    assert out.response.status_code == 200 and out.response.json()["status"] == "accepted", \
        f"not accepted after {out.tries} tries ({out.seconds:.1f} s, {out.gave_way} gave way): {out.response.text}"
    return out


def test_orphans_of_a_known_host_make_no_replay_give_way(node, blocks):
    first_try(node, "127.0.11.1", blocks[0])                      # the known host: a valid block delivered
    quiet = first_try(node, "127.0.12.1", blocks[1])               # a stranger's first block, quiet

    spec, stop, sent = TINY_TEST, threading.Event(), []

    def orphans(i: int) -> None:
        rng = random.Random(100 + i)
        n = 0
        with client_from("127.0.11.1", node.url) as c:
            while not stop.is_set():
                nowhere = dataclasses.replace(blocks[1].header, state_hash=rng.randbytes(32).hex())
                r = post(c, junk_block(spec, nowhere, rng).header)     # its parent is known nowhere
                assert r.status_code == 202 and r.json()["status"] == "orphan", r.text
                n += 1
        sent.append(n)

    threads = [threading.Thread(target=orphans, args=(i,), daemon=True) for i in range(ORPHAN_THREADS)]
    for t in threads:
        t.start()
    try:
        time.sleep(0.5)
        during = first_try(node, "127.0.13.1", blocks[2])          # a new stranger during the stream
    finally:
        stop.set()
        for t in threads:
            t.join(60)
    ratio = during.seconds / quiet.seconds
    print("FIGURES", json.dumps({"test": "orphans-do-not-preempt", "orphans_sent": sum(sent),
                                 "quiet_s": round(quiet.seconds, 3), "during_s": round(during.seconds, 3),
                                 "ratio": round(ratio, 2), "tries": during.tries, "gave_way": during.gave_way,
                                 "load": os.getloadavg()[0]}))
    assert sum(sent) > 0
    assert during.gave_way == 0, f"the stranger's replay gave way {during.gave_way} times to orphans"
    assert during.tries <= 3, during


def test_a_new_miners_first_block_is_served_during_a_flood(node, blocks):
    # three strangers' first blocks quiet, each on a network of its own; then three new miners' during
    quiet = [first_try(node, f"127.0.{21 + i}.1", b) for i, b in enumerate(blocks[:MINERS])]
    with JunkFlood(node.url, blocks[MINERS - 1].header, keep_alive=True) as flood:
        # every flood network served before the newcomers come: a network never served ties with a newcomer
        # (neither takes the other's place), so a fixed warm-up time made this depend on the machine's load
        # (CI: 3 s at load 4.3 judged too few, and the first newcomer took 4 tries). The first junk blocks
        # judged come from distinct networks (the lane serves networks never served first), so twice
        # NETWORKS judged leaves none of the flood's networks new.
        flood.wait_judged(WARM_JUDGED * NETWORKS, timeout=patient(120))
        during = [first_try(node, f"127.0.{31 + i}.1", b) for i, b in enumerate(blocks[MINERS:])]
    q, d = statistics.median(j.seconds for j in quiet), statistics.median(j.seconds for j in during)
    checked = [node.block(b.header.hash)["validation_seconds"] for b in blocks]    # the node's own check
    print("FIGURES", json.dumps({"test": "new-miner-during-flood", "codes": flood.codes, "reasons": flood.reasons,
                                 "quiet_s": [round(j.seconds, 3) for j in quiet],
                                 "during_s": [round(j.seconds, 3) for j in during], "ratio_of_medians": round(d / q, 2),
                                 "validation_s": checked,
                                 "tries": [j.tries for j in during], "load": os.getloadavg()[0]}))
    assert flood.codes[400] > 0, flood.codes                         # the flood was judged meanwhile
    assert all(j.tries <= 3 for j in during), \
        f"new miners' first blocks took {[j.tries for j in during]} tries ({[round(j.seconds, 1) for j in during]} s)"
    # the time ratio is a figure, not a check: with the senders, the node and the rest of a test run on 2 cores
    # it measured 2.0-4.8x alone and 15x inside the full suite (the node's own validation 0.05 -> 0.73 s);
    # the tries are what the lane controls. polchain bench hostile measures the ratio in a quiet run.


def test_the_stranger_lane_serves_the_network_served_longest_ago_first():
    a, b, c = "net:203.0.113.0/24", "net:198.51.100.0/24", "net:192.0.2.0/24"
    q, gate, order = LaneQueue(8, stranger_limit=3), threading.Event(), []
    try:
        for net in (a, b, c):                                        # served once each, a first
            q.try_submit(order.append, net, lane=Lane.STRANGER, prefix=net).result(timeout=30)
        held = q.try_submit(gate.wait, 30)                            # the validator is busy
        waiting = {net: q.try_submit(order.append, net, lane=Lane.STRANGER, prefix=net) for net in (c, b, a)}
        assert q.try_submit(order.append, "x", lane=Lane.STRANGER, prefix=a) is None     # one per network
        # the lane is full of networks served before; new ones take the places of the most recently served
        new = [q.try_submit(order.append, f"new{i}", lane=Lane.STRANGER, prefix=f"net:10.{i}.0.0/24")
               for i in range(3)]
        assert all(f is not None for f in new), "a new network was refused while the flood's networks waited"
        for net in (c, b, a):
            with pytest.raises(GaveWay):
                waiting[net].result(timeout=5)
        # the three new networks hold the lane: none of them gives way to another never served
        assert q.try_submit(order.append, "new3", lane=Lane.STRANGER, prefix="net:10.3.0.0/24") is None
        assert "lane for senders without a record here is full" in q.refusal(Lane.STRANGER, "net:10.3.0.0/24")
        assert q.try_submit(order.append, "again", lane=Lane.STRANGER, prefix=a) is None   # a served network: no
        gate.set()
        held.result(timeout=30)
        for f in new:
            f.result(timeout=30)
        assert order == [a, b, c, "new0", "new1", "new2"]
        # served order from now on: the network served longest ago first, whatever the arrival
        gate.clear()
        held = q.try_submit(gate.wait, 30)
        later = [q.try_submit(order.append, net, lane=Lane.STRANGER, prefix=net) for net in ("net:10.2.0.0/24", a)]
        gate.set()
        for f in (held, *later):
            f.result(timeout=30)
        assert order[-2:] == [a, "net:10.2.0.0/24"]
    finally:
        gate.set()
        q.shutdown()
