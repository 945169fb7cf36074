"""Shared session fixtures: the tiny chain spec, its synthetic data, replayers,
a fixed Ed25519 key, an in-memory chain view and a mined block on genesis.

Everything is offline and deterministic: the dataset is generated from the
spec's seed (once per session: it takes a few seconds), keys come from fixed
bytes, the reference miner runs from a fixed seed and block timestamps are
fixed offsets from the genesis time. Blocks are made by tests/blocks.py.

Sub-directories may define fixtures with the same names (tests/miner does);
theirs win inside their directory.
"""
from __future__ import annotations

import os
from typing import Callable

# Tests that compare thread counts run 2-thread OpenMP regions beside the other pytest-xdist worker: a waiting
# thread sleeps instead of spinning on the core that worker needs (a thread-count test under a busy core:
# 30 s spinning, 19 s sleeping). Set before torch loads its OpenMP runtime; the suite's processes inherit it.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import pytest
import torch
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from consensus.block import BlockHeader, genesis_header
from consensus.data import Dataset, make_synthetic
from consensus.spec import ChainSpec, preset
from consensus.training import Replayer, genesis_state
from consensus.weights import State
# the block factory (tests/blocks.py); the suites import these names from here too
from tests.blocks import (BLOCK_GAP_MS, MINER_SEED, MemoryView, MinedBlock, low_difficulty,  # noqa: F401
                          mine_block)
from tests.chain_spec import TINY_TEST


GIB_PER_WORKER = 4    # a worker (~0.35 GB) and the node processes its tests run at once (~0.4 GB each, up to 8)


def memory_gib() -> float:
    """The memory this process may use: the machine's, or its cgroup's limit when lower (a container)."""
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    try:
        total = min(total, int(open("/sys/fs/cgroup/memory.max").read()))
    except (OSError, ValueError):     # no cgroup v2 file, or "max"
        pass
    return total / 2 ** 30


def pytest_xdist_auto_num_workers(config) -> int:
    """``-n auto`` (pyproject.toml's addopts): one worker per core this process may run on, at most 4 and one
    per GIB_PER_WORKER of memory (issue 31.2); none where that leaves fewer than 2, or for a run of one test
    file (``--dist loadfile`` would give it one worker anyway): it runs in this process, without the workers'
    start-up."""
    paths = [a for a in config.args if not a.startswith("-")]
    if len(paths) == 1 and paths[0].split("::")[0].endswith(".py"):
        return 0
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    workers = min(cores, 4, int(memory_gib() // GIB_PER_WORKER))
    return 0 if workers < 2 else workers


def pytest_configure(config):
    """A SIGTERM to pytest ends the run as Ctrl-C does, with its teardown: fixtures stop their nodes
    (tests/nodeproc.py, issue 31.13)."""
    from tests.nodeproc import sigterm_as_interrupt
    sigterm_as_interrupt()


# -- fixtures ------------------------------------------------------------------
@pytest.fixture(scope="session", autouse=True)
def _one_torch_thread():
    """One torch thread for the whole suite (restored after).

    Tests check results, not speed; on a shared 2-core machine a 2-thread OpenMP
    region waits on the other core and small-model tests ran 10-100x slower.
    Tests that compare thread counts set them explicitly and restore them.
    """
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def tiny_spec() -> ChainSpec:
    return TINY_TEST


@pytest.fixture(scope="session")
def tiny_dataset(tiny_spec) -> Dataset:
    d = tiny_spec.dataset
    return make_synthetic(d.seed, d.train_size, d.test_size)


@pytest.fixture(scope="session")
def k1_spec(tiny_spec) -> ChainSpec:
    """tiny with k = 1: blocks are found in a few steps (tests of the accuracy rule and fork choice)."""
    return low_difficulty(tiny_spec, 1)


@pytest.fixture(scope="session")
def paper_spec() -> ChainSpec:
    """The dgg-paper research preset: the paper's (v1, forgeable) rules on the tiny model and data."""
    return preset("dgg-paper")


@pytest.fixture(scope="session")
def replayer(tiny_spec, tiny_dataset) -> Callable[..., Replayer]:
    """``replayer(spec=tiny_spec, dataset=tiny_dataset)``: a fresh canonical Replayer."""
    def make(spec: ChainSpec | None = None, dataset: Dataset | None = None) -> Replayer:
        return Replayer(spec or tiny_spec, dataset if dataset is not None else tiny_dataset)
    return make


@pytest.fixture(scope="session")
def miner_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.from_private_bytes(bytes(range(32)))


@pytest.fixture(scope="session")
def other_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.from_private_bytes(bytes(range(100, 132)))


@pytest.fixture(scope="session")
def tiny_genesis(tiny_spec) -> BlockHeader:
    return genesis_header(tiny_spec)


@pytest.fixture(scope="session")
def tiny_genesis_state(tiny_spec) -> State:
    return genesis_state(tiny_spec)


@pytest.fixture
def memory_view() -> Callable[..., MemoryView]:
    return MemoryView


@pytest.fixture(scope="session")
def block_miner(tiny_dataset, miner_key) -> Callable[..., MinedBlock]:
    """``block_miner(spec, parent, w, view, seed=..., k=..., now_ms=..., records=...)``."""
    def mine(spec: ChainSpec, parent: BlockHeader, w: State, view, **kw) -> MinedBlock:
        kw.setdefault("dataset", tiny_dataset)
        dataset = kw.pop("dataset")
        key = kw.pop("key", miner_key)
        return mine_block(spec, dataset, parent, w, view, key, **kw)
    return mine


@pytest.fixture(scope="session")
def tiny_block(tiny_spec, tiny_dataset, tiny_genesis, tiny_genesis_state, miner_key) -> MinedBlock:
    """A valid height-1 block on the tiny genesis (k = 8), mined once per session (v2 rules)."""
    return mine_block(tiny_spec, tiny_dataset, tiny_genesis, tiny_genesis_state, MemoryView([tiny_genesis]),
                      miner_key, seed=MINER_SEED)
