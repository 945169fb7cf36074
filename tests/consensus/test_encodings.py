"""Canonical encodings: canonical JSON, headers, chain specs, weights, Merkle roots."""
from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.torch import save as st_save

from consensus import errors
from consensus.block import MAX_U64, SIGN_DOMAIN, BlockHeader, PaperHeader, genesis_header, header_class
from consensus.data import split_hash
from consensus.hashing import ZERO_HASH, canonical_json, merkle_root, sha256, sha256_hex
from consensus.spec import PRESETS, ChainSpec, preset
from consensus.training import genesis_state
from consensus.weights import decode_state, encode_state, weights_hash
from tests.chain_spec import TINY_TEST, TINY_TEST_FILE

SETTINGS = settings(max_examples=60, deadline=None)
hexhash = st.binary(min_size=32, max_size=32).map(bytes.hex)
u63 = st.integers(0, (1 << 63) - 1)

# -- canonical JSON -----------------------------------------------------------------------
json_leaf = st.none() | st.booleans() | st.integers(-(1 << 70), 1 << 70) | st.text(max_size=12)
json_values = st.recursive(json_leaf, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=20)


@SETTINGS
@given(json_values)
def test_canonical_json_round_trips_and_is_a_fixed_point(v):
    enc = canonical_json(v)
    assert json.loads(enc.decode("utf-8")) == v
    assert canonical_json(json.loads(enc)) == enc


@SETTINGS
@given(st.dictionaries(st.text(max_size=6), st.integers(), min_size=2, max_size=6))
def test_canonical_json_ignores_key_order(d):
    rev = dict(reversed(list(d.items())))
    assert canonical_json(d) == canonical_json(rev)
    keys = list(json.loads(canonical_json(d)))
    assert keys == sorted(keys)


def test_canonical_json_exact_bytes():
    assert canonical_json({"b": [1, "é"], "a": None, "c": True}) == '{"a":null,"b":[1,"é"],"c":true}'.encode()


@pytest.mark.parametrize("bad", [1.5, {"a": 0.0}, [1, [2.0]], {1: "x"}, float("nan")])
def test_canonical_json_refuses_floats_and_non_string_keys(bad):
    with pytest.raises(TypeError):
        canonical_json(bad)


# -- headers --------------------------------------------------------------------------------
_common = dict(version=u63, chain_id=hexhash, height=u63, parent=hexhash, timestamp_ms=u63, difficulty=u63,
               miner=st.binary(min_size=32, max_size=32).map(bytes.hex), acc_after=u63, records_root=hexhash,
               signature=st.binary(min_size=64, max_size=64).map(bytes.hex))
headers = st.builds(BlockHeader, nonces=st.lists(st.integers(0, MAX_U64), max_size=12).map(tuple),
                    state_hash=hexhash, **_common)
paper_headers = st.builds(PaperHeader, batch=st.lists(st.integers(0, 1 << 40), max_size=8).map(tuple),
                          weights_hash=hexhash, acc_before=u63, **_common)


@SETTINGS
@given(headers | paper_headers)
def test_header_round_trip(h):
    cls = type(h)
    d = h.to_dict()
    assert cls.from_dict(d) == h
    assert cls.from_json(h.encode()) == h
    assert cls.from_json(json.dumps(d, indent=3)) == h                  # any JSON layout parses to the same
    assert h.encode() == canonical_json(d)
    assert h.hash == sha256_hex(h.encode())
    assert h.signing_bytes() == SIGN_DOMAIN + canonical_json(h.to_dict(with_signature=False))
    assert "signature" not in h.to_dict(with_signature=False)


@SETTINGS
@given(headers, paper_headers)
def test_versions_do_not_parse_as_each_other(v2, v1):
    """A v1 (dgg-paper) header is malformed for a v2 parser and the other way round."""
    with pytest.raises(errors.Malformed):
        BlockHeader.from_dict(v1.to_dict())
    with pytest.raises(errors.Malformed):
        PaperHeader.from_dict(v2.to_dict())


def test_header_class_follows_the_spec():
    assert header_class(preset("tiny")) is header_class(preset("cifar10-resnet18")) is BlockHeader
    assert header_class(preset("dgg-paper")) is PaperHeader


@SETTINGS
@given(headers, st.binary(min_size=64, max_size=64))
def test_block_hash_covers_the_signature(h, other_sig):
    h2 = dataclasses.replace(h, signature=other_sig.hex())
    assert h2.signing_bytes() == h.signing_bytes()
    assert (h2.hash == h.hash) == (h2.signature == h.signature)


def test_header_signature_round_trip(tiny_spec, miner_key, other_key):
    h = dataclasses.replace(genesis_header(tiny_spec), height=1, nonces=(1, MAX_U64)).signed(miner_key)
    assert h.signature_valid() and len(h.signature) == 128 and len(h.miner) == 64
    assert BlockHeader.from_json(h.encode()).signature_valid()
    assert not dataclasses.replace(h, height=2).signature_valid()
    assert not dataclasses.replace(h, miner=h.signed(other_key).miner).signature_valid()
    assert not dataclasses.replace(h, signature="zz" * 64).signature_valid()


def test_genesis_header_is_pinned():
    """v4 genesis: no miner, nonces, ticket or signature; its post-state is the genesis weights; its claim is
    the genesis model's pinned accuracy on E."""
    spec = preset("tiny")
    g = genesis_header(spec)
    assert type(g) is BlockHeader and g.version == 4
    assert g.height == 0 and g.parent == ZERO_HASH and g.miner == "" and g.signature == "" and g.nonces == ()
    assert g.state_hash == spec.model.genesis_weights_sha256 and g.acc_after == spec.evaluation.genesis_correct == 52
    assert g.hash == "4e5846e682e4a5883a915c5993c5e0057e898362f2fa88d0587211fc583f0064"
    p = genesis_header(preset("dgg-paper"))
    assert type(p) is PaperHeader and p.version == 1 and p.batch == () and p.weights_hash == preset("dgg-paper").model.genesis_weights_sha256
    assert p.hash == "093e9cc606657a2fb61a284d6378a95e50b22bf25dd57c2429a796bec3c99314"


# -- chain specs ------------------------------------------------------------------------------
PINNED_CHAIN_IDS = {    # v4 before issue 33.5's start (tiny k0 8, one step): de9f37c6..., fc23c642...; protocol v3 chain ids (ResNet-18 before layer4.0.bn2 and shortcut BN left R: 3064fa4d...; v3 before the scrypt batches: ea4aeb91..., d2aef8fc...; v2: 59962227..., 0ad272f4...; v1: 3665c6a8..., 2baedda5...)
    "tiny": "6cdcf2b7d66acc3c05af0a9df2000ee283773b0662797ab6f7450ccf5222c489",
    "cifar10-resnet18": "f1225ef18dd1bafc581f6de16a602712472f7d426c50090a307592b576539bea",
    "dgg-paper": "7f455f512f318f3f3157744adfeb119daa0af9785b38791872b2fd3088008f0b",
}


@pytest.mark.parametrize("name", PRESETS)
def test_spec_json_round_trip_and_pinned_chain_id(name):
    s = preset(name)
    assert s.chain_id == PINNED_CHAIN_IDS[name]
    back = ChainSpec.from_json(s.to_json())
    assert back == s and back.chain_id == s.chain_id
    assert ChainSpec.from_json(canonical_json(s.to_dict())) == s
    assert s.chain_id == sha256_hex(canonical_json(json.loads(s.to_json())))


@SETTINGS
@given(name=st.sampled_from(PRESETS), k=st.integers(1, 40), lr=st.sampled_from(["0.01", "0.001", "0.1"]),
       size=st.integers(1, 2_000), seed=st.integers(0, 1 << 31), j=st.integers(0, 16),   # E within the test split
       excluded=st.sampled_from([(), ("linear.",), ("linear.", "bn1.")]))
def test_spec_variants_round_trip_and_ids_separate(name, k, lr, size, seed, j, excluded):
    s = preset(name)
    v = dataclasses.replace(s, difficulty=dataclasses.replace(s.difficulty, initial=k),
                            training=dataclasses.replace(s.training, lr=lr),
                            evaluation=dataclasses.replace(s.evaluation, size=size, genesis_correct=min(size, 52)),
                            dataset=dataclasses.replace(s.dataset, seed=seed),
                            proof=dataclasses.replace(s.proof, max_advance_steps=j, r_excluded=excluded))
    back = ChainSpec.from_json(v.to_json())
    assert back == v and back.chain_id == v.chain_id
    assert (v.chain_id == s.chain_id) == (v == s)


@pytest.mark.parametrize("mutate", [lambda d: d.update(format="polchain-spec/0"), lambda d: d.pop("model"),
                                    lambda d: d["difficulty"].update(unknown=1)])
def test_malformed_spec_is_refused(mutate):
    d = preset("tiny").to_dict()
    mutate(d)
    with pytest.raises(ValueError):
        ChainSpec.from_dict(d)


def test_spec_has_no_floats():
    for name in PRESETS:
        canonical_json(preset(name).to_dict())   # raises on any float


def test_pinned_genesis_and_data_hashes(tiny_spec, tiny_dataset):
    assert weights_hash(genesis_state(tiny_spec)) == tiny_spec.model.genesis_weights_sha256
    assert split_hash(tiny_dataset.train_x, tiny_dataset.train_y) == tiny_spec.dataset.train_sha256
    assert split_hash(tiny_dataset.test_x, tiny_dataset.test_y) == tiny_spec.dataset.test_sha256


def test_pinned_resnet_genesis_hash():
    s = preset("cifar10-resnet18")
    assert weights_hash(genesis_state(s)) == s.model.genesis_weights_sha256
    # the cifar10 split hashes are not pinned (the archive's MD5 is): docs/protocol.md, "Presets"
    assert s.dataset.train_sha256 is None and s.dataset.test_sha256 is None and s.dataset.archive_md5


# -- weights ---------------------------------------------------------------------------------
def _states():
    shapes = st.lists(st.integers(0, 4), min_size=0, max_size=3).map(tuple)

    def tensor(shape, dtype):
        n = 1
        for d in shape:
            n *= d
        if dtype == "f":
            return st.lists(st.floats(width=32, allow_nan=False), min_size=n, max_size=n).map(
                lambda v: torch.tensor(v, dtype=torch.float32).reshape(shape))
        return st.lists(st.integers(-(1 << 63), (1 << 63) - 1), min_size=n, max_size=n).map(
            lambda v: torch.tensor(v, dtype=torch.int64).reshape(shape))

    entry = st.tuples(shapes, st.sampled_from("fi")).flatmap(lambda sd: tensor(*sd))
    return st.dictionaries(st.text("abc.", min_size=1, max_size=6), entry, min_size=1, max_size=4)


@SETTINGS
@given(_states())
def test_weights_round_trip_and_hash_is_container_independent(state):
    data = encode_state(state)
    back = decode_state(data)
    assert set(back) == set(state)
    for k in state:
        assert back[k].dtype == state[k].dtype and back[k].shape == state[k].shape
        assert torch.equal(back[k].view(-1).view(torch.uint8) if back[k].numel() else back[k],
                           state[k].view(-1).view(torch.uint8) if state[k].numel() else state[k])
    h = weights_hash(state)
    assert weights_hash(back) == h
    assert weights_hash(dict(reversed(list(state.items())))) == h               # insertion order irrelevant
    assert weights_hash(decode_state(st_save(dict(state), metadata={"note": "another writer"}))) == h


def test_weights_hash_sees_every_bit(tiny_genesis_state):
    h = weights_hash(tiny_genesis_state)
    for name in ("conv1.weight", "bn1.running_var", "bn3.num_batches_tracked", "linear.bias"):
        w = {k: v.clone() for k, v in tiny_genesis_state.items()}
        t = w[name].view(-1)
        raw = t.view(torch.uint8)
        raw[0] ^= 1                                                   # one bit of one value
        assert weights_hash(w) != h, name
    # a renamed tensor and a reshaped tensor change the hash
    w = dict(tiny_genesis_state)
    w["linear.bias2"] = w.pop("linear.bias")
    assert weights_hash(w) != h
    w = dict(tiny_genesis_state)
    w["linear.weight"] = w["linear.weight"].reshape(-1)
    assert weights_hash(w) != h


def test_weights_hash_refuses_other_dtypes():
    with pytest.raises(errors.MalformedWeights):
        weights_hash({"x": torch.zeros(2, dtype=torch.float64)})
    with pytest.raises(errors.MalformedWeights):
        weights_hash({"x": torch.zeros(2, dtype=torch.float16)})


# -- Merkle roots -------------------------------------------------------------------------------
leaves = st.lists(st.binary(max_size=40), max_size=12)


def test_merkle_empty_and_single():
    assert merkle_root([]) == ZERO_HASH
    assert merkle_root([b"x"]) == sha256(b"\x00x").hex()
    a, b, c = (sha256(b"\x00" + x) for x in (b"a", b"b", b"c"))
    ab = sha256(b"\x01" + a + b)
    assert merkle_root([b"a", b"b"]) == ab.hex()
    assert merkle_root([b"a", b"b", b"c"]) == sha256(b"\x01" + ab + c).hex()      # odd node promoted


@SETTINGS
@given(leaves)
def test_merkle_deterministic(ls):
    assert merkle_root(ls) == merkle_root(list(ls)) == merkle_root(iter(ls))


@SETTINGS
@given(st.lists(st.integers(0, 1 << 30), min_size=2, max_size=10, unique=True), st.data())
def test_merkle_order_matters(xs, data):
    ls = [b"leaf %d" % x for x in xs]
    i = data.draw(st.integers(0, len(ls) - 2))
    j = data.draw(st.integers(i + 1, len(ls) - 1))
    swapped = list(ls)
    swapped[i], swapped[j] = swapped[j], swapped[i]
    assert merkle_root(swapped) != merkle_root(ls)


@SETTINGS
@given(st.lists(st.binary(max_size=20), min_size=1, max_size=10))
def test_merkle_no_duplication_ambiguity(ls):
    """Unlike Bitcoin's tree, [.., x] and [.., x, x] never share a root; nor does an inner node pose as a leaf."""
    assert merkle_root(ls) != merkle_root(ls + ls[-1:])
    assert merkle_root(ls) != merkle_root(ls + [b""])
    if len(ls) == 2:
        inner = sha256(b"\x00" + ls[0]) + sha256(b"\x00" + ls[1])
        assert merkle_root([inner]) != merkle_root(ls)


def test_spec_with_unknown_or_missing_keys_is_refused():
    import pytest
    from consensus.spec import ChainSpec, preset
    d = preset("tiny").to_dict()
    with pytest.raises(ValueError, match="unknown"):
        ChainSpec.from_dict({**d, "surprise": 1})
    del d["record_types"]
    with pytest.raises(ValueError, match="missing"):
        ChainSpec.from_dict(d)


@pytest.mark.parametrize("section, field, value, why", [
    ("training", "optimizer", "adam", r"training.optimizer = 'adam' is not implemented by the canonical step"),
    ("training", "momentum", "0.9", r"training.momentum = '0.9' is not implemented"),
    ("training", "weight_decay", "0.0005", r"training.weight_decay = '0.0005' is not implemented"),
    ("training", "augmentation", "flip", r"training.augmentation = 'flip' is not implemented"),
    ("training", "batchnorm", "eval", r"training.batchnorm = 'eval' is not implemented"),
    ("training", "dtype", "bfloat16", r"training.dtype = 'bfloat16' is not implemented"),
    ("training", "step", "fp32", r"training.step = 'fp32': protocol v3 chains use 'exact'"),
    ("training", "exact_bits", 21, r"training.exact_bits = 21 outside 8..20"),
])
def test_a_training_field_the_step_does_not_implement_is_refused(section, field, value, why):
    """Part 1 of protocol v3: a spec field the canonical step would ignore is refused when the spec is
    parsed (and so when a node, `verify` or a miner opens it), never hashed into a chain id and ignored."""
    from consensus.training import canonical_step
    d = preset("tiny").to_dict()
    d[section][field] = value
    with pytest.raises(ValueError, match=r"unsupported chain spec: " + why):
        ChainSpec.from_dict(d)
    spec = dataclasses.replace(preset("tiny"), training=dataclasses.replace(preset("tiny").training, **{field: value}))
    with pytest.raises(ValueError, match=why):
        canonical_step(spec, None)


def test_the_tests_chain_is_tiny_with_its_first_start():
    """tests/chain_spec.py: the chain the tests build is tiny but for its name and v3's start (k0 = 8, one step
    per window), and the committed genesis document the test nodes read is that spec."""
    assert ChainSpec.from_json(TINY_TEST_FILE.read_text()) == TINY_TEST, \
        "tests/tiny-test.spec.json is stale: python -m tests.chain_spec rewrites it"
    assert dataclasses.replace(TINY_TEST, name="tiny", difficulty=preset("tiny").difficulty) == preset("tiny")
    assert (TINY_TEST.difficulty.initial, TINY_TEST.difficulty.max_step) == (8, 1)
