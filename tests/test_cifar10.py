"""Tests for consensus/cifar10.py on small archives in the official binary layout.

The real CIFAR-10 sample: tests/test_cifar10_sample.py; the download: tests/node/test_dataset.py.
"""
from __future__ import annotations

import hashlib
import warnings
from pathlib import Path

import pytest
import torch

from consensus.cifar10 import (ARCHIVE_NAME, META_MEMBER, Cifar10, DatasetError, decode_records, find_archive,
                               load_archive, load_cifar10)
from tests.cifar_fixture import (TEST_NAME, TRAIN_NAMES, cifar_members, encode_records,
                                 make_cifar_archive, write_tar_gz)

N = 20  # records per batch in the small archives


def member_bytes(seed: int = 0) -> dict[str, bytes]:
    return {name: encode_records(recs) for name, recs in cifar_members(N, seed).items()}


def load(root: Path, md5: str, **kw) -> Cifar10:
    return load_cifar10(root, md5=md5, train_records=N, test_records=N, **kw)


def reencode(x: torch.Tensor, y: torch.Tensor) -> bytes:
    return b"".join(bytes([int(y[i])]) + bytes(x[i].flatten().tolist()) for i in range(len(y)))


# -- decoding -----------------------------------------------------------------
def test_decode_records_layout():
    recs = cifar_members(3, seed=1)[TEST_NAME]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # e.g. torch.frombuffer on read-only bytes
        x, y = decode_records(encode_records(recs), 3)
    assert x.shape == (3, 3, 32, 32) and x.dtype == torch.uint8 and x.is_contiguous()
    assert y.shape == (3,) and y.dtype == torch.uint8
    for i, (label, pixels) in enumerate(recs):
        assert int(y[i]) == label
        for c, row, col in [(0, 0, 0), (0, 0, 31), (0, 1, 0), (1, 0, 0), (2, 31, 31), (1, 17, 5)]:
            assert int(x[i, c, row, col]) == pixels[c * 1024 + row * 32 + col]


def test_decode_records_rejects_bad_input():
    good = encode_records(cifar_members(2, seed=2)[TEST_NAME])
    with pytest.raises(DatasetError, match="whole number of 3073-byte records"):
        decode_records(good[:-1], None)
    with pytest.raises(DatasetError, match="2 records, expected 3"):
        decode_records(good, 3)
    bad = bytearray(good)
    bad[3073] = 10  # label of record 1
    with pytest.raises(DatasetError, match="record 1 has label 10"):
        decode_records(bytes(bad), 2)
    x, y = decode_records(b"", 0)
    assert x.shape == (0, 3, 32, 32) and y.shape == (0,)


# -- loading ------------------------------------------------------------------
def test_load_round_trips_in_official_order(tmp_path):
    md5 = make_cifar_archive(tmp_path / ARCHIVE_NAME, records_per_batch=N, seed=0)
    ds = load(tmp_path, md5)
    assert ds.train_x.shape == (5 * N, 3, 32, 32) and ds.train_y.shape == (5 * N,)
    assert ds.test_x.shape == (N, 3, 32, 32) and ds.test_y.shape == (N,)
    for t in (ds.train_x, ds.train_y, ds.test_x, ds.test_y):
        assert t.dtype == torch.uint8 and t.is_contiguous()
    members = member_bytes(seed=0)
    assert reencode(ds.train_x, ds.train_y) == b"".join(members[n] for n in TRAIN_NAMES)
    assert reencode(ds.test_x, ds.test_y) == members[TEST_NAME]
    # Each batch lands in its own slice, batch 1 first.
    for b, name in enumerate(TRAIN_NAMES):
        sl = slice(b * N, (b + 1) * N)
        assert reencode(ds.train_x[sl], ds.train_y[sl]) == members[name]


def test_load_is_deterministic(tmp_path):
    md5 = make_cifar_archive(tmp_path / ARCHIVE_NAME, records_per_batch=N, seed=3)
    a, b = load(tmp_path, md5), load(tmp_path, md5)
    for name in ("train_x", "train_y", "test_x", "test_y"):
        assert torch.equal(getattr(a, name), getattr(b, name))


def test_missing_archive(tmp_path):
    with pytest.raises(DatasetError, match=f"no CIFAR-10 archive with MD5 {'0' * 32} in {tmp_path}"):
        load(tmp_path, "0" * 32)
    with pytest.raises(DatasetError, match="no CIFAR-10 archive"):
        load(tmp_path / "absent", "0" * 32)


def test_wrong_checksum(tmp_path):
    md5 = make_cifar_archive(tmp_path / ARCHIVE_NAME, records_per_batch=N)
    with pytest.raises(DatasetError, match=f"no CIFAR-10 archive with MD5 {'0' * 32}"):
        load(tmp_path, "0" * 32)
    with pytest.raises(DatasetError, match=f"expected MD5 {'0' * 32}, got {md5}"):
        load_archive(tmp_path / ARCHIVE_NAME, "0" * 32, train_records=N, test_records=N)


def test_archive_found_by_md5_under_any_name(tmp_path):
    """A directory holding archives under other names serves the spec naming one's MD5; the official
    name is tried first, and a file with the right name but another MD5 is passed over."""
    md5_a = make_cifar_archive(tmp_path / "a-sample.tar.gz", records_per_batch=N, seed=1)
    md5_b = make_cifar_archive(tmp_path / "b-sample.tar.gz", records_per_batch=N, seed=2)
    (tmp_path / ARCHIVE_NAME).write_bytes(b"not this one")
    (tmp_path / "notes.txt").write_bytes(b"ignored")
    assert find_archive(tmp_path, md5_b) == tmp_path / "b-sample.tar.gz"
    assert find_archive(tmp_path, md5_a.upper()) == tmp_path / "a-sample.tar.gz"
    assert find_archive(tmp_path, "0" * 32) is None
    assert torch.equal(load(tmp_path, md5_b).test_y, load_archive(tmp_path / "b-sample.tar.gz", md5_b,
                                                                   train_records=N, test_records=N).test_y)


def corrupt_archive(tmp_path: Path, edit) -> str:
    files = member_bytes()
    edit(files)
    return write_tar_gz(tmp_path / ARCHIVE_NAME, files)


def test_truncated_member(tmp_path):
    def edit(f):
        f[TRAIN_NAMES[2]] = f[TRAIN_NAMES[2]][:-100]
    md5 = corrupt_archive(tmp_path, edit)
    with pytest.raises(DatasetError, match=rf"data_batch_3.bin has {N * 3073 - 100} bytes, "
                                           rf"expected {N * 3073}"):
        load(tmp_path, md5)


def test_member_with_one_record_too_many(tmp_path):
    def edit(f):
        f[TEST_NAME] += f[TEST_NAME][:3073]
    md5 = corrupt_archive(tmp_path, edit)
    with pytest.raises(DatasetError, match="test_batch.bin has"):
        load(tmp_path, md5)


def test_label_out_of_range(tmp_path):
    def edit(f):
        bad = bytearray(f[TRAIN_NAMES[4]])
        bad[7 * 3073] = 10
        f[TRAIN_NAMES[4]] = bytes(bad)
    md5 = corrupt_archive(tmp_path, edit)
    with pytest.raises(DatasetError, match="data_batch_5.bin: record 7 has label 10"):
        load(tmp_path, md5)


def test_missing_member(tmp_path):
    md5 = corrupt_archive(tmp_path, lambda f: f.pop(TRAIN_NAMES[1]))
    with pytest.raises(DatasetError, match="missing member.*data_batch_2.bin"):
        load(tmp_path, md5)


def test_misnamed_member_is_missing(tmp_path):
    def edit(f):
        f["cifar-10-batches-py/test_batch.bin"] = f.pop(TEST_NAME)
    md5 = corrupt_archive(tmp_path, edit)
    with pytest.raises(DatasetError, match="missing member.*test_batch.bin"):
        load(tmp_path, md5)


def test_record_counts_are_the_specs(tmp_path):
    """A small archive is refused at the official sizes, and at any size but the one asked for;
    with no count given (inspecting an archive) any whole number of records is read."""
    md5 = make_cifar_archive(tmp_path / ARCHIVE_NAME, records_per_batch=N)
    with pytest.raises(DatasetError, match=r"expected 30730000 \(10000 records of 3073 bytes"):
        load_cifar10(tmp_path, md5=md5)  # official size: 10000 records
    with pytest.raises(DatasetError, match="test_batch.bin has"):
        load_cifar10(tmp_path, md5=md5, train_records=N, test_records=N + 1)
    c = load_archive(tmp_path / ARCHIVE_NAME, None, train_records=None, test_records=None)
    assert c.train_file_records == (N,) * 5 and tuple(c.test_y.shape) == (N,)


def test_class_names_checked_when_present(tmp_path):
    def edit(f):
        f[META_MEMBER] = b"airplane\nautomobile\nbird\ncat\ndeer\ndog\nfrog\nhorse\ntruck\nship\n"
    md5 = corrupt_archive(tmp_path, edit)
    with pytest.raises(DatasetError, match="batches.meta.txt: class names"):
        load(tmp_path, md5)
    md5 = corrupt_archive(tmp_path, lambda f: f.pop(META_MEMBER, None))
    assert load(tmp_path, md5).train_file_records == (N,) * 5


def test_truncated_archive(tmp_path):
    path = tmp_path / ARCHIVE_NAME
    make_cifar_archive(path, records_per_batch=N)
    path.write_bytes(path.read_bytes()[:-2000])
    md5 = hashlib.md5(path.read_bytes()).hexdigest()
    with pytest.raises(DatasetError, match="not a readable tar.gz"):
        load(tmp_path, md5)


def test_not_a_tar_gz(tmp_path):
    path = tmp_path / ARCHIVE_NAME
    path.write_bytes(b"<html>not found</html>")
    md5 = hashlib.md5(path.read_bytes()).hexdigest()
    with pytest.raises(DatasetError, match="not a readable tar.gz"):
        load(tmp_path, md5)
