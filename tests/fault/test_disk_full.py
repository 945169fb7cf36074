"""Disk full while writing post-states and SQLite pages.

The datadir lives on a small tmpfs (mounted here: the suite runs as root) so
ENOSPC hits at different points of the write path depending on its size. The
store must come out intact: it opens, the acknowledged blocks are there, verify
passes, and once space is back the node goes on (the miner too).
"""
from __future__ import annotations

import contextlib
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.nodeproc import REPO, node_env

from .test_crash import acked, check_recovered, child, dataset_file, genesis_datadir  # noqa: F401 (fixtures)


def _mount(path: Path, size: str) -> bool:
    path.mkdir(parents=True, exist_ok=True)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True)
    return r.returncode == 0


def _remount(path: Path, size: str) -> None:
    subprocess.run(["mount", "-o", f"remount,size={size}", str(path)], check=True)


def _umount(path: Path) -> None:
    if subprocess.run(["umount", str(path)], capture_output=True).returncode != 0:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


@contextlib.contextmanager
def tmpfs(path: Path, size: str):
    if not _mount(path, size):
        pytest.skip("cannot mount a tmpfs here (needs root): see docs/security.md for the RLIMIT_FSIZE variant")
    try:
        yield path
    finally:
        _umount(path)


SIZES = ["160k", "256k", "384k", "512k", "768k", "1m"]


@pytest.mark.parametrize("size", SIZES)
def test_disk_full_while_storing_blocks(size, spec, dataset, chaindir, tmp_path, record,
                                        dataset_file, genesis_datadir):  # noqa: F811 (fixtures imported above)
    mnt = tmp_path / "mnt"
    with tmpfs(mnt, size):
        datadir = mnt / "node"
        try:
            shutil.copytree(genesis_datadir, datadir)
        except OSError:
            pytest.skip(f"{size} cannot even hold the genesis datadir")
        out, err = child(datadir, chaindir, dataset_file, "--stop-after-errors", 3).communicate(timeout=600)
        errs = re.findall(r"^ERR (\d+) (.*)$", out, re.M)
        assert "Traceback" not in err, err[-3000:]
        got = acked(out)
        _remount(mnt, "64m")
        recovered = check_recovered(spec, dataset, datadir, got)
        leftovers = list((datadir / "weights").glob("*/.tmp-*.part"))
        # space is back: the same blocks go in and the chain completes
        out2, err2 = child(datadir, chaindir, dataset_file).communicate(timeout=600)
        assert acked(out2) == 40 and "ERR" not in out2, err2[-3000:]
        final = check_recovered(spec, dataset, datadir, 40)
    record("disk-full-store", tmpfs=size, acked_before_full=got, recovered=recovered,
           first_errors=[e[1][:80] for e in errs[:2]], temp_files_left=len(leftovers), final_height=final,
           blocks_lost=0)


def test_disk_full_while_mining_then_space_returns(nodes, tmp_path, record):
    """A mining node whose datadir fills up keeps answering its API, does not corrupt its store,
    and mines again once space is back."""
    mnt = tmp_path / "mnt"
    with tmpfs(mnt, "400k"):
        node = nodes.add("miner", "--mine")
        node.datadir = mnt / "miner"
        node.start()
        full_at = None
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            time.sleep(1)
            if node.log_lines(r"No space left|disk is full|Errno 28"):
                full_at = node.status()["height"]
                break
        assert full_at is not None, "the datadir never filled up"
        lat = []
        for _ in range(20):
            t0 = time.perf_counter()
            assert node.get("/status").status_code == 200
            lat.append(time.perf_counter() - t0)
            time.sleep(0.1)
        _remount(mnt, "64m")
        resumed = node.wait_height(full_at + 2, timeout=180)["height"]
        node.stop()
        r = subprocess.run([sys.executable, "-m", "node.cli", "verify", "--datadir", str(node.datadir)], cwd=REPO,
                           env=node_env(), capture_output=True, text=True, timeout=600)
        assert r.returncode == 0 and r.stdout.startswith("OK"), r.stdout + r.stderr[-2000:]
    record("disk-full-mining-node", tmpfs="400k", height_when_full=full_at, height_after_space_back=resumed,
           status_max_latency_s=round(max(lat), 3), verify=r.stdout.strip(), blocks_lost=0)
