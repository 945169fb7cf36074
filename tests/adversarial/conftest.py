"""Fixtures for the adversarial suite.

* ``honest``: a deterministic honest tiny-preset chain, mined once per session by
  tests/blocks.py's ``BlockSmith`` (fixed key, fixed timestamps 2 s apart, seeded
  fast miner through the node's ``mine_on_tip``), stored in a base
  datadir, plus one more valid block (``honest.next``, carrying one certificate
  record) that is *not* submitted, and a valid child of it (``honest.after_next``).
* ``chain``: a fresh ``node.chain.Chain`` on a copy of that datadir.
* ``node``: an in-process NodeService + FastAPI TestClient on another copy
  (network threads not started, miner off).

A protocol v2 block is its header and records; the node keeps each block's post-state
(``MinedBlock.state``). Every test that attacks ``chain`` ends with ``assert_unharmed``:
the tip and the stored best chain are exactly what they were before the attack.
"""
from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from consensus import errors
from consensus.block import Block, BlockHeader
from consensus.certificates import make_certificate
from consensus.data import load_dataset
from consensus.records import Record
from consensus.spec import ChainSpec
from consensus.weights import State
from node.chain import Chain
from node.outcome import Outcome
from node.store import VALID
from tests.blocks import BlockSmith, MinedBlock, resign
from tests.chain_spec import TINY_TEST, TINY_TEST_FILE

HONEST_BLOCKS = 14   # > mtp_window (11), below the first retarget height (21)
BLOCK_INTERVAL_MS = 2000
HONEST_KEY = Ed25519PrivateKey.from_private_bytes(bytes([1]) * 32)
CHEATER_KEY = Ed25519PrivateKey.from_private_bytes(bytes([3]) * 32)


def outcome_class(code: str) -> type[errors.BlockError]:
    """The exception class (and so the outcome family) of a wire reason code."""
    return errors.all_reason_codes()[code]


def signed(header: BlockHeader, key: Ed25519PrivateKey = CHEATER_KEY, **changes) -> BlockHeader:
    """``header`` with ``changes``, a valid ticket of the tiny chain (the attacks here pay it), signed by ``key``."""
    return resign(header, key, TINY_TEST, **changes)


def owner_certificate(n: int = 0) -> Record:
    """A valid model certificate (the owner is nobody in this suite)."""
    owner = Ed25519PrivateKey.from_private_bytes(bytes([5]) * 32)
    return make_certificate(owner, f"{n + 1:064x}", "cd" * 32, {"n": str(n)}, 1)


@dataclass
class Honest:
    spec: ChainSpec
    dataset: object
    datadir: Path
    blocks: list[MinedBlock]      # heights 1..HONEST_BLOCKS, all on the base chain
    next: MinedBlock              # a valid child of the tip (one certificate record), not submitted
    after_next: MinedBlock        # a valid child of ``next``, not submitted
    tip_model: State              # W' of the tip: where an honest miner continues


@pytest.fixture(scope="session")
def spec() -> ChainSpec:
    return TINY_TEST


@pytest.fixture(scope="session")
def dataset(spec, request, tmp_path_factory):
    """The tiny synthetic data; shared with tests/conftest.py's ``tiny_dataset`` when it exists."""
    try:
        return request.getfixturevalue("tiny_dataset")
    except pytest.FixtureLookupError:
        return load_dataset(spec.dataset, tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="session")
def honest(spec, dataset, tmp_path_factory) -> Honest:
    """Mine HONEST_BLOCKS + 2 blocks on a scratch chain; the base datadir keeps the first HONEST_BLOCKS."""
    root = tmp_path_factory.mktemp("honest")
    scratch = Chain(spec, root / "scratch", dataset)
    smith = BlockSmith(spec, dataset, HONEST_KEY, seed=1, gap_ms=BLOCK_INTERVAL_MS, chain=scratch)
    blocks = smith.mine(HONEST_BLOCKS)
    blocks += [smith.next_block(submit=True, records=(owner_certificate(0),)), smith.next_block(submit=True)]
    tip_model = blocks[HONEST_BLOCKS - 1].state
    scratch.store.close()
    base = Chain(spec, root / "node", dataset)
    for b in blocks[:HONEST_BLOCKS]:
        assert base.submit(b.block).status == "accepted"
    base.store.close()
    return Honest(spec, dataset, root / "node", blocks[:HONEST_BLOCKS], blocks[HONEST_BLOCKS],
                  blocks[HONEST_BLOCKS + 1], tip_model)


def open_copy(honest: Honest, dest: Path, **kw) -> Chain:
    shutil.copytree(honest.datadir, dest)
    return Chain(honest.spec, dest, honest.dataset, **kw)


@pytest.fixture
def chain(honest, tmp_path):
    c = open_copy(honest, tmp_path / "node")
    yield c
    c.store.close()


# -- checks ----------------------------------------------------------------------
@dataclass(frozen=True)
class Snapshot:
    tip: str
    best: tuple[str, ...]
    valid: int


def snapshot(chain: Chain) -> Snapshot:
    return Snapshot(chain.tip().hash, tuple(chain.store.best_hashes()),
                    chain.store.count_by_status().get(VALID, 0))


def assert_unharmed(chain: Chain, before: Snapshot) -> None:
    after = snapshot(chain)
    assert after.tip == before.tip, "the attack moved the tip"
    assert after.best == before.best, "the attack rewrote the stored best chain"
    assert after.valid == before.valid, "the attack got a block stored as valid"


def assert_rejected(out: Outcome, code: str, family: type) -> None:
    """Exact reason code and outcome class (Ignored / BadBody / InvalidBlock)."""
    assert out.code == code, f"expected {code}, got {out.status}/{out.code}: {out.detail}"
    assert issubclass(outcome_class(code), family), f"{code} is not a {family.__name__}"
    want_status = {"InvalidBlock": "invalid", "BadBody": "bad-body"}.get(family.__name__)
    if want_status:
        assert out.status == want_status, out
    else:
        assert out.status in ("ignored", "orphan", "duplicate"), out


@pytest.fixture
def attack(chain):
    """``attack(header, records, code, family)``: submit, check the verdict, check the chain is unharmed."""
    def _attack(header: BlockHeader, records: list | None, code: str, family: type,
                peer: str | None = "http://cheater.invalid:1") -> Outcome:
        before = snapshot(chain)
        out = chain.submit(Block(header, records), peer)
        assert_rejected(out, code, family)
        assert_unharmed(chain, before)
        return out
    return _attack


# -- an in-process node behind the real FastAPI app --------------------------------
@dataclass
class InProcessNode:
    service: object
    client: object
    datadir: Path


@pytest.fixture
def node(honest, tmp_path, monkeypatch):
    from fastapi.testclient import TestClient

    import consensus.data
    from node.app import create_app
    from node.service import NodeService
    from node.settings import Settings

    datadir = tmp_path / "svc"
    shutil.copytree(honest.datadir, datadir)
    monkeypatch.setattr(consensus.data, "load_dataset", lambda *a, **k: honest.dataset)   # as open_chain loads it
    service = NodeService(Settings(datadir=datadir, spec_file=TINY_TEST_FILE, threads=1, port=1))
    app = create_app(service, manage_lifecycle=False)
    with TestClient(app, raise_server_exceptions=False) as client:
        yield InProcessNode(service, client, datadir)
    service.stop()   # network threads were never started; stops the pools, closes the store
