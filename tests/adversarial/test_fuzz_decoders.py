"""Fuzzing the decoders of untrusted input with hypothesis.

Contract: whatever bytes or JSON a peer sends, ``BlockHeader.from_json`` /
``from_dict``, ``consensus.weights.decode_state`` and ``weights_hash`` on what it
decodes (the snapshot path: a post-state served by a peer is decoded and hashed
against the header's state_hash) and ``consensus.block.parse_records`` raise
nothing but the typed errors of consensus.errors -- never KeyError, TypeError,
RecursionError, a safetensors or torch exception, and never crash the process.
"""
from __future__ import annotations

import json
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from consensus import errors
from consensus.block import BlockHeader, parse_records
from consensus.certificates import make_certificate
from consensus.validation import check_records_commitment, validate_header_standalone
from consensus.weights import decode_state, encode_state, weights_hash

from .conftest import CHEATER_KEY

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)

json_scalars = st.none() | st.booleans() | st.integers(min_value=-(1 << 70), max_value=1 << 70) \
    | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=80)
json_values = st.recursive(json_scalars, lambda c: st.lists(c, max_size=6) | st.dictionaries(st.text(max_size=12), c,
                                                                                             max_size=6),
                           max_leaves=30)


def only_typed(fn, *args, family=errors.BlockError):
    """Call ``fn``; a raised exception must be one of the typed consensus errors."""
    try:
        return fn(*args)
    except family:
        return None
    except Exception as exc:  # noqa: BLE001 - that is the point
        pytest.fail(f"{fn.__qualname__} raised {type(exc).__name__}: {exc!r}"[:500])


@pytest.fixture(scope="module")
def header_dict(honest):
    return honest.next.header.to_dict()


# -- headers -----------------------------------------------------------------------------------
@FUZZ
@given(data=st.binary(max_size=2000))
def test_from_json_random_bytes(data):
    only_typed(BlockHeader.from_json, data)


@FUZZ
@given(value=json_values)
def test_from_json_random_json(value):
    only_typed(BlockHeader.from_json, json.dumps(value))
    only_typed(BlockHeader.from_dict, value)


@FUZZ
@given(data=st.data())
def test_from_dict_one_field_replaced(header_dict, data):
    """A real header with one field replaced by arbitrary JSON (or dropped, or one added)."""
    d = dict(header_dict)
    op = data.draw(st.sampled_from(["replace", "drop", "add"]))
    name = data.draw(st.sampled_from(sorted(d)))
    if op == "replace":
        d[name] = data.draw(json_values)
    elif op == "drop":
        del d[name]
    else:
        d[data.draw(st.text(max_size=10))] = data.draw(json_values)
    h = only_typed(BlockHeader.from_dict, d)
    if h is not None:   # a header that parses must also survive the context-free rules
        only_typed(lambda: (h.encode(), h.hash, h.signature_valid()))
        only_typed(validate_header_standalone, h, _spec(), 2_000_000_000_000)


@FUZZ
@given(data=st.data())
def test_from_json_mutated_bytes(header_dict, data):
    raw = bytearray(json.dumps(header_dict).encode())
    for _ in range(data.draw(st.integers(1, 8))):
        i = data.draw(st.integers(0, len(raw) - 1))
        raw[i] = data.draw(st.integers(0, 255))
    h = only_typed(BlockHeader.from_json, bytes(raw))
    if h is not None:
        only_typed(validate_header_standalone, h, _spec(), 2_000_000_000_000)


@pytest.mark.parametrize("opener,closer", [("[", "]"), ('{"a":', "}")])
def test_deeply_nested_json_is_malformed(opener, closer):
    for depth in (500, 5_000, 200_000):
        with pytest.raises(errors.Malformed):
            BlockHeader.from_json(opener * depth + "1" + closer * depth)


def _spec():
    from consensus.spec import preset
    return preset("tiny")


# -- weights -------------------------------------------------------------------------------------
@FUZZ
@given(data=st.binary(max_size=4096))
def test_decode_state_random_bytes(data):
    only_typed(decode_state, data, family=errors.MalformedWeights)


@FUZZ
@given(header=json_values, payload=st.binary(max_size=256))
def test_decode_state_random_safetensors_header(header, payload):
    hb = json.dumps(header).encode()
    only_typed(decode_state, struct.pack("<Q", len(hb)) + hb + payload, family=errors.MalformedWeights)


def decode_and_hash(data: bytes) -> str:
    """What a snapshot download does with a peer's file before trusting it."""
    return weights_hash(decode_state(data))


@FUZZ
@given(entries=st.dictionaries(
    st.text(min_size=1, max_size=8),
    st.fixed_dictionaries({"dtype": st.sampled_from(["F32", "F64", "I64", "U8", "BOOL", "F16", "BF16", "Z9", ""]),
                           "shape": st.lists(st.integers(-2, 70000), max_size=4),
                           "data_offsets": st.lists(st.integers(-5, 5000), min_size=0, max_size=3)}),
    max_size=4), payload=st.binary(max_size=512))
def test_decode_structured_safetensors(entries, payload):
    """Well-formed-looking containers with hostile shapes, dtypes and offsets, decoded and hashed."""
    hb = json.dumps(entries).encode()
    data = struct.pack("<Q", len(hb)) + hb + payload
    only_typed(decode_and_hash, data, family=errors.MalformedWeights)


@pytest.fixture(scope="module")
def state_bytes(honest) -> bytes:
    return encode_state(honest.next.state)


@FUZZ
@given(data=st.data())
def test_decode_mutated_real_state(state_bytes, data):
    body = bytearray(state_bytes)
    n = struct.unpack("<Q", body[:8])[0]
    for _ in range(data.draw(st.integers(1, 6))):
        # bias mutations toward the JSON header, where the structure is
        i = data.draw(st.integers(0, min(len(body) - 1, n + 8)) | st.integers(0, len(body) - 1))
        body[i] = data.draw(st.integers(0, 255))
    cut = data.draw(st.none() | st.integers(0, len(body)))
    only_typed(decode_and_hash, bytes(body[:cut] if cut is not None else body), family=errors.MalformedWeights)


# -- records ---------------------------------------------------------------------------------------
@FUZZ
@given(items=json_values)
def test_parse_records_random_json(items):
    only_typed(parse_records, items)
    only_typed(parse_records, [items])


@FUZZ
@given(data=st.data())
def test_parse_records_mutated_certificate(data):
    cert = dict(make_certificate(CHEATER_KEY, "ab" * 32, "cd" * 32, {"k": "v"}, 5).body)
    name = data.draw(st.sampled_from(sorted(cert)))
    op = data.draw(st.sampled_from(["replace", "drop", "add"]))
    if op == "replace":
        cert[name] = data.draw(json_values)
    elif op == "drop":
        del cert[name]
    else:
        cert[data.draw(st.text(max_size=10))] = data.draw(json_values)
    only_typed(parse_records, [cert])


@FUZZ
@given(items=json_values)
def test_records_commitment_random_json(honest, items):
    only_typed(check_records_commitment, honest.next.header, items)


def test_deeply_nested_record_is_bad_record():
    def deep(n, f):   # parse from a deep stack, as a web framework would
        return f() if n == 0 else deep(n - 1, f)
    x: list = []
    for _ in range(950):      # built with a loop: the test's own stack may already be deep (a pytest-xdist worker)
        x = [x]
    nested = [{"type": "model-certificate", "x": x}]
    with pytest.raises(errors.BadRecord):
        deep(150, lambda: parse_records(nested))
