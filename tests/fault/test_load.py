"""Load: many concurrent API readers and repeated block announcements against one mining node.

Bounded: READERS reader threads and ANNOUNCERS announcer threads for DURATION seconds on
loopback. The node must keep mining, answer /status within 1 s at p99, serve no 5xx,
and lose no block (the height it reports never goes down; `polchain verify` passes).
"""
from __future__ import annotations

import random
import subprocess
import sys
import threading
import time
from collections import Counter

import httpx
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from consensus.block import BlockHeader
from consensus.ticket import sign_with_ticket
from tests.nodeproc import REPO, free_port, node_env

from .conftest import scale
from tests.chain_spec import TINY_TEST

READERS = 16
ANNOUNCERS = 2


def test_load_readers_and_announcements_on_a_mining_node(nodes, record):
    duration = 60 * scale(1)
    node = nodes.add("miner", "--mine")
    node.start()
    node.wait_height(3, timeout=180)
    stop = threading.Event()
    counts: Counter = Counter()
    lock = threading.Lock()
    status_lat: list[float] = []
    heights: list[int] = []
    dead_origin = f"http://127.0.0.1:{free_port()}"     # nothing listens: fetches fail fast
    thief = Ed25519PrivateKey.generate()

    def count(key):
        with lock:
            counts[key] += 1

    def reader(seed):
        rng = random.Random(seed)
        with httpx.Client(base_url=node.url, timeout=30) as c:
            while not stop.is_set():
                try:
                    tip = c.get("/status").json()
                    h = tip["height"]
                    path = rng.choice([f"/blocks?start={rng.randint(0, h)}&limit=50", "/tips", f"/blocks/{h}",
                                       f"/blocks/{tip['tip']}/state", "/peers", "/metrics", "/health",
                                       f"/blocks/{rng.randint(0, h)}"])
                    r = c.get(path)
                    count(f"GET {r.status_code // 100}xx")
                except httpx.HTTPError as exc:
                    count(f"error {type(exc).__name__}")

    def announcer(seed):
        rng = random.Random(seed)
        with httpx.Client(base_url=node.url, timeout=30) as c:
            while not stop.is_set():
                try:
                    blocks = c.get("/blocks", params={"start": 0, "limit": 500}).json()["blocks"]
                    known = BlockHeader.from_dict(rng.choice(blocks)["header"])
                    tip = BlockHeader.from_dict(blocks[-1]["header"])
                    if rng.random() < 0.5:   # a block it has: 409 before any work
                        h = known
                    else:                    # an unknown block whose body lives nowhere
                        h = BlockHeader(version=tip.version, chain_id=tip.chain_id, height=tip.height + 1,
                                        parent=tip.hash, timestamp_ms=tip.timestamp_ms + 1,
                                        difficulty=tip.difficulty, miner="", nonces=(rng.getrandbits(64),),
                                        state_hash="ab" * 32, acc_after=tip.acc_after + 1,
                                        records_root=tip.records_root)
                        h = sign_with_ticket(TINY_TEST, h, thief)
                    r = c.post("/blocks", content=h.encode(),
                               headers={"content-type": "application/json", "x-polchain-origin": dead_origin})
                    count(f"POST {r.status_code}")
                except httpx.HTTPError as exc:
                    count(f"error {type(exc).__name__}")

    def sampler():
        with httpx.Client(base_url=node.url, timeout=30) as c:
            while not stop.is_set():
                t0 = time.perf_counter()
                try:
                    st = c.get("/status").json()
                    status_lat.append(time.perf_counter() - t0)
                    heights.append(st["height"])
                except httpx.HTTPError:
                    status_lat.append(time.perf_counter() - t0)
                    count("status error")
                time.sleep(0.05)

    threads = [threading.Thread(target=reader, args=(i,)) for i in range(READERS)]
    threads += [threading.Thread(target=announcer, args=(100 + i,)) for i in range(ANNOUNCERS)]
    threads.append(threading.Thread(target=sampler))
    start_height = node.status()["height"]
    for t in threads:
        t.start()
    time.sleep(duration)
    stop.set()
    for t in threads:
        t.join(60)
    end_height = node.status()["height"]
    lat = sorted(status_lat)
    p50, p99 = lat[len(lat) // 2], lat[int(0.99 * (len(lat) - 1))]
    node.stop()
    r = subprocess.run([sys.executable, "-m", "node.cli", "verify", "--datadir", str(node.datadir)], cwd=REPO,
                       env=node_env(), capture_output=True, text=True, timeout=600)
    figures = dict(duration_s=duration, readers=READERS, announcers=ANNOUNCERS, requests=sum(counts.values()),
                   by_kind=dict(counts), status_samples=len(lat), status_p50_s=round(p50, 3),
                   status_p99_s=round(p99, 3), status_max_s=round(lat[-1], 3),
                   blocks_mined_under_load=end_height - start_height, verify=r.stdout.strip())
    record("load", **figures)
    assert r.returncode == 0 and r.stdout.startswith("OK"), r.stdout + r.stderr[-2000:]
    assert all(b >= a for a, b in zip(heights, heights[1:])), "the reported height went down"
    assert end_height > start_height, "the node stopped mining under load"
    assert not any(k.startswith(("GET 5", "POST 5", "error", "status error")) for k in counts), counts
    assert p99 < 1.0, f"/status p99 {p99:.3f}s under load"
