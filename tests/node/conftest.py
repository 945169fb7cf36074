"""Fixtures for the node tests: real `polchain node` processes over real SQLite files.

* ``NodeProc`` (tests/nodeproc.py) starts ``polchain node`` as a subprocess on a
  free port, waits for /health and stops it with a signal.
* ``template`` is a small chain (tiny preset, a few blocks) mined in-process once
  per session; ``BlockSmith`` builds the next valid block on a chain in-process
  (``miner`` + ``miner.template.build_block``) so tests can post it, or tamper
  with it and re-sign it.

Every node runs with ``--threads 1`` (the machine's cores are shared).
"""
from __future__ import annotations

import shutil
from pathlib import Path

import httpx
import pytest

from consensus.block import BlockHeader
from consensus.difficulty import next_difficulty
from tests.nodeproc import NodeProc, free_port  # noqa: F401  (re-exported for the tests)

TEMPLATE_BLOCKS = 6


def post_block(node, header: BlockHeader | dict, body: bytes | None = None,
               records: list | None = None, **kw) -> httpx.Response:
    """POST /blocks (``node``: a NodeProc or an httpx.Client): multipart with a body, header-only JSON without."""
    hd = header.to_dict() if isinstance(header, BlockHeader) else header
    import json
    if body is None and records is None:
        return node.post("/blocks", json=hd, **kw)
    files = {"header": (None, json.dumps(hd), "application/json")}
    if body is not None:
        files["weights"] = ("weights.safetensors", body, "application/octet-stream")
    if records is not None:
        files["records"] = (None, json.dumps(records), "application/json")
    return node.post("/blocks", files=files, **kw)


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

    def next_block(self, *, submit: bool = False) -> tuple[BlockHeader, bytes]:
        """A valid block on the in-process chain's tip (signed with this smith's key)."""
        from miner.template import build_block

        tip, w_prime = self.chain.tip_model()
        k = next_difficulty(self.spec, tip.header, self.chain.view)
        found = self.miner.mine(tip.header, k, w_prime)
        header, body = build_block(self.spec, tip.header, k, found, self.key, self.chain.view)
        if submit:
            out = self.chain.submit(header, [], body)
            assert out.status == "accepted", (out.code, out.detail)
        return header, body

    def mine(self, n: int) -> None:
        for _ in range(n):
            self.next_block(submit=True)

    def block_at(self, height: int) -> tuple[BlockHeader, bytes]:
        """The block at ``height`` on this chain, mining up to it first."""
        while self.chain.tip().height < height:
            self.next_block(submit=True)
        b = self.chain.store.get(self.chain.store.hash_at(height))
        return b.header, self.chain.store.weights.get(b.header.weights_hash)

    def fork(self, dest: Path, seed: int) -> "BlockSmith":
        """Another smith on a copy of this chain (same dataset, its own miner seed)."""
        return BlockSmith(self.copy_datadir(dest), self.spec.name, seed, dataset=self.chain.dataset)

    def copy_datadir(self, dest: Path) -> Path:
        """A copy of the chain's datadir (connections closed first, so the WAL is checkpointed)."""
        self.chain.store.engine.dispose()
        shutil.copytree(self.datadir, dest, ignore=shutil.ignore_patterns("*.log"))
        return Path(dest)


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
