"""Header cheats: nonces, difficulty, height, time, signatures.

Most start from ``honest.next`` -- a real proof for the tip -- and change one
field, re-signing with the honest key (the miner itself cheating) unless the
test is about signatures. Every rejection here happens before any tensor work.
(Re-signing someone else's proof with another key -- theft -- is the attack
suite's: tests/adversarial/test_attacks.py.)
"""
from __future__ import annotations

from dataclasses import replace

import pytest

from consensus import errors
from consensus.block import Block, BlockHeader
from consensus.difficulty import median_time_past

from .conftest import CHEATER_KEY, HONEST_KEY, signed, snapshot


@pytest.fixture
def nxt(honest):
    return honest.next


# -- nonces ---------------------------------------------------------------------------
@pytest.mark.parametrize("case", ["none", "one-too-many", "far-too-many"])
def test_bad_nonce_count(case, chain, nxt, attack):
    """A block has its winning step and at most J advance steps: 1..J+1 nonces."""
    most = chain.spec.proof.max_advance_steps + 1
    nonces = {"none": (), "one-too-many": tuple(range(most + 1)), "far-too-many": tuple(range(256))}[case]
    attack(signed(nxt.header, HONEST_KEY, nonces=nonces), nxt.records, "bad-nonces", errors.InvalidBlock)


@pytest.mark.parametrize("value", [-1, 1 << 64, 1.5, "7", None, True])
def test_nonce_outside_u64_is_malformed_at_parse(nxt, value):
    d = nxt.header.to_dict()
    d["nonces"] = [*d["nonces"][:-1], value]
    with pytest.raises(errors.Malformed):
        BlockHeader.from_dict(d)


def test_overlong_nonce_list_is_malformed_at_parse(nxt):
    d = nxt.header.to_dict()
    d["nonces"] = list(range(257))
    with pytest.raises(errors.Malformed):
        BlockHeader.from_dict(d)


@pytest.mark.parametrize("field,value", [("batch", [1, 2, 3, 4]), ("weights_hash", "ab" * 32), ("acc_before", 1)])
def test_v1_header_fields_are_malformed(nxt, field, value):
    """A v1 header (batch, weights_hash, acc_before) is no v2 header: an unknown field is malformed."""
    with pytest.raises(errors.Malformed, match="unknown"):
        BlockHeader.from_dict({**nxt.header.to_dict(), field: value})


# -- difficulty, height, chain, version ----------------------------------------------
@pytest.mark.parametrize("delta", [+1, -1])
def test_wrong_difficulty(delta, chain, nxt, attack):
    """k one step off the retarget rule's value (inside the spec's range): bad-difficulty."""
    k = nxt.header.difficulty + delta
    attack(signed(nxt.header, HONEST_KEY, difficulty=k), nxt.records, "bad-difficulty", errors.InvalidBlock)


@pytest.mark.parametrize("k", [0, 41, 1 << 40])
def test_difficulty_outside_spec_range(k, chain, nxt, attack):
    attack(signed(nxt.header, HONEST_KEY, difficulty=k), nxt.records, "bad-difficulty", errors.InvalidBlock)


def test_wrong_height(chain, nxt, attack):
    attack(signed(nxt.header, HONEST_KEY, height=nxt.header.height + 1), nxt.records, "bad-height",
           errors.InvalidBlock)


def test_other_chain_and_version(chain, nxt, attack):
    """Another chain's id (the research preset's among them), a v1, v2 or v3 or a future version number."""
    from consensus.spec import preset
    for chain_id in ("ab" * 32, preset("dgg-paper").chain_id):
        attack(signed(nxt.header, HONEST_KEY, chain_id=chain_id), nxt.records, "bad-chain-id", errors.InvalidBlock)
    for version in (1, 2, 3, 5):
        attack(signed(nxt.header, HONEST_KEY, version=version), nxt.records, "bad-version", errors.InvalidBlock)


# -- time ----------------------------------------------------------------------------
def test_future_timestamp_ignored_without_ban(node, honest):
    """Beyond the allowed clock drift: time-too-new is *ignored for now* (nothing stored, the
    sender is not banned); once the local clock catches up the same block is accepted. (The block
    is mined for its timestamp: R depends on the redraw epoch of the timestamp.)"""
    from tests.conftest import mine_block

    svc = node.service
    chain = svc.chain
    # the node's clock, an hour after the tip: the block (its R and floor, by its redraw epoch) is the
    # same whatever the wall clock says
    now_ms = chain.tip().header.timestamp_ms + 3_600_000
    chain.clock = lambda: now_ms / 1000
    drift = chain.spec.time.max_future_ms
    ts = now_ms + drift + 60_000
    future = mine_block(chain.spec, honest.dataset, chain.tip().header, honest.tip_model, chain.view, HONEST_KEY,
                        now_ms=ts, records=()).header
    assert future.timestamp_ms == ts
    peer, other = "http://10.9.9.1:8000", "http://10.9.9.2:8000"
    svc.network.book.add(peer)
    svc.network.book.add(other)
    before = snapshot(chain)
    out = svc.submit_remote(Block(future, []), peer)
    assert (out.status, out.code) == ("ignored", "time-too-new")
    assert issubclass(errors.all_reason_codes()[out.code], errors.Ignored)
    assert chain.store.status(future.hash) is None, "an ignored block must leave no trace"
    assert not svc.network.book.is_banned(peer)
    assert snapshot(chain) == before
    # contrast: a provably invalid block from another peer does get that peer banned
    bad = signed(honest.next.header, HONEST_KEY, difficulty=honest.next.header.difficulty + 1)
    assert svc.submit_remote(Block(bad, honest.next.records), other).code == "bad-difficulty"
    assert svc.network.book.is_banned(other) and not svc.network.book.is_banned(peer)
    # later: the clock has moved past the timestamp; the block is valid after all
    chain.clock = lambda: (ts + 1) / 1000
    out = svc.submit_remote(Block(future, []), peer)
    assert out.status == "accepted" and out.new_tip, out


def test_timestamp_not_after_the_parent_or_median_time_past(chain, nxt, attack):
    """timestamp <= the parent's (v4), or <= median of the last 11 blocks: time-too-old. (The honest block
    itself is stamped after its parent: a block 1 ms after it, in the same redraw epoch, is accepted in
    test_proof_cheats' sibling tests.)"""
    tip = chain.tip().header
    mtp = median_time_past(chain.spec, tip, chain.view)
    assert mtp < tip.timestamp_ms < nxt.header.timestamp_ms
    for ts in (tip.timestamp_ms, tip.timestamp_ms - 1, mtp + 1, mtp, mtp - 10_000):
        attack(signed(nxt.header, HONEST_KEY, timestamp_ms=ts), nxt.records, "time-too-old", errors.InvalidBlock)
    out = chain.submit(Block(nxt.header, nxt.records))
    assert out.status == "accepted" and out.new_tip


# -- signatures -------------------------------------------------------------------------
def test_field_changed_after_signing(chain, nxt, attack):
    """Any field edited after signing (the time, the nonces, the claims, the records root): bad-signature."""
    h = nxt.header
    for change in ({"timestamp_ms": h.timestamp_ms + 1}, {"acc_after": h.acc_after + 1},
                   {"nonces": (*h.nonces[:-1], h.nonces[-1] ^ 1)}, {"nonces": h.nonces[-1:]},
                   {"state_hash": "5a" * 32}, {"records_root": "5a" * 32}):
        if replace(h, **change) == h:      # one nonce only: dropping the advance steps changes nothing
            continue
        attack(replace(h, **change), nxt.records, "bad-signature", errors.InvalidBlock)


def test_signature_over_other_fields(chain, nxt, attack):
    """A genuine signature of the honest key, but over a different header."""
    other = signed(nxt.header, HONEST_KEY, timestamp_ms=nxt.header.timestamp_ms + 5)
    attack(replace(nxt.header, signature=other.signature), nxt.records, "bad-signature", errors.InvalidBlock)


def test_signature_by_another_key_under_honest_name(chain, nxt, attack):
    """The cheater signs but leaves the honest miner's key in the header."""
    cheater_sig = signed(nxt.header, CHEATER_KEY).signature
    attack(replace(nxt.header, signature=cheater_sig), nxt.records, "bad-signature", errors.InvalidBlock)


@pytest.mark.parametrize("miner,sig", [("", ""), ("zz" * 32, "00" * 64), ("00" * 31, "00" * 64),
                                       ("00" * 32, "xyz"), ("00" * 32, "00" * 65)])
def test_malformed_key_or_signature(miner, sig, chain, nxt, attack):
    attack(replace(nxt.header, miner=miner, signature=sig), nxt.records, "bad-signature", errors.InvalidBlock)

