import hashlib

import pytest
import torch
from hypothesis import given, settings, strategies as st

from pol import dataset_hash, model_hash, tensor_hash
from pol import proof as P


def test_tensor_hash_is_order_independent_and_deterministic():
    a, b = torch.arange(6, dtype=torch.float32), torch.ones(2, 3)
    assert tensor_hash({"a": a, "b": b}) == tensor_hash({"b": b.clone(), "a": a.clone()})


def test_tensor_hash_covers_name_dtype_shape_and_values():
    t = torch.arange(6, dtype=torch.int32)
    base = tensor_hash({"w": t})
    assert tensor_hash({"v": t}) != base                                  # name
    assert tensor_hash({"w": t.view(torch.float32)}) != base              # dtype (same bytes)
    assert tensor_hash({"w": t.reshape(2, 3)}) != base                    # shape (same bytes)
    u = t.clone()
    u[3] += 1
    assert tensor_hash({"w": u}) != base                                  # value
    assert tensor_hash({"w": t, "x": torch.zeros(0)}) != base             # extra (empty) tensor


def test_tensor_hash_encoding_is_documented_one():
    t = torch.tensor([1.0, 2.0], dtype=torch.float32)

    def u64(n):
        return n.to_bytes(8, "little")

    enc = (b"pol/tensors/v1\x00" + u64(1) + u64(1) + b"w" + u64(7) + b"float32" + u64(1) + u64(2)
           + u64(8) + t.numpy().tobytes())
    assert tensor_hash({"w": t}) == hashlib.sha256(enc).hexdigest()


def test_tensor_hash_non_contiguous_and_bfloat16():
    t = torch.arange(12, dtype=torch.float32).reshape(3, 4)
    assert tensor_hash({"w": t.t()}) == tensor_hash({"w": t.t().contiguous()})
    assert len(tensor_hash({"w": t.to(torch.bfloat16)})) == 64


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 40), d=st.integers(1, 8), which=st.sampled_from([0, 1]),
       pos=st.integers(0, 10 ** 9), bit=st.integers(0, 7), seed=st.integers(0, 2 ** 31))
def test_dataset_hash_changes_for_any_single_byte(n, d, which, pos, bit, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g)
    y = torch.randint(0, 10, (n,), generator=g)
    before = dataset_hash(x, y)
    t = (x, y)[which].clone()
    raw = t.view(-1).view(torch.uint8)
    raw[pos % raw.numel()] ^= 1 << bit
    after = dataset_hash(t, y) if which == 0 else dataset_hash(x, t)
    assert after != before


def test_dataset_hash_covers_all_of_a_large_tensor():
    # the reference implementation hashed str(array), which numpy abbreviates
    # ("...") above 1000 elements: a change in the middle went unnoticed.
    x = torch.zeros(64, 64)
    before = dataset_hash(x)
    x[32, 32] = 1.0
    assert dataset_hash(x) != before


def test_dataset_hash_covers_labels_shapes_dtypes_and_order():
    x, y = torch.zeros(4, 3), torch.tensor([0, 1, 2, 3])
    h = dataset_hash(x, y)
    assert dataset_hash(x.reshape(3, 4), y) != h
    assert dataset_hash(x.double(), y) != h
    assert dataset_hash(x, y.int()) != h
    assert dataset_hash(x, torch.tensor([0, 1, 2, 2])) != h
    assert dataset_hash(y, x) != h
    with pytest.raises(ValueError):
        dataset_hash()


def test_model_hash_is_tensor_hash_of_state_dict():
    m = torch.nn.Linear(3, 2)
    assert model_hash(m.state_dict()) == tensor_hash(m.state_dict())


@pytest.mark.parametrize("x", [0.05, 0.9, 1e-5, 5e-4, 0.0, 1.0, 3.0, 1e-300])
def test_float_strings_round_trip(x):
    s = P.encode_float(x)
    assert P.decode_float(s, "f") == x


@pytest.mark.parametrize("s", ["0.10", "1e-4", "nan", "inf", "-0.5", " 0.5", "0x1p-3", "1_0.0", 0.5, None, "+1.0"])
def test_non_canonical_float_strings_refused(s):
    with pytest.raises(P.ProofError):
        P.decode_float(s, "f")
