"""Resource attacks: header spam, orphan floods, announcements whose bodies never come.

None of these can make an invalid block valid; the questions are whether the
node stays bounded (memory, storage, time) and responsive, and whether the
honest chain is left alone.
"""
from __future__ import annotations

import json
import random
import time
from dataclasses import replace

import pytest

from consensus.block import Block, BlockHeader
from node import orphans as orphan_pool
from node.store import HEADER_ONLY, INVALID

from tests.blocks import BlockSmith
from tests.p2p.util import SilentPeer

from .conftest import CHEATER_KEY, assert_unharmed, snapshot


def spam_header(chain, on: BlockHeader, rng: random.Random, **changes) -> BlockHeader:
    """A well-formed header on ``on`` signed by the cheater: random nonces, a made-up post-state,
    a claimed improvement; nothing behind it (tests.blocks.BlockSmith.junk)."""
    return BlockSmith(chain.spec, None, CHEATER_KEY).junk(on, rng, chain.view, **changes)


# -- header spam ------------------------------------------------------------------------
def _header_only_chain(chain, n: int):
    """n signed headers on the tip, 1 ms apart (so k climbs at every retarget), no bodies."""
    rng = random.Random(5)
    parent = chain.tip().header
    headers, times = [], []
    for i in range(n):
        h = spam_header(chain, parent, rng)
        t0 = time.perf_counter()
        out = chain.submit_header(h, "http://spammer.invalid:1")
        times.append(time.perf_counter() - t0)
        assert out.status == "header-ok", out
        headers.append(h)
        parent = h
    return headers, times


def test_header_only_chain_with_more_claimed_work_never_becomes_tip(chain):
    """Headers-only validation cannot check R, so a spammer can sign a long header chain whose
    k climbs (timestamps 1 ms apart) and that *claims* far more work than the honest chain. The
    node stores it header-only and never switches its tip to it; the first body that arrives
    is replayed, fails, and the whole header chain is marked invalid with it."""
    before = snapshot(chain)
    replays = chain.replays
    headers, times = _header_only_chain(chain, 60)
    assert chain.replays == replays, "a header check replayed a proof"     # cheap: no tensor work
    leaf = chain.store.get(headers[-1].hash)
    assert leaf.status == HEADER_ONLY and headers[-1].difficulty > headers[0].difficulty
    assert leaf.cumulative_work > 10 * chain.tip().cumulative_work         # claims >> real work
    assert_unharmed(chain, before)
    assert chain.store.best_candidate().hash == before.tip
    print("FIGURES", json.dumps({"test": "header-spam", "headers": len(times),
                                 "median_s": round(sorted(times)[len(times) // 2], 4), "max_s": round(max(times), 4)}))
    # every stored row is bounded by the spec's header cap
    assert all(len(h.encode()) <= chain.spec.limits.max_header_bytes for h in headers)
    # the first body (its records: none): the replay of its nonces does not produce what the
    # header claims -> invalid, and so is every descendant
    first = headers[0]
    out = chain.submit(Block(first, []), "http://spammer.invalid:1")
    assert out.status == "invalid" and out.code in ("requirements-not-met", "state-mismatch"), out
    assert chain.replays == replays + 1
    statuses = [chain.store.get(h.hash) for h in headers]
    assert all(s.status == INVALID for s in statuses)
    assert all(s.reason == "bad-parent" for s in statuses[1:])
    assert_unharmed(chain, before)


def test_junk_header_flood_is_cheap_and_bounded(chain, honest):
    """200 headers with broken signatures (and 20 oversized ones): rejected before any tensor
    work, in milliseconds each (the cost is the SQLite write of the verdict); the oversized
    ones leave nothing stored."""
    before = snapshot(chain)
    replays = chain.replays
    nxt = honest.next.header
    t0 = time.perf_counter()
    for i in range(200):
        out = chain.submit_header(replace(nxt, timestamp_ms=nxt.timestamp_ms + i + 1), "http://junk.invalid:1")
        assert out.code == "bad-signature"
    per_header = (time.perf_counter() - t0) / 200
    big = [replace(nxt, miner="00" * 5000, timestamp_ms=nxt.timestamp_ms + i) for i in range(20)]
    for h in big:
        assert chain.submit_header(h).code == "malformed"
    assert all(chain.store.get(h.hash) is None for h in big)
    assert chain.replays == replays, "a junk header got as far as a replay"   # rejected before any tensor work
    print("FIGURES", json.dumps({"test": "junk-headers", "ms_per_header": round(per_header * 1000, 2)}))
    assert_unharmed(chain, before)


# -- orphans -------------------------------------------------------------------------------
@pytest.mark.slow      # thousands of orphans through the pipeline
def test_orphan_flood_is_bounded_and_honest_orphans_still_connect(chain, honest):
    """Signed blocks on unknown parents, each with records: the pool keeps at most ORPHAN_LIMIT;
    the oldest go first. An honest orphan that arrives after the flood still connects when its
    parent does."""
    before = snapshot(chain)
    rng = random.Random(6)
    tip = chain.tip().header
    flood = [spam_header(chain, tip, rng, parent=f"{i:064x}", height=100 + i)
             for i in range(2 * orphan_pool.ORPHAN_LIMIT + 8)]
    for h in flood:
        out = chain.submit(Block(h, honest.next.records), "http://flood.invalid:1")
        assert (out.status, out.code) == ("orphan", "unknown-parent")
        assert len(chain.orphans) <= orphan_pool.ORPHAN_LIMIT
    assert list(chain.orphans) == [h.hash for h in flood[-orphan_pool.ORPHAN_LIMIT:]]    # the newest kept
    assert len(chain.missing_orphan_parents()) <= orphan_pool.ORPHAN_LIMIT
    assert_unharmed(chain, before)
    # nothing from the flood was written to the store
    assert chain.store.count_by_status().get(INVALID, 0) == 0
    # the honest orphan (child of `next`) arrives, then its parent: both connect
    an = honest.after_next
    assert chain.submit(Block(an.header, an.records)).status == "orphan"
    out = chain.submit(Block(honest.next.header, honest.next.records))
    assert out.status == "accepted" and out.connected == [an.header.hash]
    assert chain.tip().hash == an.header.hash


def test_orphan_pool_is_bounded_in_bytes(chain, honest):
    """Orphans carrying the most records a POST /blocks can hold: the pool stays under ORPHAN_BYTES
    (fewer than ORPHAN_LIMIT blocks), the newest kept; a block larger than the byte cap alone is
    not held; an honest orphan still connects."""
    from node.app import blocks_body_cap
    rng = random.Random(7)
    tip = chain.tip().header
    cap = blocks_body_cap(chain.spec, 1 << 30)
    fat = [{"type": "model-certificate", "pad": "x" * 4000}] * (cap // 4100)     # one request's worth
    size = len(json.dumps(fat))
    n = orphan_pool.ORPHAN_BYTES // size + 8
    assert n < orphan_pool.ORPHAN_LIMIT
    flood = [spam_header(chain, tip, rng, parent=f"{i:064x}", height=100 + i) for i in range(n)]
    for h in flood:
        assert chain.submit(Block(h, fat), "http://flood.invalid:1").status == "orphan"
        assert chain.orphans.size_bytes() <= orphan_pool.ORPHAN_BYTES
    kept = list(chain.orphans)
    assert 0 < len(kept) < n and kept == [h.hash for h in flood[-len(kept):]]
    assert chain.orphans.size_bytes() > orphan_pool.ORPHAN_BYTES - 2 * size
    huge = spam_header(chain, tip, rng, parent="ff" * 32, height=500)
    assert chain.submit(Block(huge, [{"pad": "x" * orphan_pool.ORPHAN_BYTES}])).status == "orphan"
    assert huge.hash not in chain.orphans and list(chain.orphans) == kept
    an = honest.after_next
    assert chain.submit(Block(an.header, an.records)).status == "orphan"
    out = chain.submit(Block(honest.next.header, honest.next.records))
    assert out.status == "accepted" and out.connected == [an.header.hash]
    assert chain.orphans.size_bytes() <= orphan_pool.ORPHAN_BYTES


# -- bodies that never arrive -----------------------------------------------------------------
@pytest.fixture
def silent_peer():
    p = SilentPeer()
    yield p
    p.close()


def test_announcements_from_a_peer_that_never_answers(node, honest, silent_peer):
    """Headers announced with X-Polchain-Origin pointing at a peer that accepts connections and
    never answers: every announcement is taken (202) without waiting for the body; the node
    answers /status while a fetch hangs, accepts an honest block meanwhile, and the fetches end
    when the peer drops them, with the peer marked as failing (read timeouts: tests/p2p/test_client.py).
    The fetch hangs for as long as the test wants, so "meanwhile" does not depend on how fast the
    machine is; the latencies are printed as figures."""
    from p2p.client import PeerClient

    svc = node.service
    svc.network.client = PeerClient(timeout=600.0)   # the fetch hangs until the peer drops it
    assert svc.network.book.add(silent_peer.url, source="configured")   # origins are fetched only from known peers
    before = snapshot(svc.chain)
    tip = svc.chain.tip().header
    rng = random.Random(7)
    headers = [spam_header(svc.chain, tip, rng) for _ in range(6)]
    for h in headers:
        r = node.client.post("/blocks", content=h.encode(),
                             headers={"content-type": "application/json", "x-polchain-origin": silent_peer.url})
        assert r.status_code == 202, r.text

    def peer_failed():
        for p in node.client.get("/peers").json():
            if p["url"] == silent_peer.url and (p["failures"] or p["state"] in ("backoff", "banned")):
                return True
        return False
    deadline = time.monotonic() + 60
    while silent_peer.accepted < 1:                  # a fetch is connected to the peer, and hangs
        assert time.monotonic() < deadline, "no fetch from the silent peer"
        time.sleep(0.1)
    lat = []
    for _ in range(20):
        t0 = time.perf_counter()
        assert node.client.get("/status").status_code == 200
        lat.append(time.perf_counter() - t0)
    assert_unharmed(svc.chain, before)
    # an honest block submitted directly is validated meanwhile
    r = node.client.post("/blocks", files={"header": (None, honest.next.header.encode()),
                                           "records": (None, json.dumps(honest.next.records))})
    assert r.status_code == 200 and r.json()["status"] == "accepted", r.text
    assert not peer_failed(), "the fetch ended before the node had answered"   # all of it while the fetch hung
    print("FIGURES", json.dumps({"test": "silent-origin", "status_median_s": round(sorted(lat)[len(lat) // 2], 4),
                                 "status_max_s": round(max(lat), 4)}))
    # the peer drops the hanging fetches: they give up, the silent peer ends up failing or banned, no block stored
    silent_peer.close()
    deadline = time.monotonic() + 60
    while not peer_failed():
        assert time.monotonic() < deadline, "fetches from the silent peer never gave up"
        time.sleep(0.2)
    assert silent_peer.accepted >= 1
    for h in headers:
        assert svc.chain.store.status(h.hash) in (None, HEADER_ONLY)
    assert svc.chain.tip().hash == honest.next.header.hash
