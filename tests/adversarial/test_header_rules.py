"""Header cheats: batch indices, difficulty, height, time, signatures, stolen proofs.

Most start from ``honest.next`` -- a real proof for the tip -- and change one
field, re-signing with the honest key (the miner itself cheating) unless the
test is about signatures. Every rejection here happens before any tensor work.
"""
from __future__ import annotations

import time
from dataclasses import replace

import pytest

from consensus import errors
from consensus.block import BlockHeader
from consensus.difficulty import median_time_past

from .conftest import snapshot
from .forge import HONEST_KEY, THIEF_KEY, signed


@pytest.fixture
def nxt(honest):
    return honest.next


# -- batch indices ----------------------------------------------------------------
@pytest.mark.parametrize("case", ["out-of-range", "negative", "repeated", "too-few", "too-many"])
def test_bad_batch_indices(case, chain, nxt, attack):
    b = list(nxt.header.batch)
    n = chain.spec.dataset.train_size
    batch = {"out-of-range": b[:-1] + [n], "negative": b[:-1] + [-1], "repeated": b[:-1] + [b[0]],
             "too-few": b[:-1], "too-many": b + [(max(b) + 1) % n]}[case]
    attack(signed(nxt.header, HONEST_KEY, batch=tuple(batch)), nxt.body, "bad-batch-indices", errors.InvalidBlock)


def test_overlong_batch_is_malformed_at_parse(nxt):
    d = nxt.header.to_dict()
    d["batch"] = list(range(1025))
    with pytest.raises(errors.Malformed):
        BlockHeader.from_dict(d)


# -- difficulty, height, chain, version ----------------------------------------------
@pytest.mark.parametrize("delta", [+1, -1])
def test_wrong_difficulty(delta, chain, nxt, attack):
    """k one step off the retarget rule's value (inside the spec's range): bad-difficulty."""
    k = nxt.header.difficulty + delta
    attack(signed(nxt.header, HONEST_KEY, difficulty=k), nxt.body, "bad-difficulty", errors.InvalidBlock)


@pytest.mark.parametrize("k", [0, 41, 1 << 40])
def test_difficulty_outside_spec_range(k, chain, nxt, attack):
    attack(signed(nxt.header, HONEST_KEY, difficulty=k), nxt.body, "bad-difficulty", errors.InvalidBlock)


def test_wrong_height(chain, nxt, attack):
    attack(signed(nxt.header, HONEST_KEY, height=nxt.header.height + 1), nxt.body, "bad-height",
           errors.InvalidBlock)


def test_other_chain_and_version(chain, nxt, attack):
    attack(signed(nxt.header, HONEST_KEY, chain_id="ab" * 32), nxt.body, "bad-chain-id", errors.InvalidBlock)
    attack(signed(nxt.header, HONEST_KEY, version=2), nxt.body, "bad-version", errors.InvalidBlock)


# -- time ----------------------------------------------------------------------------
def test_future_timestamp_ignored_without_ban(node, honest):
    """Beyond the allowed clock drift: time-too-new is *ignored for now* (nothing stored, the
    sender is not banned); once the local clock catches up the same block is accepted."""
    svc = node.service
    chain = svc.chain
    drift = chain.spec.time.max_future_ms
    future = signed(honest.next.header, HONEST_KEY, timestamp_ms=int(time.time() * 1000) + drift + 60_000)
    peer, other = "http://10.9.9.1:8000", "http://10.9.9.2:8000"
    svc.network.book.add(peer)
    svc.network.book.add(other)
    before = snapshot(chain)
    out = svc.submit_remote(future, [], honest.next.body, peer)
    assert (out.status, out.code) == ("ignored", "time-too-new")
    assert issubclass(errors.all_reason_codes()[out.code], errors.Ignored)
    assert chain.store.status(future.hash) is None, "an ignored block must leave no trace"
    assert not svc.network.book.is_banned(peer)
    assert snapshot(chain) == before
    # contrast: a provably invalid block from another peer does get that peer banned
    bad = signed(honest.next.header, HONEST_KEY, difficulty=honest.next.header.difficulty + 1)
    assert svc.submit_remote(bad, [], honest.next.body, other).code == "bad-difficulty"
    assert svc.network.book.is_banned(other) and not svc.network.book.is_banned(peer)
    # later: the clock has moved past the timestamp; the block is valid after all
    chain.clock = lambda: time.time() + 120
    out = svc.submit_remote(future, [], honest.next.body, peer)
    assert out.status == "accepted", out


def test_timestamp_not_after_median_time_past(chain, nxt, attack):
    """timestamp <= median of the last 11 blocks: time-too-old; one ms later it is fine."""
    tip = chain.tip().header
    mtp = median_time_past(chain.spec, tip, chain.view)
    assert mtp < tip.timestamp_ms
    attack(signed(nxt.header, HONEST_KEY, timestamp_ms=mtp), nxt.body, "time-too-old", errors.InvalidBlock)
    attack(signed(nxt.header, HONEST_KEY, timestamp_ms=mtp - 10_000), nxt.body, "time-too-old",
           errors.InvalidBlock)
    out = chain.submit(signed(nxt.header, HONEST_KEY, timestamp_ms=mtp + 1), [], nxt.body)
    assert out.status == "accepted" and out.new_tip


# -- signatures -------------------------------------------------------------------------
def test_field_changed_after_signing(chain, nxt, attack):
    """Any field edited after signing (here the time, the batch, the claim): bad-signature."""
    h = nxt.header
    for change in ({"timestamp_ms": h.timestamp_ms + 1}, {"acc_after": h.acc_after + 1},
                   {"batch": tuple(reversed(h.batch))}):
        attack(replace(h, **change), nxt.body, "bad-signature", errors.InvalidBlock)


def test_signature_over_other_fields(chain, nxt, attack):
    """A genuine signature of the honest key, but over a different header."""
    other = signed(nxt.header, HONEST_KEY, timestamp_ms=nxt.header.timestamp_ms + 5)
    attack(replace(nxt.header, signature=other.signature), nxt.body, "bad-signature", errors.InvalidBlock)


def test_signature_by_another_key_under_honest_name(chain, nxt, attack):
    """The thief signs but leaves the honest miner's key in the header."""
    thief_sig = signed(nxt.header, THIEF_KEY).signature
    attack(replace(nxt.header, signature=thief_sig), nxt.body, "bad-signature", errors.InvalidBlock)


@pytest.mark.parametrize("miner,sig", [("", ""), ("zz" * 32, "00" * 64), ("00" * 31, "00" * 64),
                                       ("00" * 32, "xyz"), ("00" * 32, "00" * 65)])
def test_malformed_key_or_signature(miner, sig, chain, nxt, attack):
    attack(replace(nxt.header, miner=miner, signature=sig), nxt.body, "bad-signature", errors.InvalidBlock)


def test_stolen_proof_resigned_is_a_valid_block(chain, nxt):
    """LIMITATION (docs/security.md, "Proof not bound to the miner"): R depends only on the
    parent, so a thief who sees (W, P) before it spreads can sign it as its own. The re-signed
    header is a *different* block (the hash covers key and signature) and it is valid. Equal
    work: the first seen wins, so the proof goes to whoever propagates first."""
    stolen = signed(nxt.header, THIEF_KEY)
    assert stolen.hash != nxt.header.hash and stolen.miner != nxt.header.miner
    out = chain.submit(stolen, [], nxt.body, "http://thief.invalid:1")
    assert out.status == "accepted" and out.new_tip
    out = chain.submit(nxt.header, [], nxt.body, "http://honest.invalid:1")
    assert out.status == "accepted" and not out.new_tip       # valid, but second: a fork
    assert chain.tip().hash == stolen.hash
    assert chain.store.get(nxt.header.hash).status == "valid"


def test_stolen_proof_loses_when_honest_block_came_first(chain, nxt):
    """The converse: once the honest block is known, the thief's copy is only a valid fork
    block and never takes the tip (same work, seen later)."""
    assert chain.submit(nxt.header, [], nxt.body).new_tip
    out = chain.submit(signed(nxt.header, THIEF_KEY), [], nxt.body, "http://thief.invalid:1")
    assert out.status == "accepted" and not out.new_tip
    assert chain.tip().hash == nxt.header.hash
