"""Local fixtures for the miner tests: small specs, data and states, all offline."""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib

import pytest
import torch

from consensus.data import Dataset, make_synthetic
from consensus.spec import ChainSpec, preset
from consensus.training import Replayer, genesis_state
from tests.chain_spec import TINY_TEST


MINER = hashlib.sha256(b"tests/miner/key").hexdigest()     # a stand-in miner public key (batches only)


def seed_hash(label: str) -> str:
    """A stand-in 32-byte hash: a parent block hash (batches) or R's seed (consensus.proof.r_seed)."""
    return hashlib.sha256(f"tests/miner/{label}".encode()).hexdigest()


def job_on_genesis(spec, k: int, miner: str = MINER):
    """A mining job on the spec's genesis at difficulty ``k`` (an in-memory view holding genesis), its
    clock stopped 2 s after genesis (redraw epoch 0: R and the floor do not depend on the wall clock).
    The tests mine from other states than the genesis W' (``tiny_states``), so the genesis claim is 0 here:
    the floor is the subject only of the tests that set the parent's claim."""
    import dataclasses

    from consensus.block import genesis_header
    from miner.reference import make_job

    from tests.blocks import BLOCK_GAP_MS, MemoryView
    g = dataclasses.replace(genesis_header(spec), acc_after=0)
    ts = g.timestamp_ms + BLOCK_GAP_MS
    return make_job(spec, g, k, miner, MemoryView([g]), now_ms=lambda: ts)


def random_cifar_shaped(train: int, test: int, seed: int = 0) -> Dataset:
    g = torch.Generator().manual_seed(seed)
    return Dataset(torch.randint(0, 256, (train, 3, 32, 32), dtype=torch.uint8, generator=g),
                   torch.randint(0, 10, (train,), dtype=torch.uint8, generator=g),
                   torch.randint(0, 256, (test, 3, 32, 32), dtype=torch.uint8, generator=g),
                   torch.randint(0, 10, (test,), dtype=torch.uint8, generator=g))


@contextlib.contextmanager
def one_thread():
    """One torch thread inside the block (restored after).

    The tests check results, not speed. On a shared 2-core machine, every small
    op in a 2-thread OpenMP region waits for the other core, and the tiny-model
    tests ran ~100x slower under load than with one thread.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    with one_thread():
        yield


@pytest.fixture(scope="session")
def tiny_spec() -> ChainSpec:
    return TINY_TEST


@pytest.fixture(scope="session")
def tiny_data(tiny_spec) -> Dataset:
    d = tiny_spec.dataset
    with one_thread():
        return make_synthetic(d.seed, d.train_size, d.test_size)


@pytest.fixture(scope="session")
def tiny_states(tiny_spec, tiny_data) -> dict[str, dict]:
    """Genesis W and a W after 30 canonical steps (so the tests do not only see the init)."""
    w0 = genesis_state(tiny_spec)
    r = Replayer(tiny_spec, tiny_data)
    r.load(w0)
    rng = torch.Generator().manual_seed(5)
    with one_thread():
        for _ in range(30):
            r.step(torch.randperm(tiny_spec.dataset.train_size, generator=rng)[:4].tolist())
    return {"genesis": w0, "trained": r.state()}


@pytest.fixture(scope="session")
def resnet_spec() -> ChainSpec:
    """cifar10-resnet18 rules on a small random CIFAR-shaped set (CIFAR-10 is not needed)."""
    spec = preset("cifar10-resnet18")
    return dataclasses.replace(spec, dataset=dataclasses.replace(spec.dataset, train_size=256, test_size=100),
                               evaluation=dataclasses.replace(spec.evaluation, size=100))


@pytest.fixture(scope="session")
def resnet_data() -> Dataset:
    return random_cifar_shaped(256, 100, seed=3)
