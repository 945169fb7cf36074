"""Requirements R: derivation (exact, pinned, property-tested) over the v2 index space (the
``linear.`` head excluded), the zero-change rule and the validators' band."""
from __future__ import annotations

import dataclasses
import hashlib
import struct

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from consensus import errors
from consensus.block import genesis_header
from consensus.hashing import sha256_hex
from consensus.model import build_model
from consensus.proof import requirements_for
from consensus.requirements import (DECREASE, INCREASE, IndexSpace, Requirement, derive_requirements,
                                    first_failed, requirements_hold, requirements_hold_with_margin, ulp)
from consensus.spec import preset
from consensus.training import genesis_state, r_index_space
from consensus.validation import miner_requirements_ok
from consensus.weights import clone_state, weights_hash

from ..conftest import BLOCK_GAP_MS, MemoryView, low_difficulty
from .util import INVALID, expect, honest_child, resign, trials, validate_block

TINY_PARAMS = 6_418
RESNET_PARAMS = 11_173_962

hashes = st.binary(min_size=32, max_size=32).map(bytes.hex)
SETTINGS = settings(max_examples=60, deadline=None)


def reference_derivation(seed: str, k: int, n: int, eligible=None) -> list[tuple[int, int]]:
    """docs/protocol.md, "Requirements", written out independently of consensus/requirements.py:
    draws over ``n`` eligible weights, eligible weight i being the flat index ``eligible[i]``."""
    out: list[tuple[int, int]] = []
    seen: set[int] = set()
    counter = 0
    while len(out) < k:
        digest = hashlib.sha256(b"polchain-R/1" + bytes.fromhex(seed) + k.to_bytes(4, "big")
                                + counter.to_bytes(8, "big")).digest()
        counter += 1
        for j in range(4):
            d = int.from_bytes(digest[8 * j: 8 * j + 8], "big")
            if d >= 2 ** 64 - 2 ** 64 % (2 * n):
                continue
            r = d % (2 * n)
            if r // 2 in seen:
                continue
            seen.add(r // 2)
            out.append((r // 2 if eligible is None else eligible[r // 2], -1 if r % 2 else +1))
            if len(out) == k:
                break
    return out


# == pinned vectors: the derivation is consensus; it must never drift ====================
def test_pinned_vectors():
    p = sha256_hex(b"polchain")
    assert [(r.index, r.direction) for r in derive_requirements(p, 8, TINY_PARAMS)] == [
        (3055, 1), (6281, 1), (3877, 1), (835, 1), (90, -1), (1107, -1), (2878, 1), (4636, -1)]
    assert [(r.index, r.direction) for r in derive_requirements(p, 12, RESNET_PARAMS)] == [
        (6113007, 1), (9273404, -1), (4490116, 1), (8244155, 1), (1072695, 1), (8612015, -1),
        (5464425, 1), (9993756, 1), (6144404, 1), (2116724, 1), (7776399, -1), (6802827, 1)]


def test_parameter_counts(tiny_spec):
    from consensus.model import build_model, num_params
    assert num_params(build_model("tiny-cnn")) == TINY_PARAMS
    assert num_params(build_model("resnet18-cifar")) == RESNET_PARAMS


# == properties =======================================================================
@SETTINGS
@given(parent=hashes, k=st.integers(1, 64), n=st.integers(1, 1 << 40))
def test_derivation_properties(parent, k, n):
    k = min(k, n)
    reqs = derive_requirements(parent, k, n)
    assert reqs == derive_requirements(parent, k, n)                 # deterministic
    assert len(reqs) == k
    idx = [r.index for r in reqs]
    assert len(set(idx)) == k                                        # distinct (collision avoidance)
    assert all(0 <= i < n for i in idx)
    assert all(r.direction in (INCREASE, DECREASE) for r in reqs)
    assert [(r.index, r.direction) for r in reqs] == reference_derivation(parent, k, n)


@SETTINGS
@given(parent=hashes, n=st.integers(1, 40))
def test_k_equal_to_n_takes_every_weight(parent, n):
    assert sorted(r.index for r in derive_requirements(parent, n, n)) == list(range(n))


@SETTINGS
@given(parent=hashes, n=st.integers(1, 1 << 40), k=st.integers(-3, 0))
def test_k_out_of_range(parent, n, k):
    with pytest.raises(ValueError):
        derive_requirements(parent, k, n)
    with pytest.raises(ValueError):
        derive_requirements(parent, n + 1, n)


segments = st.lists(st.tuples(st.integers(0, 50), st.integers(1, 40)), min_size=1, max_size=5)


@SETTINGS
@given(seed=hashes, k=st.integers(1, 30), gaps=segments)
def test_derivation_over_an_index_space(seed, k, gaps):
    """R over a segmented index space (v2: the parameters outside the excluded prefixes) is the
    derivation over its N eligible weights, each mapped to its flat index."""
    segs, start = [], 0
    for gap, length in gaps:
        segs.append((start + gap, length))
        start += gap + length
    space = IndexSpace(tuple(segs))
    eligible = [i for s0, n in segs for i in range(s0, s0 + n)]
    assert space.size == len(eligible) and [space.flat(i) for i in range(len(eligible))] == eligible
    k = min(k, len(eligible))
    reqs = derive_requirements(seed, k, space)
    assert [(r.index, r.direction) for r in reqs] == reference_derivation(seed, k, len(eligible), eligible)
    assert {r.index for r in reqs} <= set(eligible)
    with pytest.raises(IndexError):
        space.flat(len(eligible))


@pytest.mark.parametrize("name,arch,excluded,head", [
    ("tiny", "tiny-cnn", ("linear.", "bn3."), 330 + 64),
    ("cifar10-resnet18", "resnet18-cifar", ("linear.", "layer4.0.bn2.", "layer4.0.shortcut.1.", "layer4.1.bn2."),
     5130 + 3 * 1024)])
def test_r_index_space_excludes_the_label_predictable_layers(name, arch, excluded, head):
    """The v3 presets exclude the head and the BatchNorm layers whose update signs the batch's labels
    predict (measured per tensor: `polchain bench labels`): R's space is every other parameter, in flat order."""
    named = list(build_model(arch).named_parameters())
    total = sum(p.numel() for _, p in named)
    space = r_index_space(named, preset(name).proof.r_excluded)
    assert preset(name).proof.r_excluded == excluded
    assert space.size == total - head
    starts = {}
    flat = 0
    for n, p in named:
        starts[n] = (flat, p.numel())
        flat += p.numel()
    assert set(space.segments) == {v for n, v in starts.items() if not n.startswith(excluded)}
    assert r_index_space(named, ()).size == total                          # dgg-paper: everything


def test_modulo_bias_is_rejected():
    """With 2|W| = 2^63 + 2 about half of all 64-bit draws are rejected; the reference agrees."""
    n = (1 << 62) + 1
    for i in range(20):
        p = sha256_hex(b"bias %d" % i)
        assert [(r.index, r.direction) for r in derive_requirements(p, 6, n)] == reference_derivation(p, 6, n)


def test_directions_and_indices_are_uniform():
    """Over 4,000 parent hashes (k = 8: 32,000 draws):

    * direction: the share of "increase" is within 0.5 +- 0.015. Its standard error is
      sqrt(0.25 / 32000) = 0.0028, so the bound is 5.3 sigma (false alarm < 1e-7) and
      still catches a bias of 3 % (e.g. a parity taken from a biased bit);
    * index: a chi-square over 16 equal bins of [0, |W|) (15 degrees of freedom) is below
      50 (p < 1e-5 for a uniform source); modulo bias or a wrong bin mapping at this size
      would give thousands.
    """
    for n in (TINY_PARAMS, RESNET_PARAMS):
        dirs, bins = [], [0] * 16
        for i in range(4000):
            for r in derive_requirements(sha256_hex(struct.pack(">I", i)), 8, n):
                dirs.append(r.direction)
                bins[r.index * 16 // n] += 1
        share = dirs.count(INCREASE) / len(dirs)
        assert abs(share - 0.5) < 0.015, share
        expected = len(dirs) / 16
        chi2 = sum((b - expected) ** 2 / expected for b in bins)
        assert chi2 < 50, (n, chi2, bins)


def test_param_index_locates_every_tensor(tiny_spec, replayer):
    r = replayer()
    idx = r.index
    assert idx.total == TINY_PARAMS
    flat = torch.cat([p.detach().reshape(-1) for p in r.params])
    for i in (0, 1, 215, 216, 1000, TINY_PARAMS - 11, TINY_PARAMS - 1):
        t, off = idx.locate(i)
        assert r.params[t].detach().reshape(-1)[off] == flat[i]
    reqs = [Requirement(i, INCREASE) for i in (5, 500, 6000)]
    assert torch.equal(idx.gather(reqs), flat[[5, 500, 6000]])


# == the zero-change rule ===============================================================
fp32 = st.floats(width=32, allow_nan=False, allow_infinity=False)


@SETTINGS
@given(x=st.lists(fp32, min_size=1, max_size=8), dirs=st.lists(st.sampled_from([INCREASE, DECREASE]), min_size=8,
                                                                max_size=8))
def test_unchanged_weight_never_satisfies(x, dirs):
    before = torch.tensor(x, dtype=torch.float32)
    reqs = [Requirement(i, d) for i, d in enumerate(dirs[:len(x)])]
    for one in reqs:
        for d in (INCREASE, DECREASE):
            r = [Requirement(one.index, d)]
            b = before[[one.index]]
            assert not requirements_hold(b, b.clone(), r)
            assert not requirements_hold_with_margin(b, b.clone(), r, 4, 1e-9)
            assert first_failed(b, b.clone(), r) == 0


def test_signed_zero_is_no_change():
    z, nz = torch.tensor([0.0]), torch.tensor([-0.0])
    for d in (INCREASE, DECREASE):
        assert not requirements_hold(z, nz, [Requirement(0, d)])
        assert not requirements_hold(nz, z, [Requirement(0, d)])


@SETTINGS
@given(x=fp32.filter(lambda v: abs(v) < 1e30), steps=st.integers(1, 3))
def test_smallest_change_meets_validator_rule_not_miner_margin(x, steps):
    """A change of 1 to 3 ulps has the right sign (validator: holds) but is below the 4-ulp margin."""
    b = torch.tensor([x], dtype=torch.float32)
    up = b
    for _ in range(steps):
        up = torch.nextafter(up, torch.tensor([float("inf")]))
    req = [Requirement(0, INCREASE)]
    assert requirements_hold(b, up, req)
    assert not requirements_hold(b, up, [Requirement(0, DECREASE)])
    assert not requirements_hold_with_margin(b, up, req, 4, 0.0)


def test_margin_clears_large_changes():
    b = torch.tensor([1.0, -1.0, 1e-3])
    a = b + torch.tensor([1e-4, 1e-4, -1e-6])
    reqs = [Requirement(0, INCREASE), Requirement(1, INCREASE), Requirement(2, DECREASE)]
    assert requirements_hold_with_margin(b, a, reqs, 4, 1e-9)
    assert float(ulp(torch.tensor([1.0]))[0]) == 2.0 ** -23
    # below the absolute margin: 1e-12 is many ulps of 1e-20 but under margin_abs
    tiny_b, tiny_a = torch.tensor([1e-20]), torch.tensor([1e-20 + 1e-12])
    assert requirements_hold(tiny_b, tiny_a, [Requirement(0, INCREASE)])
    assert not requirements_hold_with_margin(tiny_b, tiny_a, [Requirement(0, INCREASE)], 4, 1e-9)


# == the validators' band (v2) ==============================================================
def _ulps_away(x: float, m: int, direction: int) -> tuple[torch.Tensor, torch.Tensor]:
    b = torch.tensor([x], dtype=torch.float32)
    a = b
    for _ in range(m):
        a = torch.nextafter(a, torch.tensor([float("inf") if direction > 0 else float("-inf")]))
    return b, a


@SETTINGS
@given(x=fp32.filter(lambda v: 1e-30 < abs(v) < 1e30), m=st.integers(0, 6), band=st.integers(0, 4),
       direction=st.sampled_from([INCREASE, DECREASE]))
def test_band_in_ulps(x, m, band, direction):
    """A change of m fp32 steps clears a band of ``band`` ulps iff it is at least ``band`` times the
    larger spacing of the two values (numpy's np.spacing, an independent ulp)."""
    b, a = _ulps_away(x, m, direction)
    spacing = max(abs(float(np.spacing(np.float32(abs(v))))) for v in (float(b[0]), float(a[0])))
    change = abs(float(a[0]) - float(b[0]))
    want = m > 0 and change >= band * spacing
    assert requirements_hold(b, a, [Requirement(0, direction)], band, 0.0) is want
    assert first_failed(b, a, [Requirement(0, direction)], band, 0.0) == (None if want else 0)
    assert not requirements_hold(b, a, [Requirement(0, -direction)], band, 0.0)     # the wrong way never


def test_band_in_absolute_terms():
    b = torch.tensor([1e-20, 1e-20])
    a = b + torch.tensor([4e-10, 6e-10])
    reqs = [Requirement(0, INCREASE), Requirement(1, INCREASE)]
    assert requirements_hold(b, a, reqs)                                   # right signs
    assert first_failed(b, a, reqs, 2, 5e-10) == 0                          # 4e-10 < band_abs 5e-10
    assert requirements_hold(b[1:], a[1:], reqs[1:], 2, 5e-10)


def test_band_is_below_the_miners_margin():
    """The v2 presets keep the validators' band strictly inside the miner's publishing margin, so a
    change a miner publishes never lands near the validators' line."""
    for name in ("tiny", "cifar10-resnet18"):
        q = preset(name).requirements
        assert 0 < q.band_ulps < q.margin_ulps and 0 < float(q.band_abs) < float(q.margin_abs)
    assert preset("dgg-paper").requirements.band_ulps == 0 and preset("dgg-paper").requirements.band_abs == "0"


@SETTINGS
@given(x=fp32.filter(lambda v: abs(v) < 1e30), m=st.integers(0, 8), away=st.booleans(), scale=st.sampled_from([0, 1]),
       direction=st.sampled_from([INCREASE, DECREASE]))
def test_miner_margin_implies_validator_band(x, m, away, scale, direction):
    """Whatever a change (m fp32 steps, or m * 1e-10 in absolute terms), if the miner's rule passes,
    the validators' rule with the spec's band passes."""
    spec = preset("tiny")
    if scale:
        b = torch.tensor([x], dtype=torch.float32)
        a = b + torch.tensor([direction * m * 1e-10], dtype=torch.float32)
    else:
        b, a = _ulps_away(x, m, direction if away else -direction)
    reqs = [Requirement(0, direction)]
    if miner_requirements_ok(b, a, reqs, spec):
        assert requirements_hold(b, a, reqs, spec.requirements.band_ulps, float(spec.requirements.band_abs))


@pytest.fixture(scope="module")
def banded(tiny_spec):
    """tiny at k = 1 with a band (and margin) of thousands of ulps: a real step's change falls below it
    about half of the time."""
    spec = low_difficulty(tiny_spec, 1)
    return dataclasses.replace(spec, name="tiny-k1-banded", requirements=dataclasses.replace(
        spec.requirements, band_ulps=1 << 14, margin_ulps=1 << 15))


def test_block_whose_change_is_inside_the_band_is_invalid(banded, tiny_dataset, replayer, miner_key):
    """A real single-step block whose required change has the right sign but is smaller than the
    band: requirements-not-met through the whole pipeline; the same change passes without a band."""
    spec, r = banded, replayer(banded)
    g, w0 = genesis_header(spec), genesis_state(spec)
    ts = g.timestamp_ms + BLOCK_GAP_MS
    miner = resign(g, miner_key).miner
    reqs = requirements_for(spec, g, ts, 1, r.r_space)
    r.load(w0)
    before = r.index.gather(reqs)
    for t in trials(spec, r, g, w0, miner, 1, ts, count=200):
        if t.r_holds:
            continue
        header, state, _ = honest_child(spec, r, g, w0, miner_key, (t.nonce,), ts)
        r.load(state)
        if requirements_hold(before, r.index.gather(reqs), reqs):      # the right sign, inside the band
            break
    else:
        raise AssertionError("no step with the right sign inside the band")
    exc = expect(errors.RequirementsNotMet, INVALID, validate_block, spec, header, [], MemoryView([g]), r,
                 ts + 1000, w0)
    assert f"band {1 << 14} ulp" in str(exc)


def _frozen_state(spec):
    """Genesis W with conv1 output channel 2 cut off (BN gamma = 0: zero gradient into conv1[2])
    and bn2 channel 5 dead (beta = -1000: the ReLU never fires, so conv3's inputs from channel 5,
    bn2.weight[5] and bn2.bias[5] get zero gradient)."""
    w = clone_state(genesis_state(spec))
    w["bn1.weight"][2] = 0.0
    w["bn2.bias"][5] = -1000.0
    return w


def _frozen_indices(r) -> list[int]:
    names = [n for n, _ in r.model.named_parameters()]
    start = dict(zip(names, r.index.starts))
    shape = dict((n, p.shape) for n, p in r.model.named_parameters())
    out = [start["conv1.weight"] + 2 * 27 + j for j in range(27)]                     # conv1[2, :, :, :]
    c_out, c_in = shape["conv3.weight"][:2]
    out += [start["conv3.weight"] + (o * c_in + 5) * 9 + j for o in range(c_out) for j in range(9)]
    out += [start["bn2.weight"] + 5, start["bn2.bias"] + 5]
    return out


def test_real_step_leaves_frozen_weights_unchanged_and_they_satisfy_nothing(tiny_spec, replayer):
    r = replayer()
    w = _frozen_state(tiny_spec)
    frozen = _frozen_indices(r)
    assert len(frozen) == 27 + 32 * 9 + 2
    for seed in range(3):
        batch = tuple(torch.randperm(tiny_spec.dataset.train_size, generator=torch.Generator().manual_seed(seed))[:4].tolist())
        r.load(w)
        before = torch.cat([p.detach().reshape(-1) for p in r.params])
        r.step(batch)
        after = torch.cat([p.detach().reshape(-1) for p in r.params])
        assert torch.equal(before[frozen], after[frozen])                 # bit for bit
        assert (before != after).sum() > TINY_PARAMS // 2                 # the rest moved
        for i in frozen[::7]:
            for d in (INCREASE, DECREASE):
                assert not requirements_hold(before[[i]], after[[i]], [Requirement(i, d)])


def test_block_whose_requirement_hits_a_frozen_weight_is_invalid(k1_spec, tiny_dataset, replayer, miner_key):
    """A full k = 1 block whose parent's post-state is the frozen W, in an epoch whose R picks a
    frozen weight: the step cannot change it, whatever the batch."""
    r = replayer(k1_spec)
    w = _frozen_state(k1_spec)
    frozen = set(_frozen_indices(r))
    g = genesis_header(k1_spec)
    parent = resign(dataclasses.replace(g, height=1, parent=g.hash, timestamp_ms=g.timestamp_ms + BLOCK_GAP_MS,
                                        difficulty=1, nonces=(1,), state_hash=weights_hash(w)), miner_key)
    interval = k1_spec.proof.redraw_interval_ms
    for epoch in range(500):       # R is re-drawn every epoch: wait (in block time) for one that hits
        ts = parent.timestamp_ms + epoch * interval + BLOCK_GAP_MS
        if requirements_for(k1_spec, parent, ts, 1, r.r_space)[0].index in frozen:
            break
    else:
        raise AssertionError("no epoch whose R hits a frozen weight")
    child, _, _ = honest_child(k1_spec, r, parent, w, miner_key, (10, 20, 30), ts, k=1)
    expect(errors.RequirementsNotMet, INVALID, validate_block, k1_spec, child, [], MemoryView([g, parent]), r,
           ts + 1000, w)
