"""Protocol v4's admission ticket (issue 33.1): a header that did not pay is refused before any replay,
store write or lane, over every way in -- ``Chain.submit`` (a POSTed or relayed block's pipeline),
``Chain.submit_headers`` (headers-first sync), ``POST /blocks`` on a real node, an announcement from a
known peer -- and refusing one costs the node about one scrypt evaluation.

The junk here is what v3's review flooded with (fresh key, valid signature, parent = tip, random nonces),
with a ticket that does not hold (``ticketed=False``): making one costs its sender a signature.
"""
from __future__ import annotations

import random
import time
from contextlib import ExitStack
from dataclasses import replace

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from bench.give_way import junk_block
from consensus.block import genesis_header
from consensus.ticket import ticket_holds
from node.chain import Chain
from tests.blocks import BlockSmith
from tests.chain_spec import TINY_TEST, TINY_TEST_ARGS
from tests.nodeproc import NodeProc, wait_for

from .loopback import announce, client_from, peers_on, post

SPEC = TINY_TEST
JUNK = 200


def unpaid(parent, rng):
    """Junk whose ticket does not hold (the one in 256 that happens to is skipped)."""
    while True:
        b = junk_block(SPEC, parent, rng, ticketed=False)
        if not ticket_holds(SPEC, b.header):
            return b


@pytest.fixture
def chain(tiny_dataset, tmp_path):
    c = Chain(SPEC, tmp_path / "d", tiny_dataset)
    yield c
    c.store.close()


def test_a_ticketless_block_is_refused_before_any_replay_or_store_write(chain):
    rng = random.Random(1)
    g = genesis_header(SPEC)
    rows = chain.store.count_by_status()
    junk = [unpaid(g, rng) for _ in range(JUNK)]
    c0 = time.process_time()
    outs = [chain.submit(b, "http://junk.invalid:1") for b in junk]
    per_block = (time.process_time() - c0) / JUNK
    c0 = time.process_time()
    for b in junk:                      # the floor: one scrypt evaluation per header, measured in this run
        ticket_holds(SPEC, b.header)
    per_check = (time.process_time() - c0) / JUNK
    assert {(o.status, o.code) for o in outs} == {("invalid", "bad-ticket")}
    assert chain.replays == 0 and chain.store.count_by_status() == rows       # nothing replayed, nothing stored
    # the node's whole cost of a ticketless block is a few ticket checks (the goal, < 1 ms on this
    # machine, is a ratio here so a slow or loaded machine does not fail it; the bound is 4 checks)
    assert per_block < 4 * per_check, \
        f"{per_block * 1e3:.2f} ms of CPU per ticketless junk block = {per_block / per_check:.1f} ticket checks"
    # the same junk with a ticket is judged as far as its proof (the ticket price: tests/bench ticket)
    out = chain.submit(junk_block(SPEC, g, rng), "http://junk.invalid:1")
    assert out.status == "invalid" and out.code in ("requirements-not-met", "state-mismatch")
    assert chain.replays == 1


def test_headers_first_stops_at_the_first_ticketless_header(chain, tiny_dataset):
    smith = BlockSmith(SPEC, tiny_dataset, Ed25519PrivateKey.from_private_bytes(bytes([9]) * 32))
    headers = smith.headers(6)
    rows = chain.store.count_by_status()
    ticket = next(t for t in range(headers[3].ticket + 1, 1 << 20)
                  if not ticket_holds(SPEC, replace(headers[3], ticket=t)))
    bad = replace(headers[3], ticket=ticket).signed(smith.key)
    outs = chain.submit_headers(headers[:3] + [bad] + headers[4:])
    assert [o.status for o in outs] == ["header-ok"] * 3 + ["invalid"] and outs[-1].code == "bad-ticket"
    got = chain.store.count_by_status()
    assert sum(got.values()) == sum(rows.values()) + 3       # the paid prefix only; the bad header is not kept


@pytest.mark.slow
def test_a_real_node_refuses_ticketless_posts_and_announcements(tmp_path):
    node = NodeProc(tmp_path / "d", *TINY_TEST_ARGS).start()
    try:
        g = genesis_header(SPEC)
        rng = random.Random(2)
        with client_from("127.0.9.2", node.url) as c:
            junk = unpaid(g, rng)
            r = post(c, junk.header)
            assert r.status_code == 400 and r.json()["error"] == "bad-ticket", r.text
            assert node.get(f"/blocks/{junk.hash}").status_code == 404             # not stored
        # announcements from a known peer: a ticketless header is dropped before anything is fetched from the
        # peer; a paid one is fetched (the control: the announcement path works)
        with ExitStack() as stack:
            origin, = peers_on(node, ["127.0.9.3"], stack)
            ticketless, paid = unpaid(g, rng), junk_block(SPEC, g, rng)
            with client_from("127.0.9.3", node.url) as c:
                announce(c, ticketless.header, origin.url)
                announce(c, paid.header, origin.url)
            wait_for(lambda: origin.fetched(paid.hash) > 0, timeout=30, what="the paid header fetched")
            assert origin.fetched(ticketless.hash) == 0
        assert node.get(f"/blocks/{ticketless.hash}").status_code == 404
        assert node.get("/health").status_code == 200
    finally:
        node.stop()
