"""Three nodes in a line, A - B - C (C knows only B; A and C mine), then more nodes joining it.

The tests share one network (module fixture ``line``) and run in file order:
agreement, a SIGKILL and restart, a late joiner syncing headers first, an invalid block
injected through a fake peer.
"""
from __future__ import annotations

import re
import time

import pytest

from tests.nodeproc import wait_for

from .conftest import COMMON
from .util import FakePeer, miner_key, same_tip, tampered_block

pytestmark = pytest.mark.slow      # node processes or long mining: in the full suite, not in `-m "not slow"`


def test_line_agrees_on_one_chain_with_both_miners(line):
    a, b, c = line["a"], line["b"], line["c"]
    ka, kc = miner_key(a), miner_key(c)
    assert ka != kc

    def agreed():
        tip = same_tip(a, b, c)
        if tip is None:
            return None
        miners = {blk["header"]["miner"] for blk in b.best_chain(1)}
        return tip if {ka, kc} <= miners else None

    tip = wait_for(agreed, timeout=120, interval=0.2, what="A, B, C on one tip holding blocks of both miners")
    chain = b.best_chain()
    assert chain[-1]["hash"] == tip or chain[-1]["height"] > 0
    assert all(blk["status"] == "valid" for blk in chain)
    assert [blk["height"] for blk in chain] == list(range(len(chain)))
    for x, y in zip(chain, chain[1:]):
        assert y["header"]["parent"] == x["hash"]
    # C only knows B (discovery off): A's blocks reached C through B's relay, and C's through B to A
    assert {p["url"] for p in c.peers()} == {b.url}
    assert any(blk["header"]["miner"] == kc for blk in a.best_chain(1))


def test_killed_node_restarts_and_catches_up(line):
    a, b, c = line["a"], line["b"], line["c"]
    c.kill()                                   # SIGKILL, mid-mining
    h0 = a.status()["height"]
    a.wait_height(h0 + 3, timeout=60)          # the network moves on without C
    c.restart(*COMMON, "--no-discover", "--peer", b.url)   # back, not mining any more (saves CPU)
    target = a.status()
    want = a.block(str(target["height"]))["hash"]

    def caught_up():
        blk = c.block(str(target["height"]))
        return blk is not None and blk["hash"] == want

    wait_for(caught_up, timeout=90, what="C back on A's chain")
    wait_for(lambda: same_tip(a, b, c), timeout=60, interval=0.2, what="A, B, C on one tip after restart")


def test_late_node_catches_up_headers_first(line, nodes):
    a, b = line["a"], line["b"]
    a.wait_height(10, timeout=120)              # also when run alone (the module's earlier tests mined meanwhile)
    behind = a.status()["height"]
    d = nodes.start("d", peers=(b,))            # discovery on: it should learn A and C from B
    wait_for(lambda: same_tip(a, b, d), timeout=120, interval=0.2, what="D on the network's tip")
    # the sync's last line comes just after its last block: wait for it, not for the tip alone
    wait_for(lambda: re.search(r"sync: done at height \d+ target \d+, \d+ blocks in", d.log_text()),
             timeout=30, what="D's sync done line")
    log = d.log_text()
    assert re.search(r"sync: from http://\S+, our height 0, peer's height \d+; headers first", log), log[-3000:]
    assert re.search(r"sync: \d+ headers checked from", log)
    progress = [(int(h), int(t)) for h, t in re.findall(r"sync: height (\d+) target (\d+) \(\d+\.\d+ blocks/s\)", log)]
    assert progress and max(h for h, _ in progress) >= behind - 1, log[-3000:]
    wait_for(lambda: d.status()["syncing"] is False, timeout=30, what="D not syncing")   # a new block may start a short one
    wait_for(lambda: {a.url, line["c"].url} <= {p["url"] for p in d.peers()}, timeout=30,
             what="D learned A and C from B's peer list")


def test_node_that_only_dials_out_follows_by_polling(line, nodes):
    a, b = line["a"], line["b"]
    from tests.nodeproc import free_port
    unreachable = f"http://127.0.0.1:{free_port()}"       # what it tells peers; nobody listens there
    x = nodes.start("x", "--no-discover", "--public-url", unreachable, peers=(b,))
    wait_for(lambda: same_tip(a, b, x), timeout=90, interval=0.2, what="X on the network's tip")
    h = x.status()["height"]
    a.wait_height(h + 2, timeout=60)
    wait_for(lambda: x.status()["height"] >= h + 2, timeout=30, what="X follows new blocks")
    # B cannot reach X's advertised URL: X's introduction fails the handshake, so B never puts it in its
    # book (nor announces to it); X got the new blocks by polling B
    assert all(p["url"] != unreachable for p in b.peers())


def test_invalid_block_is_rejected_everywhere_and_sender_banned(line):
    a, b, c = line["a"], line["b"], line["c"]
    a.wait_height(4, timeout=120)                  # also when run alone
    height = a.status()["height"] - 2
    bad = tampered_block(a, height)
    with FakePeer() as fake:
        fake.serve_block(bad)
        fake.serve_json("/status", a.status())            # passes A's handshake: same chain id
        assert a.post("/peers", json={"url": fake.url}).status_code == 202
        wait_for(lambda: fake.url in {p["url"] for p in a.peers()}, timeout=10, what="the fake peer known to A")
        # A announces each block it mines to the fake, which answers 404: the fake is in backoff at A
        # when it announces; an origin that has just announced is fetched from all the same
        wait_for(lambda: [p for p in a.peers() if p["url"] == fake.url and p["state"] == "backoff"],
                 timeout=90, interval=0.05, what="the fake peer in backoff at A")
        r = a.post("/blocks", content=bad.encode(),
                   headers={"content-type": "application/json", "x-polchain-origin": fake.url})
        assert r.status_code == 202, r.text

        def judged():
            blk = a.block(bad.hash)
            return blk if blk is not None and blk["status"] == "invalid" else None

        blk = wait_for(judged, timeout=90, what="A judged the tampered block")
        assert blk["reason"] in ("requirements-not-met", "state-mismatch")   # R is bound to the miner key
        assert fake.fetched(bad.hash) >= 1           # header and records

        banned = wait_for(lambda: [p for p in a.peers() if p["url"] == fake.url and p["state"] == "banned"],
                          timeout=10, what="the fake peer banned at A")
        assert banned

        # announcing it again costs A nothing: known invalid -> 409, no fetch
        n = len(fake.requests)
        r = a.post("/blocks", content=bad.encode(),
                   headers={"content-type": "application/json", "x-polchain-origin": fake.url})
        assert r.status_code == 409
        # a new header from the banned origin is not fetched either
        bad2 = tampered_block(a, height - 1)
        fake.serve_block(bad2)
        r = a.post("/blocks", content=bad2.encode(),
                   headers={"content-type": "application/json", "x-polchain-origin": fake.url})
        time.sleep(2)
        assert len(fake.requests) == n, fake.requests[n:]

    # never relayed: B and C do not know it; the honest chain goes on and the three agree
    h = a.status()["height"]
    for node in (b, c):
        assert node.block(bad.hash) is None
    a.wait_height(h + 1, timeout=60)
    tip = wait_for(lambda: same_tip(a, b, c), timeout=60, interval=0.2, what="A, B, C agree after the attack")
    assert all(blk["hash"] != bad.hash for blk in a.best_chain())
    assert tip
