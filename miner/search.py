"""Choosing a miner implementation and a device."""
from __future__ import annotations

import torch

from consensus.data import Dataset
from consensus.spec import ChainSpec
from consensus.training import canonical_step

from .fast import FastMiner
from .reference import ReferenceMiner


def pick_device(name: str = "auto") -> str:
    if name != "auto":
        return name
    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def default_groups(spec: ChainSpec, device: str) -> int:
    """Candidates per fast-search pass (G).

    CPU: 16. Measured for resnet18-cifar on 2 cores (docs/mining.md): the
    search cost per candidate falls up to G = 16..24 (the per-pass canonical
    step and Python overhead are shared) and rises again from 32 (activations
    no longer fit the caches); 16 also keeps a pass, hence the reaction to a
    new tip, near one second there. GPU values are not measured yet.
    """
    if device.startswith("cuda"):
        return 256 if spec.model.arch == "tiny-cnn" else 64
    return 16


def make_miner(kind: str, spec: ChainSpec, dataset: Dataset, *, device: str = "cpu", seed: int | None = None,
               groups: int | None = None, advance_first: bool = True) -> ReferenceMiner:
    """``advance_first``: every block takes the spec's J advance steps before a hit may be published
    (the most learning a block can hold; docs/mining.md). False publishes the first hit."""
    device = pick_device(device)
    replayer = canonical_step(spec, dataset, device)
    min_advance = spec.proof.max_advance_steps if advance_first else 0
    if kind == "reference":
        m = ReferenceMiner(spec, replayer, seed, min_advance)
    elif kind == "fast":
        m = FastMiner(spec, replayer, groups or default_groups(spec, device), seed, min_advance=min_advance)
    else:
        raise ValueError(f"unknown miner {kind!r}")
    m.device = device
    return m
