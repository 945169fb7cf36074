"""Small CIFAR-10 archives in the exact official binary layout, for tests.

Written independently of consensus/cifar10.py (plain Python bytes, no torch),
so that loading one of these archives really checks the decoder.
"""
from __future__ import annotations

import gzip
import hashlib
import io
import random
import tarfile
from pathlib import Path

DIR = "cifar-10-batches-bin"
TRAIN_NAMES = [f"{DIR}/data_batch_{i}.bin" for i in range(1, 6)]
TEST_NAME = f"{DIR}/test_batch.bin"


def make_records(n: int, rng: random.Random) -> list[tuple[int, bytes]]:
    """n random (label, 3072 pixel bytes) pairs."""
    return [(rng.randrange(10), rng.randbytes(3072)) for _ in range(n)]


def encode_records(records: list[tuple[int, bytes]]) -> bytes:
    """The binary CIFAR-10 encoding: label byte, then R, G, B planes of 1024 bytes."""
    return b"".join(bytes([label]) + pixels for label, pixels in records)


def cifar_members(records_per_batch: int = 20, seed: int = 0) -> dict[str, list[tuple[int, bytes]]]:
    """Records of every batch file, by member name, in archive order."""
    rng = random.Random(seed)
    return {name: make_records(records_per_batch, rng) for name in (*TRAIN_NAMES, TEST_NAME)}


def write_tar_gz(path: Path, files: dict[str, bytes]) -> str:
    """Write a deterministic tar.gz holding ``files`` (plus the directory entry); return its MD5."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.GNU_FORMAT) as tf:
        d = tarfile.TarInfo(DIR)
        d.type, d.mode = tarfile.DIRTYPE, 0o755
        tf.addfile(d)
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o644
            tf.addfile(info, io.BytesIO(data))
    body = gzip.compress(raw.getvalue(), mtime=0)
    Path(path).write_bytes(body)
    return hashlib.md5(body).hexdigest()


def make_cifar_archive(path: Path, records_per_batch: int = 20, seed: int = 0) -> str:
    """Write a small CIFAR-10 archive in the official layout; return its MD5 hex."""
    members = cifar_members(records_per_batch, seed)
    files = {f"{DIR}/batches.meta.txt": b"airplane\nautomobile\nbird\ncat\ndeer\n"
                                        b"dog\nfrog\nhorse\nship\ntruck\n"}
    files.update({name: encode_records(recs) for name, recs in members.items()})
    return write_tar_gz(path, files)
