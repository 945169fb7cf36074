"""Consensus-critical CIFAR-10 reader (official *binary* version, no pickle).

Every node must see bit-identical training and test tensors, so this module
reads the dataset straight from a local copy of the official archive (or of an
archive in the same layout that a chain spec names by its MD5) and nothing
else. Fetching the archive is not consensus: it lives in ``node/dataset.py``;
this module never touches the network.

    https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz
    MD5 c32a1d4ab5d03f1284b67883e8d87530

We use the binary version rather than the better known "python version"
because the latter is a set of pickles, and unpickling runs arbitrary code: a
node must never do that on a file fetched from the network. The binary format
is trivial to parse and to check:

* ``cifar-10-batches-bin/data_batch_1.bin`` .. ``data_batch_5.bin``: training
  set, 10000 records each in the official archive; train = batches 1..5
  concatenated in that order.
* ``cifar-10-batches-bin/test_batch.bin``: test set, 10000 records.
* ``cifar-10-batches-bin/batches.meta.txt``: the class names, one a line
  (checked when present: the ten CIFAR-10 names in label order).
* Each record is 3073 bytes: one label byte (0..9), then 3072 pixel bytes,
  the 1024 red values, then 1024 green, then 1024 blue, each plane a 32x32
  image in row-major order. So a record's pixels reshape directly to
  ``[3, 32, 32]`` (channel, row, column).

A spec may name a smaller archive in the same layout (e.g. the first 1,017
records of each official file): its split sizes then say how many records each
file holds (``train_size / 5`` per training file, ``test_size`` in the test
file), and nothing else is accepted. The archive is checked against its MD5
before it is parsed, and members are read by exact name from the tar.gz in
memory (nothing is extracted to disk). Any deviation -- missing or duplicated
member, wrong size, label out of range -- raises :class:`DatasetError`.
"""
from __future__ import annotations

import hashlib
import tarfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import torch

from .data import DatasetError  # one error type for every dataset problem

ARCHIVE_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz"
ARCHIVE_MD5 = "c32a1d4ab5d03f1284b67883e8d87530"
ARCHIVE_NAME = "cifar-10-binary.tar.gz"

MEMBER_DIR = "cifar-10-batches-bin"
TRAIN_MEMBERS = tuple(f"{MEMBER_DIR}/data_batch_{i}.bin" for i in range(1, 6))
TEST_MEMBER = f"{MEMBER_DIR}/test_batch.bin"
META_MEMBER = f"{MEMBER_DIR}/batches.meta.txt"
CLASS_NAMES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")

RECORDS_PER_BATCH = 10000
NUM_CLASSES = 10
IMAGE_SHAPE = (3, 32, 32)
PIXEL_BYTES = 3 * 32 * 32
RECORD_BYTES = 1 + PIXEL_BYTES  # 3073

MAX_ARCHIVE_BYTES = 400_000_000  # the official archive is 170_052_171 bytes
MAX_META_BYTES = 4096            # the official batches.meta.txt is 61 bytes
_CHUNK = 1 << 20


@dataclass(frozen=True, eq=False)  # eq on tensors would be ambiguous; use torch.equal
class Cifar10:
    train_x: torch.Tensor  # uint8 [5 * per-file records, 3, 32, 32] (official: 50000)
    train_y: torch.Tensor  # uint8 [5 * per-file records]
    test_x: torch.Tensor   # uint8 [test records, 3, 32, 32] (official: 10000)
    test_y: torch.Tensor   # uint8 [test records]
    train_file_records: tuple[int, ...] = ()  # records in data_batch_1..5


def file_md5(path: Path) -> str:
    h = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def find_archive(root: Path, md5: str) -> Path | None:
    """The archive in ``root`` whose MD5 is ``md5``, or None.

    ``root/ARCHIVE_NAME`` is tried first, then every other ``*.tar.gz`` in
    ``root`` (by name) up to MAX_ARCHIVE_BYTES, so a directory holding e.g. a
    sample archive under its own name serves the spec that names its MD5.
    """
    root, md5 = Path(root), md5.lower()
    if not root.is_dir():
        return None
    named = root / ARCHIVE_NAME
    others = sorted(p for p in root.glob("*.tar.gz") if p.name != ARCHIVE_NAME)
    for path in ([named] if named.is_file() else []) + others:
        if path.is_file() and path.stat().st_size <= MAX_ARCHIVE_BYTES and file_md5(path) == md5:
            return path
    return None


# -- decoding ----------------------------------------------------------------
def decode_records(data: bytes, expected_count: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Decode binary CIFAR-10 records into (images uint8 [N,3,32,32], labels uint8 [N])."""
    if len(data) % RECORD_BYTES:
        raise DatasetError(f"{len(data)} bytes is not a whole number of "
                           f"{RECORD_BYTES}-byte records")
    n = len(data) // RECORD_BYTES
    if expected_count is not None and n != expected_count:
        raise DatasetError(f"{n} records, expected {expected_count}")
    if n == 0:
        return torch.empty((0, *IMAGE_SHAPE), dtype=torch.uint8), torch.empty(0, dtype=torch.uint8)
    # bytearray: torch.frombuffer warns on (and must not alias) immutable bytes.
    records = torch.frombuffer(bytearray(data), dtype=torch.uint8).view(n, RECORD_BYTES)
    labels = records[:, 0].clone()
    bad = (labels >= NUM_CLASSES).nonzero()
    if len(bad):
        i = int(bad[0])
        raise DatasetError(f"record {i} has label {int(labels[i])}, expected 0..9")
    images = records[:, 1:].contiguous().view(n, *IMAGE_SHAPE)
    return images, labels


def check_meta(data: bytes) -> None:
    """``batches.meta.txt`` must list the ten CIFAR-10 class names in label order."""
    names = tuple(line.strip() for line in data.decode("ascii", "replace").splitlines() if line.strip())
    if names != CLASS_NAMES:
        raise DatasetError(f"class names {list(names)[:12]}, expected {list(CLASS_NAMES)}")


# -- loading -----------------------------------------------------------------
def load_cifar10(root: Path, *, md5: str = ARCHIVE_MD5, train_records: int | None = RECORDS_PER_BATCH,
                 test_records: int | None = RECORDS_PER_BATCH) -> Cifar10:
    """Load the archive in ``root`` whose MD5 is ``md5`` (see ``find_archive``); never downloads."""
    path = find_archive(root, md5)
    if path is None:
        raise DatasetError(f"no CIFAR-10 archive with MD5 {md5} in {root} (looked at {ARCHIVE_NAME} and "
                           f"every *.tar.gz there); the official one is {ARCHIVE_URL}")
    return load_archive(path, md5, train_records=train_records, test_records=test_records)


def load_archive(path: Path, md5: str | None, *, train_records: int | None = RECORDS_PER_BATCH,
                 test_records: int | None = RECORDS_PER_BATCH) -> Cifar10:
    """Decode one archive after checking its MD5 (unless ``md5`` is None).

    ``train_records`` is the record count of EACH training file, ``test_records``
    that of the test file (official: 10000 both); None accepts any whole number
    of records (to inspect an archive before writing a spec for it).
    """
    path = Path(path)
    if md5 is not None:
        actual = file_md5(path)
        if actual != md5.lower():
            raise DatasetError(f"{path}: checksum mismatch: expected MD5 {md5}, got {actual}")
    counts = {name: train_records for name in TRAIN_MEMBERS} | {TEST_MEMBER: test_records}
    decoded = _read_members(path, counts)
    train = [decoded[name] for name in TRAIN_MEMBERS]
    test_x, test_y = decoded[TEST_MEMBER]
    return Cifar10(train_x=torch.cat([x for x, _ in train]),
                   train_y=torch.cat([y for _, y in train]),
                   test_x=test_x, test_y=test_y,
                   train_file_records=tuple(int(y.shape[0]) for _, y in train))


def _read_members(path: Path, counts: dict[str, int | None]) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Decode the six batch members (and check the class names) in one pass over the tar.gz."""
    out: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    seen_meta = False
    try:
        with tarfile.open(path, "r:gz") as tf:
            for member in tf:
                name = member.name
                if name not in counts and name != META_MEMBER:
                    continue
                if name in out or (name == META_MEMBER and seen_meta):
                    raise DatasetError(f"{path}: member {name} appears twice")
                if not member.isreg():
                    raise DatasetError(f"{path}: member {name} is not a regular file")
                if name == META_MEMBER:
                    seen_meta = True
                    _read_meta(tf, member, path)
                    continue
                out[name] = _read_batch(tf, member, counts[name], path)
    except (tarfile.TarError, EOFError, OSError, zlib.error) as e:
        raise DatasetError(f"{path}: not a readable tar.gz archive: {e!r}") from e
    missing = [n for n in counts if n not in out]
    if missing:
        raise DatasetError(f"{path}: missing member(s) {', '.join(missing)}")
    return out


def _read_batch(tf: tarfile.TarFile, member: tarfile.TarInfo, count: int | None,
                path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    name, size = member.name, member.size
    if count is not None and size != count * RECORD_BYTES:
        raise DatasetError(f"{path}: member {name} has {size} bytes, expected {count * RECORD_BYTES} "
                           f"({count} records of {RECORD_BYTES} bytes, as the chain spec says)")
    if count is None and (size % RECORD_BYTES or size > MAX_ARCHIVE_BYTES):
        raise DatasetError(f"{path}: member {name} has {size} bytes, not a whole number of "
                           f"{RECORD_BYTES}-byte records")
    data = tf.extractfile(member).read()
    if len(data) != size:
        raise DatasetError(f"{path}: member {name} truncated: read {len(data)} of {size} bytes")
    try:
        return decode_records(data, count)
    except DatasetError as e:
        raise DatasetError(f"{path}: member {name}: {e}") from e


def _read_meta(tf: tarfile.TarFile, member: tarfile.TarInfo, path: Path) -> None:
    if member.size > MAX_META_BYTES:
        raise DatasetError(f"{path}: member {member.name} has {member.size} bytes, at most "
                           f"{MAX_META_BYTES} expected")
    try:
        check_meta(tf.extractfile(member).read())
    except DatasetError as e:
        raise DatasetError(f"{path}: member {member.name}: {e}") from e
