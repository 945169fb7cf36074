"""Fixtures for the node tests: real `polchain node` processes over real SQLite files.

* ``NodeProc`` (tests/nodeproc.py) starts ``polchain node`` as a subprocess on a
  free port, waits for /health and stops it with a signal.
* ``smith`` is the template chain: a small chain (tiny preset, a few blocks) mined
  in-process once per session by tests/blocks.py's ``BlockSmith`` on a node datadir
  (``BlockSmith.open``), which builds the next valid block on a chain in-process (the
  fast miner through ``node.mining.mine_on_tip``) so tests can post it (header and
  records: a v2 block carries no weights), or tamper with it and re-sign it.

Every node runs with ``--threads 1`` (the machine's cores are shared).
"""
from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from consensus.block import BlockHeader
from consensus.records import Record
from tests.blocks import BlockSmith
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


def certificate(n: int = 0) -> Record:
    """A valid model-certificate record (a fixed owner key; ``n`` varies the model hash)."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from consensus.certificates import make_certificate
    owner = Ed25519PrivateKey.from_private_bytes(bytes([9]) * 32)
    return make_certificate(owner, f"{n:064x}", "cd" * 32, {"name": f"test-{n}"}, 1)


@pytest.fixture(scope="session")
def smith(tmp_path_factory) -> BlockSmith:
    """The template chain: genesis + TEMPLATE_BLOCKS blocks, mined in-process, each stamped 2 s after its
    parent (never the wall clock: the same chain on every run, tests/node/test_template_clock.py)."""
    s = BlockSmith.open(tmp_path_factory.mktemp("template") / "chain")
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
