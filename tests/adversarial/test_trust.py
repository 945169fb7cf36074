"""trust: a sender is known only once it has delivered a valid block (or is configured), and every block
waits in its origin's lane, however it arrives (issue 30.2, 30.3).

A real node over HTTP on loopback. The hostile network is 127.0.7.0/24 (and 127.0.9.0/24): twelve
one-route HTTP servers on addresses of it answer ``GET /status`` with the node's chain id, so each
passes the handshake and is a connected peer; that costs an attacker a port, not a valid block.

* ``test_a_handshake_makes_a_peer_not_a_known_sender``: the twelve POST a junk block each (a fresh key,
  a valid signature, random nonces: a full replay before R fails) at once, while an honest stranger of
  the same /24 has its block validated. A known sender jumps the queue and makes a stranger's replay
  give way; a stranger gets one slot per network. Before: the handshake put every connected peer's
  host in the known lane (``NodeService.peer_hosts``): 12 of 12 junk blocks judged at once.
* ``test_a_relayed_block_waits_in_its_origins_lane``: the twelve *announce* their junk blocks (the
  header alone, ``X-Polchain-Origin`` naming themselves); the relay fetches each from its origin.
  Before: relayed blocks went to ``submit_remote`` without lanes: 12 of 12 judged, whatever the lane
  held. Now a relayed block waits in the same ``LaneQueue`` as a POSTed one, in its origin's lane.
"""
from __future__ import annotations

import json
import random
import threading
import time
from contextlib import ExitStack

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from bench.give_way import junk_block
from consensus.block import genesis_header
from tests.blocks import BlockSmith
from tests.chain_spec import TINY_TEST, TINY_TEST_ARGS
from tests.nodeproc import NodeProc, patient, wait_for

from .loopback import announce, client_from, peers_on, post, post_until_judged

pytestmark = pytest.mark.slow      # node processes or long mining: in the full suite, not in `-m "not slow"`

HONEST = Ed25519PrivateKey.from_private_bytes(bytes([23]) * 32)
HOSTS = 12
HEAD_START_S = 0.15      # the honest stranger's block is in the lane before the burst


@pytest.fixture
def node(tmp_path):
    n = NodeProc(tmp_path / "d", *TINY_TEST_ARGS, "--validation-queue", "16").start()
    yield n
    n.stop()


@pytest.fixture(scope="module")
def honest_block(tiny_dataset):
    return BlockSmith(TINY_TEST, tiny_dataset, HONEST).blocks(1, seed=11)[0]


def junk(n: int, seed: int):
    spec, rng = TINY_TEST, random.Random(seed)
    return [junk_block(spec, genesis_header(spec), rng).header for _ in range(n)]


def honest_stranger(node: NodeProc, ip: str, block, out: list) -> threading.Thread:
    """Posts ``block`` from ``ip`` (a stranger: no block of it here yet) until it is judged."""
    def run():
        with client_from(ip, node.url) as c:
            out.append(post_until_judged(c, block.header, block.records))
    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def burst(calls) -> list:
    """Run the calls at once (a barrier), each in its own thread; their results in order."""
    gate, out = threading.Barrier(len(calls)), [None] * len(calls)

    def run(i, fn):
        gate.wait()
        out[i] = fn()
    threads = [threading.Thread(target=run, args=(i, fn), daemon=True) for i, fn in enumerate(calls)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(patient(60))
    return out


def test_a_handshake_makes_a_peer_not_a_known_sender(node, honest_block):
    ips = [f"127.0.7.{i + 1}" for i in range(HOSTS)]
    headers = junk(HOSTS, seed=1)
    with ExitStack() as stack:
        peers_on(node, ips, stack)
        clients = [stack.enter_context(client_from(ip, node.url)) for ip in ips]
        honest: list = []
        t = honest_stranger(node, "127.0.7.250", honest_block, honest)
        time.sleep(HEAD_START_S)
        answers = burst([lambda c=c, h=h: post(c, h) for c, h in zip(clients, headers)])
        t.join(patient(60))
    codes = [r.status_code for r in answers]
    judged = codes.count(400)
    print("FIGURES", json.dumps({"test": "handshake-is-not-trust", "peers": HOSTS, "junk_judged": judged,
                                 "codes": codes, "details": sorted({r.json().get("detail", "")[:80] for r in answers if r.status_code == 503}), "honest_tries": honest[0].tries,
                                 "honest_gave_way": honest[0].gave_way}))
    assert honest[0].response.status_code == 200, honest[0].response.text
    assert set(codes) <= {400, 503}, codes
    # strangers of one /24 get one slot: a connected peer is no known sender
    assert judged <= 3, f"{judged} of {HOSTS} junk blocks of connected peers of one /24 judged at once: {codes}"


def test_a_relayed_block_waits_in_its_origins_lane(node, honest_block):
    ips = [f"127.0.9.{i + 1}" for i in range(HOSTS)]
    headers = junk(HOSTS, seed=2)
    with ExitStack() as stack:
        fakes = peers_on(node, ips, stack)
        for fake, h in zip(fakes, headers):
            fake.serve_block(h, [])
        clients = [stack.enter_context(client_from(ip, node.url)) for ip in ips]
        honest: list = []
        t = honest_stranger(node, "127.0.9.250", honest_block, honest)
        time.sleep(HEAD_START_S)
        answers = burst([lambda c=c, h=h, f=f: announce(c, h, f.url) for c, h, f in zip(clients, headers, fakes)])
        assert all(r.status_code == 202 for r in answers), [r.text for r in answers]
        wait_for(lambda: all(f.fetched(h.hash) for f, h in zip(fakes, headers)), timeout=60,
                 what="every announced block fetched from its origin")
        t.join(patient(60))

        def statuses() -> list:
            return [(node.block(h.hash) or {}).get("status") for h in headers]
        seen, stable_since = statuses(), time.monotonic()
        while time.monotonic() - stable_since < 3.0 and seen.count("invalid") < HOSTS:
            time.sleep(0.3)
            now = statuses()
            if now != seen:
                seen, stable_since = now, time.monotonic()
    judged = seen.count("invalid")
    print("FIGURES", json.dumps({"test": "relayed-in-lanes", "origins": HOSTS, "relayed_junk_judged": judged,
                                 "statuses": seen, "honest_tries": honest[0].tries,
                                 "honest_gave_way": honest[0].gave_way}))
    assert honest[0].response.status_code == 200, honest[0].response.text
    assert judged <= 3, f"{judged} of {HOSTS} relayed junk blocks of one /24 judged: the relay skipped the lanes"
