"""A junk-block flood from rotating loopback addresses, in a child process (tests/adversarial/test_flood.py,
test_lanes_fair.py).

``SENDERS`` threads post junk blocks (bench/give_way.py ``junk_block``: a fresh key, a valid signature,
parent = the given block, random nonces: a full replay before R fails) over ``NETWORKS`` /24s
(127.0.1.0/24 .. 127.0.8.0/24), from a new address (and connection) for every block, so the
per-address ban never catches them; with ``keep_alive`` each sender keeps its connection until its
junk was judged (its address is banned then) and only then moves on, which makes several times more
requests a second: a sender waiting for a free place asks again at once. The senders run in a child process (their threads would otherwise share the test's GIL); they
still share this machine's cores with the node, which a real attacker does not.

    with JunkFlood(node.url, parent_header, keep_alive=False) as flood:
        flood.wait_judged(8)             # until the node judged (and refused) 8 junk blocks
        ...                              # the flood runs
    flood.codes, flood.reasons           # status codes, and the 503s by reason
"""
from __future__ import annotations

import json
import multiprocessing
import random
import threading
import time
from collections import Counter

import httpx

from bench.give_way import junk_block
from consensus.block import BlockHeader
from tests.chain_spec import TINY_TEST

SENDERS = 32
NETWORKS = 8


def _post(c: httpx.Client, header: BlockHeader) -> httpx.Response:
    return c.post("/blocks", files={"header": (None, header.encode()), "records": (None, json.dumps([]))})


def reason_of(detail: str) -> str:
    """A 503's reason without its particulars (the network, the counts)."""
    return "gave way" if detail.startswith("gave way") else detail.split(";")[0].split("(")[0].strip()


def flood(url: str, parent_json: str, keep_alive: bool, started, stop, out, judged) -> None:
    """The child process: SENDERS threads post junk on ``parent`` from rotating addresses until ``stop``;
    counts the blocks the node judged (any answer but 503) in ``judged`` as they come; puts (status codes,
    503 reasons) on ``out``."""
    parent = BlockHeader.from_json(parent_json)
    spec = TINY_TEST
    codes, reasons = Counter(), Counter()
    lock = threading.Lock()

    def sender(i: int) -> None:
        rng = random.Random(i)
        n, c = 0, None
        while not stop.is_set():
            if c is None:             # a new address (and connection) once the last one's junk was judged
                ip = f"127.0.{1 + (i * 997 + n) % NETWORKS}.{2 + (i * 31 + n) % 250}"
                n += 1
                c = httpx.Client(base_url=url, timeout=60, transport=httpx.HTTPTransport(local_address=ip))
            try:
                r = _post(c, junk_block(spec, parent, rng).header)
            except httpx.HTTPError:
                c.close()
                c = None
                continue
            with lock:
                codes[r.status_code] += 1
                if r.status_code == 503:
                    reasons[reason_of(r.json()["detail"])] += 1
            if r.status_code != 503:
                with judged.get_lock():
                    judged.value += 1
            if r.status_code != 503 or not keep_alive:    # judged (its address banned now), or refused
                c.close()
                c = None
        if c is not None:
            c.close()

    threads = [threading.Thread(target=sender, args=(i,), daemon=True) for i in range(SENDERS)]
    for t in threads:
        t.start()
    started.set()
    for t in threads:
        t.join(timeout=120)
    out.put((dict(codes), dict(reasons)))


class JunkFlood:
    """The flood as a context: entered once the child's senders run, left once they stopped."""

    def __init__(self, url: str, parent: BlockHeader, keep_alive: bool = False):
        ctx = multiprocessing.get_context("spawn")
        self._started, self._stop, self._out = ctx.Event(), ctx.Event(), ctx.Queue()
        self._judged = ctx.Value("i", 0)
        self._proc = ctx.Process(target=flood, args=(url, parent.encode(), keep_alive, self._started, self._stop,
                                                     self._out, self._judged), daemon=True)
        self.codes: Counter = Counter()
        self.reasons: dict[str, int] = {}

    def __enter__(self) -> "JunkFlood":
        self._proc.start()
        if not self._started.wait(120):
            self._proc.kill()
            raise RuntimeError("the flood process did not start")
        return self

    @property
    def judged(self) -> int:
        """Junk blocks the node has judged so far (answers other than 503)."""
        return self._judged.value

    def wait_judged(self, n: int, timeout: float = 120) -> None:
        """Block until the node has judged ``n`` junk blocks: a count, not a time, so a loaded machine
        only makes the wait longer."""
        deadline = time.monotonic() + timeout
        while self.judged < n:
            if time.monotonic() > deadline or not self._proc.is_alive():
                raise RuntimeError(f"the node judged {self.judged} of {n} junk blocks in {timeout:.0f} s")
            time.sleep(0.05)

    def __exit__(self, *exc) -> None:
        self._stop.set()
        try:
            codes, self.reasons = self._out.get(timeout=180)
            self.codes = Counter({int(k): v for k, v in codes.items()})
        finally:
            self._proc.join(timeout=60)
            if self._proc.is_alive():
                self._proc.kill()
