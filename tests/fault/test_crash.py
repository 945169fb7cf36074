"""kill -9 while blocks are being written.

Invariant checked after every kill: the datadir opens (SQLite intact, temp files of
half-written post-states removed), the recovered tip is at least as high as the highest
block the process had acknowledged (no acknowledged block lost: the tip height never
decreases), and replaying the stored best chain from genesis passes.
"""
from __future__ import annotations

import random
import re
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from tests.nodeproc import REPO, node_env

from .conftest import scale


@pytest.fixture(scope="session")
def dataset_file(dataset, tmp_path_factory) -> Path:
    from safetensors.torch import save_file
    p = tmp_path_factory.mktemp("ds") / "tiny.safetensors"
    save_file({"train_x": dataset.train_x, "train_y": dataset.train_y, "test_x": dataset.test_x,
               "test_y": dataset.test_y}, str(p))
    return p


@pytest.fixture(scope="session")
def genesis_datadir(spec, dataset, tmp_path_factory) -> Path:
    from node.chain import Chain
    d = tmp_path_factory.mktemp("genesis") / "node"
    Chain(spec, d, dataset).store.close()
    (d / "spec.json").write_text(spec.to_json())
    return d


def child(datadir, chaindir, dataset_file, *extra) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "tests.fault.crash_child", str(datadir), str(chaindir),
                             "--dataset", str(dataset_file), *map(str, extra)], cwd=REPO, env=node_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def acked(stdout: str) -> int:
    heights = [int(m.group(1)) for m in re.finditer(r"^ACK (\d+) ", stdout, re.M)]
    return max(heights, default=0)


def check_recovered(spec, dataset, datadir: Path, must_reach: int) -> int:
    """Open the datadir as a node would and replay it; returns the recovered tip height."""
    from node.chain import Chain
    from node.verify import verify_chain
    chain = Chain(spec, datadir, dataset)
    try:
        assert not list((datadir / "weights").glob("*/.tmp-*.part")), "temp files survived start-up"
        tip = chain.tip()
        assert tip.height >= must_reach, f"acknowledged height {must_reach} lost: tip is {tip.height}"
        rep = verify_chain(chain)
        assert rep.ok, rep
        return tip.height
    finally:
        chain.store.close()


def test_kill9_at_every_kind_of_write_point(spec, dataset, chaindir, dataset_file, genesis_datadir, tmp_path,
                                            record):
    """SIGKILL just before / just after a randomly chosen fsync, rename or SQLite commit of the
    block-writing path, many times over, resuming from whatever the last kill left."""
    rng = random.Random(2024)
    counting = tmp_path / "count"
    shutil.copytree(genesis_datadir, counting)
    count = child(counting, chaindir, dataset_file, "--crash-at", -1).communicate(timeout=600)[0]
    total = int(re.search(r"DONE calls=(\d+)", count).group(1))
    per_block = total / 40
    assert per_block >= 5
    iterations = scale(40)
    datadir = tmp_path / "node"
    shutil.copytree(genesis_datadir, datadir)
    points: Counter = Counter()
    height, kills, resets = 0, 0, 0
    for _ in range(iterations):
        remaining = max(1, int((40 - height) * per_block))
        p = child(datadir, chaindir, dataset_file, "--crash-at", rng.randint(1, remaining),
                  "--when", rng.choice(["before", "after"]))
        out, err = p.communicate(timeout=600)
        crash = re.search(r"^CRASH (\S+) (\S+)", out, re.M)
        if crash:
            assert p.returncode == -signal.SIGKILL, err[-2000:]
            points[f"{crash.group(1)}-{crash.group(2)}"] += 1
            kills += 1
        else:
            assert p.returncode == 0 and "DONE" in out, err[-2000:]
        must = max(height, acked(out))
        height = check_recovered(spec, dataset, datadir, must)
        if height == 40:           # chain complete: start again from genesis
            shutil.rmtree(datadir)
            shutil.copytree(genesis_datadir, datadir)
            height, resets = 0, resets + 1
    record("kill9-write-points", iterations=iterations, kills=kills, points=dict(points), chain_refills=resets,
           write_calls_per_40_blocks=total, blocks_lost=0)


def test_kill9_at_random_times_while_storing_blocks(spec, dataset, chaindir, dataset_file, genesis_datadir,
                                                     tmp_path, record):
    """Uniformly random SIGKILL while the child stores blocks back to back."""
    rng = random.Random(7)
    iterations = scale(20)
    datadir = tmp_path / "node"
    shutil.copytree(genesis_datadir, datadir)
    height, kills = 0, 0
    for _ in range(iterations):
        p = child(datadir, chaindir, dataset_file)
        line = p.stdout.readline()
        assert line.strip() == "READY", p.stderr.read()[-2000:]
        time.sleep(rng.uniform(0.0, 2.5))
        p.send_signal(signal.SIGKILL)
        rest, _ = p.communicate(timeout=60)
        kills += p.returncode == -signal.SIGKILL
        height = check_recovered(spec, dataset, datadir, max(height, acked(rest)))
        if height == 40:
            shutil.rmtree(datadir)
            shutil.copytree(genesis_datadir, datadir)
            height = 0
    record("kill9-random-time-store", iterations=iterations, kills=kills, blocks_lost=0)


def test_kill9_mining_node(nodes, record):
    """A real mining node (`polchain node --mine --threads 1`) killed -9 at random moments and
    restarted: the height it reported before the kill is never lost, and `polchain verify`
    replays the result."""
    rng = random.Random(11)
    iterations = scale(10)
    node = nodes.add("miner", "--mine")
    node.start()
    last_seen, kills = 0, 0
    for i in range(iterations):
        deadline = time.monotonic() + rng.uniform(1.0, 6.0)
        while time.monotonic() < deadline:
            try:
                last_seen = max(last_seen, node.status()["height"])
            except Exception:  # noqa: BLE001 - a slow answer is not the point here
                pass
            time.sleep(0.1)
        node.kill()
        kills += 1
        node.start()
        h = node.status()["height"]
        assert h >= last_seen, f"kill {i}: height {h} after restart < {last_seen} reported before"
        last_seen = h
    node.stop()
    r = subprocess.run([sys.executable, "-m", "node.cli", "verify", "--datadir", str(node.datadir)], cwd=REPO,
                       env=node_env(), capture_output=True, text=True, timeout=600)
    assert r.returncode == 0 and r.stdout.startswith("OK"), r.stdout + r.stderr[-2000:]
    record("kill9-mining-node", iterations=iterations, kills=kills, final_height=last_seen, blocks_lost=0,
           verify=r.stdout.strip())
