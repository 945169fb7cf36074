"""Start-up refusals: datadirs and specs this node must not run, each refused with one clear
line (exit 2, no traceback) and the datadir left exactly as it was (but for the process lock
file, DATADIR/LOCK, taken before anything is read: node/lock.py).

``data/v1-tiny-datadir.tar.gz`` is a real protocol v1 datadir: written by the v1 code (the
commit before "Protocol v2 core") with ``polchain mine --preset tiny --blocks 1 --seed 1``
(its node.key left out). Its genesis row is a v1 header (batch, weights_hash, acc_before) of
the v1 tiny chain, and its spec.json is in the v1 spec format.
"""
from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from consensus.hashing import canonical_json, sha256_hex
from consensus.spec import preset
from node.lock import LOCK_FILE
from tests.nodeproc import REPO, NodeProc, free_port, node_env, patient

V1_ARCHIVE = Path(__file__).parent / "data" / "v1-tiny-datadir.tar.gz"
V1_TINY_CHAIN_ID = "3665c6a87688975cfa933ba3ec78857efa7e491b7926ebe2d8bb943ed90aa73b"   # docs/protocol.md (v1)
# A real protocol v2 datadir: written by the v2 code (commit 00054a8, the last before protocol v3) with
# `polchain mine --preset tiny --blocks 1 --seed 1` (node.key left out).
V2_ARCHIVE = Path(__file__).parent / "data" / "v2-tiny-datadir.tar.gz"
V2_TINY_CHAIN_ID = "59962227c226b3b6cfc00dae3e6a5e1f97cbd10b2a837c586693a2202ed5fabe"
# A real protocol v3 datadir: written by the v3 code (commit 882959f, the last before protocol v4) the same way.
V3_ARCHIVE = Path(__file__).parent / "data" / "v3-tiny-datadir.tar.gz"
V3_TINY_CHAIN_ID = "0c1a6f6375553e46fb190d0a34f5cf449be554864fe44320880f868723b539f2"


def old_datadir(archive: Path, tmp_path: Path, name: str, fmt: str, chain_id: str) -> Path:
    """An archived datadir of an older protocol, checked to be what it claims to be."""
    with tarfile.open(archive) as tf:
        tf.extractall(tmp_path, filter="data")
    d = tmp_path / name
    spec = json.loads((d / "spec.json").read_text())
    assert spec["format"] == fmt and sha256_hex(canonical_json(spec)) == chain_id
    assert chain_id != preset("tiny").chain_id
    return d


@pytest.fixture
def v1_datadir(tmp_path) -> Path:
    """The v1 tiny chain, one block on a v1 genesis."""
    return old_datadir(V1_ARCHIVE, tmp_path, "v1-tiny", "polchain-spec/1", V1_TINY_CHAIN_ID)


@pytest.fixture
def v2_datadir(tmp_path) -> Path:
    return old_datadir(V2_ARCHIVE, tmp_path, "v2-tiny", "polchain-spec/2", V2_TINY_CHAIN_ID)


@pytest.fixture
def v3_datadir(tmp_path) -> Path:
    return old_datadir(V3_ARCHIVE, tmp_path, "v3-tiny", "polchain-spec/3", V3_TINY_CHAIN_ID)


def tree(d: Path) -> dict[str, tuple[str, int]]:
    """Every file under ``d`` but the process lock: relative path -> (SHA-256, mtime ns)."""
    return {str(p.relative_to(d)): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
            for p in sorted(d.rglob("*")) if p.is_file() and p.relative_to(d) != Path(LOCK_FILE)}


def polchain(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "node.cli", *args], cwd=REPO, env=node_env(), capture_output=True,
                          text=True, timeout=patient(timeout))


def assert_refused(proc: subprocess.CompletedProcess, *needles: str) -> str:
    err = proc.stderr
    assert proc.returncode == 2, (proc.returncode, proc.stdout[-1000:], err[-3000:])
    assert "Traceback" not in err, err[-3000:]
    line = [ln for ln in err.splitlines() if ln.startswith("error: ")]
    assert len(line) == 1, err[-3000:]
    for n in needles:
        assert n in line[0], (n, line[0])
    return line[0]


V1_COMMANDS = {
    "node": ("node", "--threads", "1"),
    "node-preset-tiny": ("node", "--preset", "tiny", "--threads", "1"),
    "mine": ("mine", "--preset", "tiny", "--blocks", "1"),
    "verify": ("verify",),
}


# why each older protocol's datadir cannot be upgraded: (fixture, chain id, words the refusal must hold)
OLD_DATADIRS = {
    "v1": ("v1_datadir", V1_TINY_CHAIN_ID, ("v1",)),
    "v2": ("v2_datadir", V2_TINY_CHAIN_ID, ("protocol v2", "exact step")),     # v3 replays with the exact step
    "v3": ("v3_datadir", V3_TINY_CHAIN_ID, ("protocol v3", "ticket")),         # v4: tickets, epoch-bound batches
}


@pytest.mark.parametrize("version", sorted(OLD_DATADIRS))
@pytest.mark.parametrize("command", sorted(V1_COMMANDS))
def test_old_datadir_is_refused_and_left_untouched(command, version, request):
    """`polchain node` (with or without --preset tiny), `mine` and `verify` on a v1, v2 or v3 datadir (each
    written by that protocol's code): refused, naming the datadir's chain id, its protocol version and why
    it cannot be upgraded; not one file added, changed or removed."""
    fixture, chain_id, words = OLD_DATADIRS[version]
    datadir = request.getfixturevalue(fixture)
    before = tree(datadir)
    args = V1_COMMANDS[command]
    port = ("--port", str(free_port())) if args[0] == "node" else ()
    proc = polchain(args[0], "--datadir", str(datadir), *args[1:], *port)
    line = assert_refused(proc, chain_id[:16], *words)
    assert "cannot be upgraded" in line
    assert tree(datadir) == before


@pytest.mark.slow
def test_v1_store_without_its_spec_is_refused_and_left_untouched(v1_datadir):
    """The v1 chain.sqlite alone (spec.json gone) under `--preset tiny`: the genesis row is another
    chain's (a v1 header). Refused with its chain id; no spec.json is written, nothing else changes."""
    (v1_datadir / "spec.json").unlink()
    before = tree(v1_datadir)
    proc = polchain("node", "--datadir", str(v1_datadir), "--preset", "tiny", "--port", str(free_port()),
                    "--threads", "1")
    assert_refused(proc, V1_TINY_CHAIN_ID[:16], "v1")
    assert tree(v1_datadir) == before


def test_v1_store_refused_in_process(v1_datadir, tiny_spec, tiny_dataset):
    from node.chain import Chain, StartupError

    (v1_datadir / "spec.json").unlink()
    db = (v1_datadir / "chain.sqlite").read_bytes()
    with pytest.raises(StartupError, match=rf"holds chain {V1_TINY_CHAIN_ID[:16]}.*protocol v1"):
        Chain(tiny_spec, v1_datadir, tiny_dataset)
    assert (v1_datadir / "chain.sqlite").read_bytes() == db


@pytest.mark.slow
def test_research_preset_refused_and_leaves_nothing_behind(tmp_path):
    """`polchain node --preset dgg-paper`: the paper's forgeable rules are for research only. The
    refusal leaves no trace, so the same datadir then starts on a v2 preset."""
    d = tmp_path / "data"
    proc = polchain("node", "--datadir", str(d), "--preset", "dgg-paper", "--port", str(free_port()),
                    "--threads", "1")
    assert_refused(proc, "dgg-paper", "research")
    assert not d.exists() or not tree(d), sorted(p.name for p in d.iterdir())
    node = NodeProc(d, "--preset", "tiny").start()
    try:
        assert node.status()["chain_id"] == preset("tiny").chain_id
    finally:
        assert node.stop() == 0
    assert json.loads((d / "spec.json").read_text())["name"] == "tiny"



def test_genesis_row_holds_the_measured_accuracy_not_the_claimed_floor(tiny_spec, tiny_dataset, tmp_path):
    """The row's measured accuracy is the genesis model's real count on E, so a learning curve starts at a
    true point (issue 21.8: it showed 0/500); v4: the header claims the spec's pinned count, the same one
    within the claim tolerance (block 1's floor, issue 33.4)."""
    from consensus.training import Replayer, genesis_state
    from node.chain import Chain

    chain = Chain(tiny_spec, tmp_path / "d", tiny_dataset)
    try:
        g = chain.store.get(chain.store.hash_at(0))
        want = Replayer(tiny_spec, tiny_dataset).accuracy(genesis_state(tiny_spec)).correct
        assert g.acc_after == want and want > 0
        assert g.header.acc_after == tiny_spec.evaluation.genesis_correct
        assert abs(g.header.acc_after - want) <= tiny_spec.evaluation.claim_tolerance
    finally:
        chain.store.close()
