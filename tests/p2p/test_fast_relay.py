"""Fast relay against a real node process: a block is relayed once its replayed steps met R, before
its accuracy is evaluated (docs/p2p.md). So a block that fails only its accuracy is relayed and its
sender is not banned (it paid a real 2^k search and may have relayed in good faith); a block that
fails R is never relayed and its sender is banned."""
from __future__ import annotations

from dataclasses import replace

import pytest

from consensus.ticket import sign_with_ticket
from consensus.block import BlockHeader
from node.keys import load_or_create_key
from tests.nodeproc import wait_for

from .util import FakePeer, tampered_block
from tests.chain_spec import TINY_TEST


def announced(peer: FakePeer, block_hash: str) -> bool:
    """Did the node announce this block to ``peer`` (POST /blocks with the header)?"""
    return any(path == "/blocks" and BlockHeader.from_json(body).hash == block_hash for path, body in peer.bodies)


def judged(node, block_hash: str):
    blk = node.block(block_hash)
    return blk if blk is not None and blk["status"] in ("invalid", "valid") else None


def state_of(node, url: str) -> str | None:
    return next((p["state"] for p in node.peers() if p["url"] == url), None)


@pytest.mark.slow
def test_relay_after_work_ban_only_for_failed_work(nodes):
    a = nodes.start("a", "--mine", "--no-discover")
    a.wait_height(2, timeout=120)
    h = a.status()["height"] - 1
    own = BlockHeader.from_dict(a.block(str(h))["header"])
    # the node's own proof re-signed by its own key with a claim beyond the tolerance: R and the
    # post-state hold (they do not depend on the claim), the accuracy check fails
    key = load_or_create_key(a.datadir / "node.key")
    tol = TINY_TEST.evaluation.claim_tolerance
    wrong_claim = sign_with_ticket(TINY_TEST, replace(own, acc_after=own.acc_after + tol + 1), key)
    with FakePeer() as origin, FakePeer() as listener:
        for fake in (origin, listener):
            fake.serve_json("/status", a.status())             # passes the handshake: same chain id
            fake.serve_json("/peers", [])
            fake.serve_json("/blocks", {"status": "fetching", "hash": "", "code": "fetching", "detail": ""}, 202)
            assert a.post("/peers", json={"url": fake.url}).status_code == 202
        wait_for(lambda: {origin.url, listener.url} <= {p["url"] for p in a.peers() if p["state"] != "banned"},
                 timeout=60, what="both fake peers known to A")
        origin.serve_block(wrong_claim)
        r = a.post("/blocks", content=wrong_claim.encode(),
                   headers={"content-type": "application/json", "x-polchain-origin": origin.url})
        assert r.status_code == 202 and r.json()["code"] == "fetching", r.text
        blk = wait_for(lambda: judged(a, wrong_claim.hash), timeout=90, what="A judged the wrong claim")
        assert (blk["status"], blk["reason"]) == ("invalid", "bad-accuracy-claim")
        # relayed before the accuracy check ...
        wait_for(lambda: announced(listener, wrong_claim.hash), timeout=60, what="the wrong claim relayed")
        # ... and the peer that served it is not banned for it
        assert state_of(a, origin.url) not in (None, "banned"), a.peers()

        bad_work = tampered_block(a, h)                         # another key: R fails / wrong post-state
        origin.serve_block(bad_work)
        r = a.post("/blocks", content=bad_work.encode(),
                   headers={"content-type": "application/json", "x-polchain-origin": origin.url})
        assert r.status_code == 202, r.text
        blk = wait_for(lambda: judged(a, bad_work.hash), timeout=90, what="A judged the failed work")
        assert blk["reason"] in ("requirements-not-met", "state-mismatch")
        wait_for(lambda: state_of(a, origin.url) == "banned", timeout=60, what="the origin banned")
        assert not announced(listener, bad_work.hash)
