"""Consensus-critical CIFAR-10 reader (official *binary* version, no pickle).

Every node must see bit-identical training and test tensors, so this module
reads the dataset straight from the official archive and nothing else:

    https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz
    MD5 c32a1d4ab5d03f1284b67883e8d87530

We use the binary version rather than the better known "python version"
because the latter is a set of pickles, and unpickling runs arbitrary code: a
node must never do that on a file fetched from the network. The binary format
is trivial to parse and to check:

* ``cifar-10-batches-bin/data_batch_1.bin`` .. ``data_batch_5.bin``: training
  set, 10000 records each; train = batches 1..5 concatenated in that order.
* ``cifar-10-batches-bin/test_batch.bin``: test set, 10000 records.
* Each record is 3073 bytes: one label byte (0..9), then 3072 pixel bytes,
  the 1024 red values, then 1024 green, then 1024 blue, each plane a 32x32
  image in row-major order. So a record's pixels reshape directly to
  ``[3, 32, 32]`` (channel, row, column).

The archive is checked against its MD5 before it is parsed, and members are
read by exact name from the tar.gz in memory (nothing is extracted to disk).
Any deviation -- missing or duplicated member, wrong size, label out of range
-- raises :class:`DatasetError`.
"""
from __future__ import annotations

import hashlib
import os
import sys
import tarfile
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

import httpx
import torch

ARCHIVE_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz"
ARCHIVE_MD5 = "c32a1d4ab5d03f1284b67883e8d87530"
ARCHIVE_NAME = "cifar-10-binary.tar.gz"

MEMBER_DIR = "cifar-10-batches-bin"
TRAIN_MEMBERS = tuple(f"{MEMBER_DIR}/data_batch_{i}.bin" for i in range(1, 6))
TEST_MEMBER = f"{MEMBER_DIR}/test_batch.bin"

RECORDS_PER_BATCH = 10000
NUM_CLASSES = 10
IMAGE_SHAPE = (3, 32, 32)
PIXEL_BYTES = 3 * 32 * 32
RECORD_BYTES = 1 + PIXEL_BYTES  # 3073

MAX_ARCHIVE_BYTES = 400_000_000  # the official archive is 170_052_171 bytes
_CHUNK = 1 << 20
_PROGRESS_INTERVAL_S = 0.25


class DatasetError(Exception):
    """The dataset is missing, corrupt, or not in the expected format."""


@dataclass(frozen=True, eq=False)  # eq on tensors would be ambiguous; use torch.equal
class Cifar10:
    train_x: torch.Tensor  # uint8 [50000, 3, 32, 32]
    train_y: torch.Tensor  # uint8 [50000]
    test_x: torch.Tensor   # uint8 [10000, 3, 32, 32]
    test_y: torch.Tensor   # uint8 [10000]


def file_md5(path: Path) -> str:
    h = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


# -- download ----------------------------------------------------------------
def download_archive(root: Path, url: str = ARCHIVE_URL, md5: str = ARCHIVE_MD5, *,
                     progress: bool = True, timeout: float = 60.0,
                     max_bytes: int = MAX_ARCHIVE_BYTES) -> Path:
    """Make sure ``root/ARCHIVE_NAME`` exists with the given MD5; return its path.

    Downloads only if the file is absent or has the wrong checksum. The body is
    streamed to ``ARCHIVE_NAME + ".part"``, checked, fsynced and renamed into
    place, so the final path only ever holds a verified archive.
    """
    root = Path(root)
    md5 = md5.lower()
    dest = root / ARCHIVE_NAME
    if dest.is_file():
        actual = file_md5(dest)
        if actual == md5:
            return dest
        if progress:
            print(f"{dest}: checksum {actual} != expected {md5}, downloading again",
                  file=sys.stderr)

    root.mkdir(parents=True, exist_ok=True)
    part = root / (ARCHIVE_NAME + ".part")
    try:
        actual = _download(url, part, progress=progress, timeout=timeout,
                           max_bytes=max_bytes)
        if actual != md5:
            raise DatasetError(f"checksum mismatch for {url}: expected MD5 {md5}, "
                               f"got {actual}")
        os.replace(part, dest)
    except BaseException:
        part.unlink(missing_ok=True)
        raise
    _fsync_dir(root)
    return dest


def _download(url: str, part: Path, *, progress: bool, timeout: float,
              max_bytes: int) -> str:
    """Stream ``url`` into ``part`` (fsynced); return the MD5 hex of the body."""
    h = hashlib.md5(usedforsecurity=False)
    done = 0
    try:
        with httpx.stream("GET", url, timeout=timeout, follow_redirects=True) as r:
            if r.status_code != 200:
                raise DatasetError(f"download of {url} failed: HTTP {r.status_code}")
            total = _content_length(r)
            if total is not None and total > max_bytes:
                raise DatasetError(f"download of {url} refused: {total} bytes "
                                   f"announced, limit is {max_bytes}")
            start = last = time.monotonic()
            with open(part, "wb") as f:
                for chunk in r.iter_raw(_CHUNK):
                    done += len(chunk)
                    if done > max_bytes:
                        raise DatasetError(f"download of {url} aborted: more than "
                                           f"{max_bytes} bytes")
                    f.write(chunk)
                    h.update(chunk)
                    now = time.monotonic()
                    if progress and now - last >= _PROGRESS_INTERVAL_S:
                        _show_progress(done, total, now - start, end="")
                        last = now
                f.flush()
                os.fsync(f.fileno())
            if total is not None and done != total:
                raise DatasetError(f"download of {url} incomplete: got {done} of "
                                   f"{total} bytes")
            if progress:
                _show_progress(done, total, time.monotonic() - start, end="\n")
    except httpx.HTTPError as e:
        raise DatasetError(f"download of {url} failed: {e!r}") from e
    return h.hexdigest()


def _content_length(r: httpx.Response) -> int | None:
    # Counts the bytes on the wire, which is what iter_raw yields: a server that
    # labels the .tar.gz "Content-Encoding: gzip" must not get it decompressed.
    value = r.headers.get("content-length")
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        return None


def _show_progress(done: int, total: int | None, elapsed: float, end: str) -> None:
    rate = done / elapsed / 1e6 if elapsed > 0 else 0.0
    if total:
        text = (f"{ARCHIVE_NAME}: {done / 1e6:.1f}/{total / 1e6:.1f} MB "
                f"({100 * done / total:5.1f}%) {rate:.1f} MB/s")
    else:
        text = f"{ARCHIVE_NAME}: {done / 1e6:.1f} MB {rate:.1f} MB/s"
    print("\r" + text, end=end, file=sys.stderr, flush=True)


def _fsync_dir(path: Path) -> None:
    if not hasattr(os, "O_DIRECTORY"):
        return  # Windows: directories cannot be opened for fsync
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


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


# -- loading -----------------------------------------------------------------
def load_cifar10(root: Path, *, download: bool = True, url: str = ARCHIVE_URL,
                 md5: str = ARCHIVE_MD5, progress: bool = True,
                 records_per_batch: int = RECORDS_PER_BATCH) -> Cifar10:
    """Load CIFAR-10 from ``root/ARCHIVE_NAME``, downloading it if allowed.

    ``records_per_batch`` applies to each of the six batch files; only tests
    should change it (to use small archives in the official layout).
    """
    root = Path(root)
    if download:
        path = download_archive(root, url, md5, progress=progress)
    else:
        path = root / ARCHIVE_NAME
        if not path.is_file():
            raise DatasetError(f"{path} not found and download=False; fetch {url} "
                               f"(MD5 {md5}) into {root}")
        actual = file_md5(path)
        if actual != md5.lower():
            raise DatasetError(f"{path}: checksum mismatch: expected MD5 {md5}, "
                               f"got {actual}")

    decoded = _read_members(path, records_per_batch)
    train = [decoded[name] for name in TRAIN_MEMBERS]
    test_x, test_y = decoded[TEST_MEMBER]
    return Cifar10(train_x=torch.cat([x for x, _ in train]),
                   train_y=torch.cat([y for _, y in train]),
                   test_x=test_x, test_y=test_y)


def _read_members(path: Path, records_per_batch: int) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Decode the six batch members in one sequential pass over the tar.gz."""
    size = records_per_batch * RECORD_BYTES
    out: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    try:
        with tarfile.open(path, "r:gz") as tf:
            for member in tf:
                name = member.name
                if name not in TRAIN_MEMBERS and name != TEST_MEMBER:
                    continue
                if name in out:
                    raise DatasetError(f"{path}: member {name} appears twice")
                if not member.isreg():
                    raise DatasetError(f"{path}: member {name} is not a regular file")
                if member.size != size:
                    raise DatasetError(f"{path}: member {name} has {member.size} bytes, "
                                       f"expected {size} ({records_per_batch} records "
                                       f"of {RECORD_BYTES} bytes)")
                data = tf.extractfile(member).read()
                if len(data) != size:
                    raise DatasetError(f"{path}: member {name} truncated: read "
                                       f"{len(data)} of {size} bytes")
                try:
                    out[name] = decode_records(data, records_per_batch)
                except DatasetError as e:
                    raise DatasetError(f"{path}: member {name}: {e}") from e
    except (tarfile.TarError, EOFError, OSError, zlib.error) as e:
        raise DatasetError(f"{path}: not a readable tar.gz archive: {e!r}") from e
    missing = [n for n in (*TRAIN_MEMBERS, TEST_MEMBER) if n not in out]
    if missing:
        raise DatasetError(f"{path}: missing member(s) {', '.join(missing)}")
    return out
