"""A real mining `polchain node` whose datadir fills up mid-run, then gets its space back (issue 20).

The datadir lives on a small tmpfs mounted for the test (we run as root: a chmod would not stop root's
writes, a full filesystem does); a filler file takes its last byte. While the store refuses writes:
/health answers 503 ``store-error`` in every sample and the height stands still, /status shows the
error and the probe's backoff growing (2 s doubling), the log says "mining paused" once and "cannot write
the store" once (then once a minute), never a traceback. Once the filler is gone the node probes, resumes
mining on the same chain (every block it had reported is still there: 0 lost) and `polchain verify`
replays the store from genesis.

Skipped where a tmpfs cannot be mounted (not root, or a container without CAP_SYS_ADMIN).
The in-process variant (a block refused before its replay, the probe's own checks) is
tests/adversarial/test_store_full.py."""
from __future__ import annotations

import contextlib
import errno
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.nodeproc import REPO, NodeProc, node_env, patient, wait_for
from tests.chain_spec import TINY_TEST_ARGS

pytestmark = pytest.mark.slow      # node processes or long mining: in the full suite, not in `-m "not slow"`

BOUND_S = 60       # bounds on waits for a state, stretched by tests/nodeproc.PATIENCE


@contextlib.contextmanager
def tmpfs(path: Path, size: str):
    path.mkdir(parents=True, exist_ok=True)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({r.stderr.strip() or r.returncode}): the test needs root "
                    "and CAP_SYS_ADMIN to give the node a filesystem that really fills up")
    try:
        yield path
    finally:
        if subprocess.run(["umount", str(path)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(path)], capture_output=True)


def fill(path: Path) -> Path:
    """A file that takes every free byte of the filesystem (written until ENOSPC)."""
    filler = path / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        for chunk in (b"\0" * (1 << 20), b"\0" * 4096, b"\0"):
            while True:
                try:
                    os.write(fd, chunk)
                except OSError as exc:
                    assert exc.errno == errno.ENOSPC, exc
                    break
    finally:
        os.close(fd)
    return filler


def test_a_mining_node_whose_disk_fills_up_pauses_reports_and_resumes(tmp_path):
    mnt = tmp_path / "mnt"
    with tmpfs(mnt, "48m"):
        # the log is outside the full filesystem (a node's stdout is not its store)
        node = NodeProc(mnt / "data", *TINY_TEST_ARGS, "--mine", "--archival", log=tmp_path / "node.log")
        try:
            node.start(timeout=BOUND_S)
            node.wait_height(3, timeout=BOUND_S)
            assert node.get("/health").status_code == 200
            filler = fill(mnt)
            t_full = time.monotonic()

            # the next block cannot be stored: the node says so, and the miner pauses
            health = wait_for(lambda: (r := node.get("/health")).status_code == 503 and r.json(),
                              timeout=BOUND_S, what="/health 503 after the disk filled")
            assert health["status"] == "store-error", health
            assert "No space left" in health["detail"] or "full" in health["detail"], health
            node.wait_for(lambda: node.log_lines("mining paused"), timeout=BOUND_S, what="mining paused logged")
            stalled = health["height"]
            before = [b["hash"] for b in node.best_chain()]

            # the probe backs off: 2 s, 4, 8, 8 (each a failed write); /health and the height do not move
            samples = []

            def backed_off():
                r = node.get("/health")
                st = node.status()
                samples.append((r.status_code, r.json().get("status"), st["height"]))
                return st if st["store"]["retry_pause_s"] and st["store"]["retry_pause_s"] >= 8 else None
            st = wait_for(backed_off, timeout=BOUND_S, interval=0.5, what="the probe backs off to 8 s")
            assert st["store"]["ok"] is False and st["store"]["since"] and st["store"]["failed_writes"] >= 3, st
            assert "No space left" in st["store"]["error"] or "full" in st["store"]["error"], st
            assert all(s == (503, "store-error", stalled) for s in samples), samples
            assert st["height"] == stalled

            # space is back: the next probe finds it and mining goes on from the same chain
            filler.unlink()
            fault_s = time.monotonic() - t_full
            node.wait_for(lambda: node.log_lines("mining resumes"), timeout=BOUND_S, what="mining resumes")
            node.wait_height(stalled + 3, timeout=BOUND_S)
            assert node.get("/health").status_code == 200
            st = node.status()
            assert st["store"] == {"ok": True, "error": None, "since": None, "failed_writes": 0,
                                   "retry_in_s": None, "retry_pause_s": None}, st
            after = [b["hash"] for b in node.best_chain()]
            assert after[:len(before)] == before, "a block stored before the disk filled is gone"
            # the block mined when the disk filled was held in memory and went in once the store wrote again
            log = node.log_text()
            held = re.findall(r"mined block ([0-9a-f]+) height (\d+)", log[:log.index("mining paused")])[-1]
            assert int(held[1]) == stalled + 1 and after[stalled + 1].startswith(held[0]), (held, after)

            log = node.log_text()
            assert "Traceback" not in log, log[-4000:]
            assert len(node.log_lines("mining paused")) == 1, node.log_lines("mining paused")
            assert len(node.log_lines("mining resumes")) == 1
            errors_logged = node.log_lines("cannot write the store")
            assert 1 <= len(errors_logged) <= 1 + int(fault_s // 60), errors_logged   # once, then once a minute
            assert node.stop(timeout=BOUND_S) == 0, node.log_text()[-3000:]
        finally:
            node.kill()
            node.client.close()

        r = subprocess.run([sys.executable, "-m", "node.cli", "verify", "--datadir", str(node.datadir)], cwd=REPO,
                           env=node_env(), capture_output=True, text=True, timeout=patient(240))
        assert r.returncode == 0 and r.stdout.startswith("OK"), r.stdout + r.stderr[-2000:]
    print(f"FIGURES disk-full mining node: stalled at height {stalled}, fault {fault_s:.0f} s, "
          f"{len(samples)} /health samples all 503 store-error, final height {after and len(after) - 1}; "
          f"{r.stdout.strip()}")
