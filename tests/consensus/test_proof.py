"""consensus/proof.py: what binds a v2 proof to the chain and its miner.

Batches from (chain, parent, miner key, nonce); the redraw epoch; R's seed from the parent's
post-state, height and epoch, never from what the parent's miner can re-sign freely (timestamp,
records, claims). Each derivation is checked against an independent write-up of docs/protocol.md
and pinned, and its properties are tested.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from types import SimpleNamespace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from consensus.block import genesis_header
from consensus.hashing import ZERO_HASH, sha256_hex
from consensus.proof import derive_batch, r_seed, redraw_epoch, requirements_for
from consensus.spec import ChainSpec, preset

from .util import resign

SPEC = preset("tiny")
RESNET = preset("cifar10-resnet18")
SETTINGS = settings(max_examples=60, deadline=None)
hashes = st.binary(min_size=32, max_size=32).map(bytes.hex)
u64 = st.integers(0, (1 << 64) - 1)


def reference_batch(spec, parent: str, miner: str, epoch: int, nonce: int) -> list[int]:
    """docs/protocol.md, "Proof": written out independently of consensus/proof.py."""
    n, s = spec.dataset.train_size, spec.training.batch_size
    inputs = (bytes.fromhex(spec.chain_id) + bytes.fromhex(parent) + bytes.fromhex(miner) + epoch.to_bytes(8, "big")
              + nonce.to_bytes(8, "big"))
    prefix = b"polchain-batch/4" + hashlib.scrypt(inputs, salt=b"polchain-batch/4", n=2 ** spec.proof.batch_work,
                                                  r=8, p=1, maxmem=1 << 27, dklen=32)
    out: list[int] = []
    counter = 0
    while len(out) < s:
        digest = hashlib.sha256(prefix + counter.to_bytes(4, "big")).digest()
        counter += 1
        for j in range(4):
            d = int.from_bytes(digest[8 * j: 8 * j + 8], "big")
            if d >= 2 ** 64 - 2 ** 64 % n or d % n in out:
                continue
            out.append(d % n)
            if len(out) == s:
                break
    return out


def reference_seed(spec, state_hash: str, height: int, epoch: int) -> str:
    return hashlib.sha256(b"polchain-R-seed/2" + bytes.fromhex(spec.chain_id) + bytes.fromhex(state_hash)
                          + height.to_bytes(8, "big") + epoch.to_bytes(8, "big")).hexdigest()


# == batches ===================================================================================
PINNED_V4 = ((0, 0, (2889, 2928, 2031, 3522)), (0, (1 << 64) - 1, (7481, 644, 681, 8823)), (7, 0, (7789, 4617, 9546, 726)))   # (epoch, nonce, batch); scrypt is RFC 7914 (OpenSSL)

def test_pinned_batches_and_seed():
    """The derivations must never drift. Pinned on a stand-in spec (derive_batch reads the chain id,
    the train-set size and S; r_seed the chain id), so a change of a preset (a new chain id) does not
    move the pins, only a change of the derivation does."""
    spec = SimpleNamespace(chain_id=sha256_hex(b"pinned chain"), dataset=SimpleNamespace(train_size=10_000),
                           training=SimpleNamespace(batch_size=4), proof=SimpleNamespace(batch_work=6))
    p, m = sha256_hex(b"parent"), sha256_hex(b"miner")
    for epoch, nonce, batch in PINNED_V4:                                          # v4: scrypt N = 2^6, the epoch in it
        assert derive_batch(spec, p, m, epoch, nonce) == batch
    assert r_seed(spec, p, 7, 3) == "082eeceb83ad3801bbc1ab579dfdf19ef20e2c3c5f9e17e707684fb475a50f88"


def test_scrypt_is_rfc_7914():
    """The batch derivation's memory-hard half is scrypt as RFC 7914 specifies it (its test vector 3),
    so an independent implementation reproduces every batch."""
    assert hashlib.scrypt(b"password", salt=b"NaCl", n=1024, r=8, p=16, dklen=64).hex() == (
        "fdbabe1c9d3472007856e7190d01e9fe7c6ad7cbc8237830e77376634b3731622eaf30d92e22a3886ff109279d9830dac727afb94a83ee6d8360cbdfa2cc0640")


def test_batch_work_is_part_of_the_spec_and_bounded():
    assert (SPEC.proof.batch_work, RESNET.proof.batch_work) == (6, 12)
    d = json.loads(SPEC.to_json())
    d["proof"]["batch_work"] = 17
    with pytest.raises(ValueError, match=r"proof.batch_work = 17 outside 1..16"):
        ChainSpec.from_dict(d)


@SETTINGS
@given(parent=hashes, miner=hashes, epoch=st.integers(0, 1000), nonce=u64, spec=st.sampled_from([SPEC, RESNET]))
def test_batch_is_s_distinct_indices_in_range(parent, miner, epoch, nonce, spec):
    b = derive_batch(spec, parent, miner, epoch, nonce)
    assert len(b) == spec.training.batch_size == len(set(b))
    assert all(0 <= i < spec.dataset.train_size for i in b)
    assert b == derive_batch(spec, parent, miner, epoch, nonce)               # deterministic
    assert list(b) == reference_batch(spec, parent, miner, epoch, nonce)


def test_distinct_even_when_the_set_is_tiny():
    """S = 4 of a 5-image train split: duplicates are skipped, never returned (the draw is rejection
    sampled below the largest multiple of n, so also without modulo bias)."""
    small = dataclasses.replace(SPEC, dataset=dataclasses.replace(SPEC.dataset, train_size=5))
    seen = set()
    for nonce in range(200):
        b = derive_batch(small, ZERO_HASH, sha256_hex(b"m"), 0, nonce)
        assert sorted(b) == sorted(set(b)) and len(b) == 4 and all(0 <= i < 5 for i in b)
        seen.add(b)
    assert len(seen) > 60          # of the 120 ordered choices, most occur: nonces select among them


@SETTINGS
@given(parent=hashes, other=hashes, miner=hashes, other_miner=hashes, nonce=u64)
def test_batch_depends_on_parent_miner_epoch_and_nonce(parent, other, miner, other_miner, nonce):
    """Any one input changed gives another batch (a collision of two 4-of-10,000 draws is ~1e-16): the
    epoch too (v4), so one step is a candidate for one epoch's R only."""
    b = derive_batch(SPEC, parent, miner, 0, nonce)
    if other != parent:
        assert derive_batch(SPEC, other, miner, 0, nonce) != b
    if other_miner != miner:
        assert derive_batch(SPEC, parent, other_miner, 0, nonce) != b               # a thief's key
    assert derive_batch(SPEC, parent, miner, 0, nonce ^ 1) != b
    assert derive_batch(SPEC, parent, miner, 1, nonce) != b                          # another redraw epoch
    assert derive_batch(RESNET, parent, miner, 0, nonce) != b                       # another chain


def test_batch_indices_are_uniform():
    """8,000 indices over 16 equal bins of the 10,000-image split: chi-square (15 dof) below 50
    (p < 1e-5 for a uniform source)."""
    bins = [0] * 16
    m = sha256_hex(b"uniform")
    for nonce in range(2000):
        for i in derive_batch(SPEC, ZERO_HASH, m, nonce % 3, nonce):
            bins[i * 16 // SPEC.dataset.train_size] += 1
    expected = sum(bins) / 16
    assert sum((b - expected) ** 2 / expected for b in bins) < 50, bins


# == the redraw epoch ===============================================================================
def test_redraw_epoch():
    t0, iv = 1_000_000, SPEC.proof.redraw_interval_ms
    assert iv == 30_000
    assert [redraw_epoch(SPEC, t0, t0 + d) for d in (1, iv - 1, iv, 2 * iv - 1, 2 * iv, 10 * iv + 5)] == \
        [0, 0, 1, 1, 2, 10]
    # a timestamp at or before the parent's (allowed while above the median time past) is epoch 0
    assert redraw_epoch(SPEC, t0, t0) == redraw_epoch(SPEC, t0, t0 - 5 * iv) == 0
    never = dataclasses.replace(SPEC, proof=dataclasses.replace(SPEC.proof, redraw_interval_ms=0))
    assert redraw_epoch(never, t0, t0 + 10 ** 12) == 0


# == R's seed ===============================================================================
@SETTINGS
@given(state=hashes, height=st.integers(0, (1 << 63) - 1), epoch=st.integers(0, 1 << 40))
def test_r_seed_matches_the_reference(state, height, epoch):
    assert r_seed(SPEC, state, height, epoch) == reference_seed(SPEC, state, height, epoch)


def test_r_seed_depends_on_state_height_epoch_and_chain():
    s = r_seed(SPEC, ZERO_HASH, 5, 0)
    assert len({s, r_seed(SPEC, sha256_hex(b"other state"), 5, 0), r_seed(SPEC, ZERO_HASH, 6, 0),
                r_seed(SPEC, ZERO_HASH, 5, 1), r_seed(RESNET, ZERO_HASH, 5, 0)}) == 5


@pytest.fixture(scope="module")
def parent(miner_key):
    """A signed height-1 header: its state_hash stands for its post-state."""
    g = genesis_header(SPEC)
    return resign(dataclasses.replace(g, height=1, parent=g.hash, timestamp_ms=g.timestamp_ms + 2000, nonces=(1, 2),
                                      state_hash=sha256_hex(b"post-state"), acc_after=77), miner_key)


def test_r_is_independent_of_what_the_parents_miner_can_re_sign(parent, miner_key, other_key):
    """R for a child of P at P's timestamp + d: unchanged when P's miner re-signs P with another
    timestamp, records root or accuracy claim (or someone else signs it), as long as the child sits
    at the same distance from P (the same epoch). Only P's post-state, height or the epoch move it."""
    k, n = 8, 6_088              # n: the size of tiny's R index space
    d = 2000
    reqs = requirements_for(SPEC, parent, parent.timestamp_ms + d, k, n)
    for changes in ({"timestamp_ms": parent.timestamp_ms + 1234}, {"records_root": sha256_hex(b"records")},
                    {"acc_after": 3}, {"nonces": (9,)}, {}):
        for key in (miner_key, other_key):
            sibling = resign(parent, key, **changes)
            assert sibling.hash != parent.hash or not changes and key is miner_key
            assert requirements_for(SPEC, sibling, sibling.timestamp_ms + d, k, n) == reqs
    moved = {"state_hash": sha256_hex(b"another post-state")}, {"height": 2}
    for changes in moved:
        assert requirements_for(SPEC, resign(parent, miner_key, **changes), parent.timestamp_ms + d, k, n) != reqs
    later = parent.timestamp_ms + SPEC.proof.redraw_interval_ms + d
    assert requirements_for(SPEC, parent, later, k, n) != reqs
    assert requirements_for(SPEC, parent, parent.timestamp_ms + SPEC.proof.redraw_interval_ms - 1, k, n) == reqs


def test_requirements_for_never_draws_the_head(parent, replayer):
    """R's index space excludes the label-predictable ``linear.`` head and ``bn3.``, in every epoch."""
    r = replayer()
    head = {i for (name, p), start in zip(r.model.named_parameters(), r.index.starts)
            if name.startswith(("linear.", "bn3.")) for i in range(start, start + p.numel())}
    assert len(head) == 32 * 10 + 10 + 2 * 32 and r.r_space.size == r.index.total - len(head)
    drawn = set()
    for epoch in range(300):
        ts = parent.timestamp_ms + epoch * SPEC.proof.redraw_interval_ms
        drawn |= {q.index for q in requirements_for(SPEC, parent, ts, 40, r.r_space)}
    assert not drawn & head
    assert len(drawn) > 0.8 * r.r_space.size          # 12,000 draws do cover the rest
