"""Datasets: decoded uint8 image tensors, their hashes, and normalisation.

A dataset is four tensors: ``train_x``/``test_x`` uint8 [N, 3, 32, 32] and
``train_y``/``test_y`` uint8 [N]. The spec pins SHA-256 of the train and test
splits (see ``split_hash``), computed over the decoded tensors, so a node with
different data refuses to start.

* ``cifar10``: decoded from the official binary archive, or a smaller one in the
  same layout that the spec names by MD5 and split sizes (consensus.cifar10).
* ``synthetic``: generated from a seed with integer arithmetic only (identical
  on every machine). Each class has a blocky colour prototype; an image is its
  class prototype blended with another class's, shifted, plus noise. It is
  learnable but not trivially, so accuracy visibly climbs as the chain grows.
"""
from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass
from pathlib import Path

import torch


class DatasetError(Exception):
    """The dataset is missing, corrupt, not in the expected format, or not the one the spec pins."""


@dataclass(frozen=True)
class Dataset:
    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor

    @property
    def train_size(self) -> int:
        return int(self.train_y.shape[0])


def split_hash(x: torch.Tensor, y: torch.Tensor) -> str:
    h = hashlib.sha256(b"polchain-dataset-split/1")
    for t in (x, y):
        if t.dtype != torch.uint8:
            raise DatasetError(f"dataset tensors must be uint8, got {t.dtype}")
        h.update(struct.pack(">B", t.dim()) + b"".join(struct.pack(">Q", d) for d in t.shape))
        h.update(t.contiguous().numpy().tobytes())
    return h.hexdigest()


def normalize(images_u8: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    """x = (u8 / 255 - mean_c) / std_c, in fp32, one op at a time (spec formula)."""
    x = images_u8.to(torch.float32) / 255.0
    m = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
    return (x - m) / s


# -- synthetic ----------------------------------------------------------------
def make_synthetic(seed: int, train_size: int, test_size: int, num_classes: int = 10) -> Dataset:
    g = torch.Generator().manual_seed(seed)
    # 8x8 colour grid per class, upsampled x4 by repetition -> 3x32x32 prototypes.
    grid = torch.randint(0, 256, (num_classes, 3, 8, 8), generator=g, dtype=torch.int64)
    protos = grid.repeat_interleave(4, dim=2).repeat_interleave(4, dim=3)

    protos16 = protos.to(torch.int16)          # every value below fits: 5 x 255 at most

    def split(n: int):
        y = torch.randint(0, num_classes, (n,), generator=g, dtype=torch.int64)
        other = (y + torch.randint(1, num_classes, (n,), generator=g, dtype=torch.int64)) % num_classes
        img = (3 * protos16[y] + 2 * protos16[other]) // 5
        shifts = torch.randint(-4, 5, (n, 2), generator=g, dtype=torch.int64)
        # roll each image by its own offset: out[i, j] = img[(i - dy) % 32, (j - dx) % 32], one roll per
        # offset (81 of them) rather than a gather over every pixel (the same values, ~10x faster)
        for dy, dx in torch.unique(shifts, dim=0).tolist():
            sel = ((shifts[:, 0] == dy) & (shifts[:, 1] == dx)).nonzero().view(-1)
            img[sel] = torch.roll(img[sel], shifts=(dy, dx), dims=(2, 3))
        noise = torch.randint(-70, 71, img.shape, generator=g, dtype=torch.int16)   # the same draws as int64
        img = (img + noise).clamp_(0, 255).to(torch.uint8)
        return img, y.to(torch.uint8)

    train_x, train_y = split(train_size)
    test_x, test_y = split(test_size)
    return Dataset(train_x, train_y, test_x, test_y)


# -- loading by spec ------------------------------------------------------------
def load_dataset(dataset_spec, data_dir: Path | None, *, verify: bool = True) -> Dataset:
    """Load the dataset a spec names and check it against the pinned hashes.

    Local files only: a cifar10 archive must already be in ``data_dir`` (found by
    the spec's MD5, see ``consensus.cifar10.find_archive``); fetching it is the
    node's business (node/dataset.py).
    """
    if dataset_spec.id == "synthetic":
        ds = make_synthetic(dataset_spec.seed, dataset_spec.train_size, dataset_spec.test_size)
    elif dataset_spec.id == "cifar10":
        ds = _load_cifar10(dataset_spec, data_dir)
    else:
        raise DatasetError(f"unknown dataset id {dataset_spec.id!r}")
    if verify:
        check_dataset(ds, dataset_spec)
    return ds


def cifar10_records(dataset_spec) -> tuple[int, int]:
    """(records in each of the five training files, records in the test file) the spec says."""
    if dataset_spec.train_size <= 0 or dataset_spec.train_size % 5 or dataset_spec.test_size <= 0:
        raise DatasetError(f"cifar10 train_size {dataset_spec.train_size} must be 5 x the records of one "
                           f"training file and test_size {dataset_spec.test_size} positive")
    return dataset_spec.train_size // 5, dataset_spec.test_size


def _load_cifar10(dataset_spec, data_dir: Path | None) -> Dataset:
    from . import cifar10
    if data_dir is None:
        raise DatasetError("cifar10 needs a data directory")
    per_file, test = cifar10_records(dataset_spec)
    c = cifar10.load_cifar10(Path(data_dir), md5=dataset_spec.archive_md5 or cifar10.ARCHIVE_MD5,
                             train_records=per_file, test_records=test)
    return Dataset(c.train_x, c.train_y, c.test_x, c.test_y)


def check_dataset(ds: Dataset, dataset_spec) -> None:
    for name, x, y, want in (("train", ds.train_x, ds.train_y, dataset_spec.train_sha256),
                             ("test", ds.test_x, ds.test_y, dataset_spec.test_sha256)):
        got = split_hash(x, y)
        if want is None:
            continue  # not pinned by this spec (see docs/protocol.md, cifar10 preset)
        if got != want:
            raise DatasetError(f"{dataset_spec.id} {name} split hashes to {got}, "
                               f"but the chain spec pins {want}: refusing to run on different data")
