"""Fixtures for the node tests: real `polchain node` processes over real SQLite files.

* ``NodeProc`` (tests/nodeproc.py) starts ``polchain node`` as a subprocess on a
  free port, waits for /health and stops it with a signal.
* ``template`` is a small chain (tiny preset, a few blocks) mined in-process once
  per session; ``BlockSmith`` builds the next valid block on a chain in-process
  (the fast miner through ``node.mining.mine_on_tip``) so tests can post it (header
  and records: a v2 block carries no weights), or tamper with it and re-sign it.

Every node runs with ``--threads 1`` (the machine's cores are shared).
"""
from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from consensus.block import Block, BlockHeader
from consensus.records import Record
from consensus.weights import State, encode_state
from tests.nodeproc import NodeProc, free_port  # noqa: F401  (re-exported for the tests)

TEMPLATE_BLOCKS = 6


def post_block(node, header: BlockHeader | dict, records: list | None = None, **kw) -> httpx.Response:
    """POST /blocks (``node``: a NodeProc or an httpx.Client): the header as JSON without ``records``
    (a block without records, or an announcement with ``X-Polchain-Origin``), multipart with them."""
    hd = header.to_dict() if isinstance(header, BlockHeader) else header
    if records is None:
        return node.post("/blocks", json=hd, **kw)
    files = {"header": (None, json.dumps(hd), "application/json"),
             "records": (None, json.dumps(records), "application/json")}
    return node.post("/blocks", files=files, **kw)


@dataclass(frozen=True)
class Built:
    """A block made in-process: what POST /blocks takes (header and records) and its post-state W'."""
    header: BlockHeader
    records: list
    state: State

    @property
    def state_bytes(self) -> bytes:
        return encode_state(self.state)


class BlockSmith:
    """An in-process chain (same spec as the nodes) that mines the next block on demand."""

    def __init__(self, datadir: Path, preset: str = "tiny", seed: int = 0, dataset=None):
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

        from miner.search import make_miner
        from node.chain import Chain
        from node.setup import open_chain, resolve_spec

        self.datadir = Path(datadir)
        self.spec = resolve_spec(self.datadir, preset)
        if dataset is None:
            self.chain = open_chain(self.datadir, self.spec, archival=True, progress=False)
        else:  # share an already loaded dataset (building it takes seconds)
            self.chain = Chain(self.spec, self.datadir, dataset, archival=True)
        self.miner = make_miner("fast", self.spec, self.chain.dataset, device="cpu", seed=seed)
        self.key = Ed25519PrivateKey.from_private_bytes(bytes([7]) * 32)

    def next_block(self, *, submit: bool = False, records: tuple[Record, ...] = ()) -> Built:
        """A valid block on the in-process chain's tip (mined by the node's own ``mine_on_tip``,
        signed with this smith's key), carrying ``records``."""
        from node.mining import mine_on_tip

        block, found = mine_on_tip(self.chain, self.miner, self.key, records=lambda: records)
        header, recs = block.header, block.wire_records
        if submit:
            out = self.chain.submit(Block(header, recs))
            assert out.status == "accepted", (out.code, out.detail)
        return Built(header, recs, found.state)

    def mine(self, n: int) -> None:
        for _ in range(n):
            self.next_block(submit=True)

    def block_at(self, height: int) -> Built:
        """The block at ``height`` on this chain, mining up to it first."""
        while self.chain.tip().height < height:
            self.next_block(submit=True)
        b = self.chain.store.get(self.chain.store.hash_at(height))
        return Built(b.header, b.records, self.chain.load_weights(b.header.state_hash))

    def fork(self, dest: Path, seed: int) -> "BlockSmith":
        """Another smith on a copy of this chain (same dataset, its own miner seed)."""
        return BlockSmith(self.copy_datadir(dest), self.spec.name, seed, dataset=self.chain.dataset)

    def copy_datadir(self, dest: Path) -> Path:
        """A copy of the chain's datadir (connections closed first, so the WAL is checkpointed)."""
        self.chain.store.engine.dispose()
        shutil.copytree(self.datadir, dest, ignore=shutil.ignore_patterns("*.log"))
        return Path(dest)


def certificate(n: int = 0) -> Record:
    """A valid model-certificate record (a fixed owner key; ``n`` varies the model hash)."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from consensus.certificates import make_certificate
    owner = Ed25519PrivateKey.from_private_bytes(bytes([9]) * 32)
    return make_certificate(owner, f"{n:064x}", "cd" * 32, {"name": f"test-{n}"}, 1)


@pytest.fixture(scope="session")
def smith(tmp_path_factory) -> BlockSmith:
    """The template chain: genesis + TEMPLATE_BLOCKS blocks, mined in-process."""
    s = BlockSmith(tmp_path_factory.mktemp("template") / "chain")
    s.mine(TEMPLATE_BLOCKS)
    return s


@pytest.fixture
def node_factory(tmp_path):
    """Start nodes; every node still running at teardown gets SIGTERM and must exit 0."""
    started: list[NodeProc] = []

    def make(datadir: Path, *args: str, start: bool = True) -> NodeProc:
        n = NodeProc(datadir, *args)
        started.append(n)
        return n.start() if start else n

    yield make
    bad = []
    for n in started:
        if n.alive():
            rc = n.stop()
            if rc != 0:
                bad.append((n.url, rc))
    assert not bad, f"nodes did not stop cleanly: {bad}"


def _session_node(tmp_path_factory, smith: BlockSmith, name: str, *args: str):
    d = smith.copy_datadir(tmp_path_factory.mktemp(name) / "data")
    n = NodeProc(d, *args).start()
    yield n
    if n.alive():
        n.stop()


@pytest.fixture(scope="session")
def static_node(tmp_path_factory, smith):
    """A non-mining node over a copy of the template chain; tests must leave its best chain as found."""
    yield from _session_node(tmp_path_factory, smith, "static")
