"""`polchain testnet`: a real 3-process testnet converges, stops cleanly and resumes its chain."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from tests.chain_spec import TINY_TEST, TINY_TEST_ARGS

REPO = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow


def _free_base_port(n: int) -> int:
    """A base port with n free consecutive ports after it."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            base = s.getsockname()[1]
        if base + n >= 65535:
            continue
        ok = True
        for p in range(base, base + n):
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", p))
                except OSError:
                    ok = False
                    break
        if ok:
            return base
    pytest.skip("no free port range")


def _testnet(*args: str, timeout: float) -> tuple[subprocess.CompletedProcess, dict]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("POLCHAIN_")}
    proc = subprocess.run([sys.executable, "-m", "node.cli", "testnet", *args, "--json"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    assert lines, f"no summary line\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    return proc, json.loads(lines[-1])


def _no_node_left(datadir: Path) -> None:
    out = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    assert str(datadir) not in out, f"node processes left running:\n{out}"


def test_testnet_converges_and_resumes(tmp_path):
    datadir = tmp_path / "tn"
    base = _free_base_port(3)
    common = ["--nodes", "3", *TINY_TEST_ARGS, "--datadir", str(datadir), "--base-port", str(base)]

    proc, first = _testnet(*common, "--until-height", "5", "--duration", "150", timeout=240)
    assert proc.returncode == 0, f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    assert first["ok"] and first["reached_after"] is not None
    assert len(set(first["tips"])) == 1 and min(first["heights"]) >= 5
    for i in range(3):
        assert (datadir / f"node{i}.log").exists()
        assert "node stopped cleanly" in (datadir / f"node{i}.log").read_text()
    _no_node_left(datadir)

    # Same datadir again: every node comes back at (at least) the height it had, on the same chain.
    target = max(first["heights"]) + 2
    proc, second = _testnet(*common, "--until-height", str(target), "--duration", "150", timeout=240)
    assert proc.returncode == 0, f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    for before, start in zip(first["heights"], second["start_heights"]):
        assert start is not None and start >= before
    assert min(second["heights"]) >= target
    _no_node_left(datadir)


def test_testnet_sigterm_stops_all_nodes(tmp_path):
    datadir = tmp_path / "tn"
    base = _free_base_port(2)
    env = {k: v for k, v in os.environ.items() if not k.startswith("POLCHAIN_")}
    proc = subprocess.Popen([sys.executable, "-m", "node.cli", "testnet", "--nodes", "2", "--miners", "1",
                             *TINY_TEST_ARGS, "--datadir", str(datadir), "--base-port", str(base),
                             "--duration", "120"], cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:   # wait until both nodes answer (they came up: a testnet that ran)
            if all(_answers(f"http://127.0.0.1:{base + i}") for i in range(2)):
                break
            time.sleep(1)
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert "SIGTERM: stopping nodes" in out, out
    assert proc.returncode == 0, out
    assert "stopped 2 nodes after" in out and "heights " in out and "{" not in out, out   # words, not JSON
    _no_node_left(datadir)


def _answers(url: str) -> bool:
    import urllib.request
    try:
        with urllib.request.urlopen(f"{url}/status", timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


def test_testnet_rejects_busy_port(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        proc = subprocess.run([sys.executable, "-m", "node.cli", "testnet", "--nodes", "1", "--datadir",
                               str(tmp_path / "tn"), "--base-port", str(port), "--duration", "5"],
                              cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "already in use" in proc.stderr


def test_testnet_runs_a_spec_file(tmp_path):
    """--spec FILE: every node runs that chain (here tiny with another name, so another chain id)."""
    import dataclasses

    from consensus.spec import ChainSpec
    spec = dataclasses.replace(TINY_TEST, name="tiny-from-file")          # k0 = 8: a block in about a second
    (tmp_path / "spec.json").write_text(spec.to_json())
    datadir = tmp_path / "tn"
    proc, summary = _testnet("--nodes", "2", "--miners", "1", "--spec", str(tmp_path / "spec.json"), "--datadir",
                             str(datadir), "--base-port", str(_free_base_port(2)), "--until-height", "1",
                             "--duration", "120", timeout=200)
    assert proc.returncode == 0, f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    assert f"spec tiny-from-file ({tmp_path / 'spec.json'})" in proc.stdout
    for i in range(2):
        assert ChainSpec.from_json((datadir / f"node{i}" / "spec.json").read_text()).chain_id == spec.chain_id
    _no_node_left(datadir)
    proc = subprocess.run([sys.executable, "-m", "node.cli", "testnet", "--spec", str(tmp_path / "absent.json"),
                           "--datadir", str(tmp_path / "x")], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "absent.json" in proc.stderr
