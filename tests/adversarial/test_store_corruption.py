"""Damaged datadirs: a corrupted SQLite page or weights file is found on start, with a clear
message, instead of a traceback or a node that mines on a wrong model."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from node.chain import Chain, StartupError
from node.verify import verify_chain

from .conftest import open_copy

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
    h = honest.blocks[-1].header.weights_hash
    return d / "weights" / h[:2] / f"{h}.safetensors"


@pytest.mark.parametrize("damage", ["truncated", "bit-flip", "zeroed", "replaced-by-other-block"])
def test_corrupt_tip_weights_stop_start_up(damage, honest, tmp_path):
    d = _copy(honest, tmp_path)
    p = _tip_weights(honest, d)
    data = p.read_bytes()
    if damage == "truncated":
        p.write_bytes(data[: len(data) // 2])
    elif damage == "bit-flip":
        b = bytearray(data)
        b[-9] ^= 0x10
        p.write_bytes(bytes(b))
    elif damage == "zeroed":
        p.write_bytes(b"\0" * len(data))
    else:
        p.write_bytes(honest.blocks[0].body)
    with pytest.raises(StartupError, match=rf"weights file .*{p.name} of the tip \(height {len(honest.blocks)}"
                                           r".*corrupt"):
        Chain(honest.spec, d, honest.dataset)


def test_corrupt_old_weights_found_by_verify(honest, tmp_path):
    """An older block's weights (not the tip's) do not stop the node, but `verify` names the
    block and the reason."""
    chain = open_copy(honest, tmp_path / "node")
    h = honest.blocks[4].header
    p = chain.store.weights.path(h.weights_hash)
    b = bytearray(p.read_bytes())
    b[-3] ^= 0x01
    p.write_bytes(bytes(b))
    rep = verify_chain(chain)
    assert not rep.ok and rep.bad_height == h.height and rep.code == "weights-mismatch"
    chain.store.close()


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
