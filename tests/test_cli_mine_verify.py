"""The real CLI, end to end: `polchain mine` 3 blocks, `polchain verify` replays them from genesis;
a tampered store (a block's records or header row edited) fails verification naming the block and
reason; a store without the blocks' post-states (pruned, or lost) still verifies, because protocol v2
blocks are replayed from the post-state the previous replay produced, never from stored states.
"""
from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
from contextlib import closing
from pathlib import Path

import pytest

from consensus.spec import preset

pytestmark = pytest.mark.slow      # node processes or long mining: in the full suite, not in `-m "not slow"`

TIMEOUT = 600


def polchain(*args: str) -> list[str]:
    exe = shutil.which("polchain")
    return [exe, *args] if exe else [sys.executable, "-m", "node.cli", *args]


# One torch thread per process: on a small shared machine intra-op threads mostly contend.
ENV = dict(os.environ, POLCHAIN_LOG_LEVEL="WARNING", OMP_NUM_THREADS="1")


def run(*args: str) -> subprocess.CompletedProcess:
    env = ENV
    return subprocess.run(polchain(*args), capture_output=True, text=True, timeout=TIMEOUT, env=env)


def best_chain(datadir: Path) -> list[dict]:
    """Headers of the stored best chain, by height (read with plain sqlite3, not the node's code)."""
    # closing(): a sqlite3 connection is in a reference cycle (its statement cache), so without an explicit
    # close it lingers until the garbage collector runs -- and deletes chain.sqlite-shm under a copytree then.
    with closing(sqlite3.connect(datadir / "chain.sqlite")) as db:
        rows = db.execute("SELECT b.height, b.hash, b.header_json FROM best_chain c JOIN blocks b ON b.hash = c.hash "
                          "ORDER BY c.height").fetchall()
    return [{"height": h, "hash": hh, "header": json.loads(hj)} for h, hh, hj in rows]


def state_file(datadir: Path, state_hash: str) -> Path:
    return datadir / "weights" / state_hash[:2] / f"{state_hash}.safetensors"


@pytest.fixture(scope="module")
def mined(tmp_path_factory) -> Path:
    datadir = tmp_path_factory.mktemp("cli") / "chain"
    res = run("mine", "--preset", "tiny", "--blocks", "3", "--datadir", str(datadir), "--seed", "1")
    assert res.returncode == 0, res.stderr[-3000:]
    summary = json.loads(res.stdout.strip().splitlines()[-1])
    assert summary["height"] == 3
    return datadir


def test_mine_then_verify_ok(mined):
    chain = best_chain(mined)
    spec = preset("tiny")
    assert [b["height"] for b in chain] == [0, 1, 2, 3]
    assert all(c["header"]["parent"] == p["hash"] for p, c in zip(chain, chain[1:]))
    assert all(b["header"]["chain_id"] == spec.chain_id and b["header"]["version"] == 4 for b in chain)
    assert all(1 <= len(b["header"]["nonces"]) <= spec.proof.max_advance_steps + 1 for b in chain[1:])
    assert all(state_file(mined, b["header"]["state_hash"]).exists() for b in chain)   # archival: every W' kept
    res = run("verify", "--datadir", str(mined))
    assert res.returncode == 0, res.stdout + res.stderr[-3000:]
    assert res.stdout.startswith("OK: 3 blocks replayed from genesis"), res.stdout
    assert chain[-1]["hash"][:16] in res.stdout


def test_mine_says_each_block_once_and_verify_says_what_it_replays(mined, tmp_path):
    """Issue 21.10: `mine` printed each block twice (its own line and the chain's 'new tip' line), and
    `verify` said nothing until its verdict."""
    d = tmp_path / "more"
    shutil.copytree(mined, d)
    res = subprocess.run(polchain("mine", "--preset", "tiny", "--blocks", "2", "--datadir", str(d), "--seed", "2"),
                         capture_output=True, text=True, timeout=TIMEOUT, env=dict(ENV, POLCHAIN_LOG_LEVEL="INFO"))
    assert res.returncode == 0, res.stderr[-3000:]
    new = [b for b in best_chain(d) if b["height"] > 3]
    assert [b["height"] for b in new] == [4, 5]
    for b in new:
        lines = [ln for ln in res.stderr.splitlines() if b["hash"][:16] in ln]
        assert len(lines) == 1 and lines[0].startswith(f"block {b['height']} "), res.stderr
    res = run("verify", "--datadir", str(d))
    assert res.returncode == 0, res.stdout + res.stderr[-3000:]
    assert "replaying 5 blocks from genesis" in res.stderr, res.stderr


def test_tampered_store_fails_verification(mined, tmp_path):
    chain = best_chain(mined)

    # (a) block 2's records edited in chain.sqlite (a record its header does not commit to)
    a = tmp_path / "a"
    shutil.copytree(mined, a)
    with closing(sqlite3.connect(a / "chain.sqlite")) as db, db:
        db.execute("UPDATE blocks SET records_json = ? WHERE hash = ?",
                   (json.dumps([{"type": "model-certificate"}]), chain[2]["hash"]))

    # (b) block 1's header row edited in chain.sqlite (a better accuracy claim)
    b = tmp_path / "b"
    shutil.copytree(mined, b)
    hdr = dict(chain[1]["header"], acc_after=chain[1]["header"]["acc_after"] + 1)
    with closing(sqlite3.connect(b / "chain.sqlite")) as db, db:
        db.execute("UPDATE blocks SET header_json = ? WHERE hash = ?", (json.dumps(hdr, sort_keys=True),
                                                                        chain[1]["hash"]))

    # (c) every post-state but genesis's gone (a pruned node; or a disk that lost them): nothing to
    # trust there, nothing needed -- the replay recomputes them
    c = tmp_path / "c"
    shutil.copytree(mined, c)
    for blk in chain[1:]:
        state_file(c, blk["header"]["state_hash"]).unlink()

    procs = {name: subprocess.Popen(polchain("verify", "--datadir", str(d)), stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True, env=ENV)
             for name, d in (("a", a), ("b", b), ("c", c))}
    out = {name: p.communicate(timeout=TIMEOUT) + (p.returncode,) for name, p in procs.items()}

    stdout, stderr, rc = out["a"]
    assert rc == 1, stdout + stderr[-2000:]
    assert stdout.startswith(f"FAIL: block 2 ({chain[2]['hash']}) records-mismatch"), stdout

    stdout, stderr, rc = out["b"]
    assert rc == 1, stdout + stderr[-2000:]
    assert stdout.startswith(f"FAIL: block 1 ({chain[1]['hash']}) malformed"), stdout
    assert "does not hash to its key" in stdout

    stdout, stderr, rc = out["c"]
    assert rc == 0, stdout + stderr[-2000:]
    assert stdout.startswith("OK: 3 blocks replayed from genesis"), stdout
