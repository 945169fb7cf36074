"""Getting a chain's dataset onto this machine, and writing a spec for a local archive.

Consensus only ever reads local files (consensus/cifar10.py decodes and checks
an archive found by its MD5). This module does what is not consensus:

* ``ensure_archive``: make sure the archive a spec names is in the data
  directory, downloading the official CIFAR-10 archive only when no file there
  has the spec's MD5 (a directory that holds it, under any ``*.tar.gz`` name,
  is never downloaded into);
* ``download_archive``: the bounded, checked HTTP download itself;
* ``load_node_dataset``: both, then ``consensus.data.load_dataset``;
* ``spec_for_archive``: a preset's rules on another archive in the official
  layout (e.g. a sample): its split sizes, MD5 and decoded split hashes pinned.
"""
from __future__ import annotations

import dataclasses
import hashlib
import os
import sys
import time
from pathlib import Path

import httpx

from consensus import cifar10
from consensus.cifar10 import ARCHIVE_MD5, ARCHIVE_NAME, ARCHIVE_URL, MAX_ARCHIVE_BYTES
from consensus.data import Dataset, DatasetError, load_dataset, split_hash

_CHUNK = 1 << 20
_PROGRESS_INTERVAL_S = 0.25


# -- the archive a spec names ------------------------------------------------------
SOURCES = {ARCHIVE_MD5: ARCHIVE_URL}  # archives that may be downloaded: MD5 -> URL


def ensure_archive(dataset_spec, data_dir: Path, *, download: bool = True, progress: bool = True,
                   sources: dict[str, str] = SOURCES) -> Path | None:
    """The spec's archive in ``data_dir`` (None for generated data); downloads only a known source."""
    if dataset_spec.id != "cifar10":
        return None
    md5 = (dataset_spec.archive_md5 or ARCHIVE_MD5).lower()
    found = cifar10.find_archive(data_dir, md5)
    if found is not None:
        return found
    if md5 not in sources:
        raise DatasetError(f"no archive with MD5 {md5} in {data_dir}: this spec ({dataset_spec.train_size} + "
                           f"{dataset_spec.test_size} images) names an archive that is not the official "
                           f"CIFAR-10 one, so it is never downloaded; put it in that directory (--dataset-dir; --datadir is the chain's)")
    if not download:
        raise DatasetError(f"{data_dir} holds no CIFAR-10 archive with MD5 {md5} and downloading is off; "
                           f"fetch {sources[md5]} into it")
    return download_archive(data_dir, sources[md5], md5, progress=progress)


def load_node_dataset(dataset_spec, data_dir: Path, *, download: bool = True, progress: bool = True,
                      sources: dict[str, str] = SOURCES) -> Dataset:
    """``ensure_archive``, then the consensus loader (which checks the pinned split hashes)."""
    ensure_archive(dataset_spec, Path(data_dir), download=download, progress=progress, sources=sources)
    return load_dataset(dataset_spec, Path(data_dir))


# -- a spec for a local archive ---------------------------------------------------------
def spec_for_archive(base, archive: Path, name: str | None = None):
    """``base``'s rules (a cifar10 preset) on the archive at ``archive``, with its data pinned.

    The split sizes come from the archive (every training file must hold the
    same number of records), the MD5 from the file, the split SHA-256s from the
    decoded tensors. The name is ``base.name`` for the official archive and
    ``<base.name>-sample`` for any other, unless ``name`` is given. The genesis
    block's claim (v4: block 1's floor) is the genesis model's correct count on
    this archive's E, measured here (on a sample of the official archive E is the
    same images, and so the same count as the preset pins).
    """
    if base.dataset.id != "cifar10":
        raise DatasetError(f"spec {base.name!r} uses {base.dataset.id} data, not a CIFAR-10 archive")
    archive = Path(archive)
    if not archive.is_file():
        raise DatasetError(f"{archive}: no such file")
    if archive.stat().st_size > MAX_ARCHIVE_BYTES:
        raise DatasetError(f"{archive}: larger than {MAX_ARCHIVE_BYTES} bytes")
    md5 = cifar10.file_md5(archive)
    c = cifar10.load_archive(archive, md5, train_records=None, test_records=None)
    train, test = int(c.train_y.shape[0]), int(c.test_y.shape[0])
    if len(set(c.train_file_records)) != 1 or train == 0 or test == 0:
        raise DatasetError(f"{archive}: the five training files must hold the same, non-zero number of "
                           f"records (they hold {list(c.train_file_records)}), and the test file at least "
                           f"one ({test})")
    if base.evaluation.size > test:
        raise DatasetError(f"{archive}: {test} test images, fewer than the evaluation set E "
                           f"({base.evaluation.size})")
    dataset = dataclasses.replace(base.dataset, train_size=train, test_size=test, archive_md5=md5,
                                  train_sha256=split_hash(c.train_x, c.train_y),
                                  test_sha256=split_hash(c.test_x, c.test_y))
    if name is None:
        name = base.name if md5 == ARCHIVE_MD5 else f"{base.name}-sample"
    from consensus.training import Replayer, genesis_state   # torch: only when a spec is made from an archive
    spec = dataclasses.replace(base, name=name, dataset=dataset)
    measured = Replayer(spec, Dataset(c.train_x, c.train_y, c.test_x, c.test_y)).accuracy(genesis_state(spec)).correct
    return dataclasses.replace(spec, evaluation=dataclasses.replace(spec.evaluation, genesis_correct=measured))


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
        actual = cifar10.file_md5(dest)
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
