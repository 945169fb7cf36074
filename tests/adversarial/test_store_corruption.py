"""Damaged datadirs: a corrupted SQLite page or post-state file is found on start, with a clear
message, instead of a traceback or a node that mines on a wrong model. A damaged older
post-state never makes the node condemn a valid block, and `verify` (which replays from
genesis and trusts no stored state) is not affected by it."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from consensus.block import Block
from consensus.weights import encode_state
from node.chain import Chain, StartupError
from node.store import VALID
from node.verify import verify_chain

from .conftest import HONEST_KEY, open_copy, snapshot

REPO = Path(__file__).resolve().parents[2]
PAGE = 4096


def _copy(honest, tmp_path) -> Path:
    d = tmp_path / "node"
    shutil.copytree(honest.datadir, d)
    (d / "spec.json").write_text(honest.spec.to_json())
    return d


def _smash_page(db: Path, which: str) -> None:
    data = bytearray(db.read_bytes())
    pages = len(data) // PAGE
    n = {"header": 0, "schema": 1, "middle": pages // 2, "last": pages - 1}[which]
    data[n * PAGE:(n + 1) * PAGE] = bytes((i * 37 + 11) % 256 for i in range(PAGE))
    db.write_bytes(bytes(data))


@pytest.mark.parametrize("which", ["header", "schema", "middle", "last"])
def test_corrupt_sqlite_page_stops_start_up(which, honest, tmp_path):
    d = _copy(honest, tmp_path)
    assert not (d / "chain.sqlite-wal").exists() or (d / "chain.sqlite-wal").stat().st_size == 0
    _smash_page(d / "chain.sqlite", which)
    with pytest.raises(StartupError, match=r"chain\.sqlite is corrupt: .+ Restore the datadir"):
        Chain(honest.spec, d, honest.dataset)


def _tip_weights(honest, d: Path) -> Path:
    h = honest.blocks[-1].header.state_hash
    return d / "weights" / h[:2] / f"{h}.safetensors"


def _damage(p: Path, how: str, other: bytes = b"") -> None:
    """Damage a stored file the way disks and filesystems do (or replace it by ``other``)."""
    data = p.read_bytes()
    if how == "bit-flip":
        b = bytearray(data)
        b[-9] ^= 0x10
        p.write_bytes(bytes(b))
    elif how == "truncated":
        p.write_bytes(data[: len(data) // 2])
    elif how == "zeroed":
        p.write_bytes(b"\0" * len(data))
    elif how == "replaced":
        p.write_bytes(other)
    else:
        p.unlink()


@pytest.mark.parametrize("damage", ["truncated", "bit-flip", "zeroed", "replaced"])
def test_corrupt_tip_state_stops_start_up(damage, honest, tmp_path):
    d = _copy(honest, tmp_path)
    p = _tip_weights(honest, d)
    _damage(p, damage, other=encode_state(honest.blocks[0].state))      # another block's post-state
    with pytest.raises(StartupError, match=rf"weights file .*{p.name} of the tip \(height {len(honest.blocks)}"
                                           r".*corrupt"):
        Chain(honest.spec, d, honest.dataset)


@pytest.mark.parametrize("how", ["bit-flip", "truncated", "deleted"])
def test_damaged_parent_state_never_condemns_a_valid_child(how, honest, tmp_path):
    """Block 12's stored post-state is damaged (not the tip's: the node starts). A valid block on
    block 12 arrives: the damaged file says nothing about the block (calling the child invalid would
    be for good, and ban the honest peer that sent it): the node rebuilds block 12's state by replaying
    it from block 11's kept state, checked against its state_hash, and accepts the child; the damaged
    file is replaced by the good one; the best chain is untouched (the child is a side block)."""
    from tests.conftest import mine_block

    chain = open_copy(honest, tmp_path / "node")
    try:
        parent = honest.blocks[11]
        fork = mine_block(honest.spec, honest.dataset, parent.header, parent.state, chain.view, HONEST_KEY, seed=2)
        path = chain.store.weights.path(parent.header.state_hash)
        good = path.read_bytes()
        _damage(path, how)
        before = snapshot(chain)
        out = chain.submit(Block(fork.header, fork.records), "http://honest.invalid:1")
        assert (out.status, out.code) == ("accepted", ""), out
        assert chain.store.status(fork.header.hash) == VALID
        assert path.read_bytes() == good                                  # repaired by the replay
        after = snapshot(chain)
        assert (after.tip, after.best, after.valid) == (before.tip, before.best, before.valid + 1)
    finally:
        chain.store.close()


def test_damaged_old_state_does_not_affect_verify(honest, tmp_path):
    """`verify` replays every block from genesis, each from the state the previous replay produced:
    a damaged stored post-state of an older block is never read."""
    chain = open_copy(honest, tmp_path / "node")
    try:
        _damage(chain.store.weights.path(honest.blocks[4].header.state_hash), "bit-flip")
        rep = verify_chain(chain)
        assert rep.ok and rep.verified == len(honest.blocks), rep
        assert rep.final_accuracy == honest.blocks[-1].header.acc_after
    finally:
        chain.store.close()


@pytest.mark.slow
def test_cli_reports_corruption_without_traceback(honest, tmp_path):
    """`polchain node` on a smashed database: exit code 2 and one clear line (`polchain verify`
    opens the datadir through the same Chain constructor)."""
    d = _copy(honest, tmp_path)
    _smash_page(d / "chain.sqlite", "header")
    env = {k: v for k, v in os.environ.items() if not k.startswith("POLCHAIN_")}
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    from tests.nodeproc import free_port
    for args in (["node", "--datadir", str(d), "--port", str(free_port()), "--threads", "1"],):
        r = subprocess.run([sys.executable, "-m", "node.cli", *args], cwd=REPO, env=env, capture_output=True,
                           text=True, timeout=120)
        assert r.returncode == 2, (args, r.returncode, r.stderr[-2000:])
        assert "error: SQLite store" in r.stderr and "is corrupt" in r.stderr
        assert "Traceback" not in r.stderr, r.stderr[-2000:]
