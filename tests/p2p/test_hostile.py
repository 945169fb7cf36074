"""Hostile peers and clients against real node processes (docs/security.md, "Hostile peers and clients").

The attacker is a client on another loopback address (127.0.0.2 and up: the honest nodes and this
test's own readers are 127.0.0.1, which nodes trust by default), so its rate limits and bans are its
own. Each test prints a FIGURES line with what it measured.
"""
from __future__ import annotations

import json
import math
import os
import random
import select
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

import httpx
import pytest

from p2p.exchange import RETRY_FIRST
from tests.nodeproc import NodeProc, patient, wait_for

from consensus.ticket import sign_with_ticket
from .conftest import COMMON
from .util import FakePeer, SilentPeer, same_tip, tampered_block
from tests.chain_spec import TINY_TEST

pytestmark = pytest.mark.slow      # node processes or long mining: in the full suite, not in `-m "not slow"`


def client_from(ip: str, node: NodeProc, timeout: float = 10) -> httpx.Client:
    """An HTTP client whose connections come from ``ip`` (a loopback address other than 127.0.0.1)."""
    return httpx.Client(base_url=node.url, timeout=timeout, transport=httpx.HTTPTransport(local_address=ip))


class Sampler:
    """GET /status of ``node`` every ``every`` seconds in a thread: latencies and (height, tip)."""

    def __init__(self, *nodes: NodeProc, every: float = 0.05):
        self.nodes, self.every = nodes, every
        self.lat: list[float] = []
        self.seen: list[tuple[float, tuple]] = []
        self.errors = 0
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        with httpx.Client(timeout=10) as c:
            while not self._stop.wait(self.every):
                row = []
                try:
                    for n in self.nodes:
                        t0 = time.perf_counter()
                        st = c.get(n.url + "/status").json()
                        self.lat.append(time.perf_counter() - t0)
                        row.append((st["height"], st["tip"]))
                except httpx.HTTPError:
                    self.errors += 1
                    continue
                self.seen.append((time.monotonic(), tuple(row)))

    def __enter__(self):
        self._t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join(15)

    def p99(self) -> float:
        lat = sorted(self.lat)
        return lat[int(0.99 * (len(lat) - 1))] if lat else float("nan")

    def lags(self) -> list[float]:
        """For each tip the first node reached, how long until the last node had a block as high."""
        out, first = [], {}
        for t, row in self.seen:
            for height, _ in row:
                first.setdefault(height, t)
            low = min(h for h, _ in row)
            for h in [h for h in first if h <= low]:
                out.append(t - first.pop(h))
        return out


INVALID_PROOF = ("requirements-not-met", "state-mismatch")   # a fresh key: R differs


def figures(name: str, **kw) -> None:
    print("FIGURES", json.dumps({"test": name, **kw}))


@pytest.fixture
def pair(nodes):
    """M mines; V follows M (knows it from --peer). Both up, V on M's chain."""
    m = nodes.add("m", "--mine")
    v = nodes.add("v", peers=(m,))
    nodes.start_all([m, v])
    m.wait_height(2, timeout=120)
    wait_for(lambda: v.status()["height"] >= 2, timeout=60, what="V following M")
    return m, v


def _junk(i: int) -> dict:
    rnd = random.Random(i)
    kind = i % 4
    if kind == 0:
        return {"content": bytes(rnd.getrandbits(8) for _ in range(200)), "headers": {"content-type": "application/json"}}
    if kind == 1:
        return {"json": {"nope": i}}
    if kind == 2:
        return {"content": b"{" * 500, "headers": {"content-type": "application/json"}}
    return {"files": {"header": (None, "not json"), "records": (None, os.urandom(1000))}}


def test_junk_post_flood_is_rate_limited_and_the_chain_goes_on(pair):
    m, v = pair
    h0 = m.status()["height"]
    codes: dict[int, int] = {}
    retry_after, bodies = set(), set()
    lock = threading.Lock()
    with Sampler(v) as s, client_from("127.0.0.2", v, timeout=60) as attacker:
        t0 = time.monotonic()

        def junk(i: int) -> None:
            time.sleep(max(0.0, t0 + i * 8.0 / 300 - time.monotonic()))     # 300 spread over 8 s
            r = attacker.post("/blocks", **_junk(i))
            with lock:
                codes[r.status_code] = codes.get(r.status_code, 0) + 1
                if r.status_code == 429:
                    retry_after.add(r.headers.get("retry-after"))
                    bodies.add(r.json()["error"])

        with ThreadPoolExecutor(8) as pool:
            list(pool.map(junk, range(300)))
        flood_s = time.monotonic() - t0
        m.wait_height(max(h0 + 2, m.status()["height"]), timeout=120)
    # the flood's duration and the /status latencies are figures (printed below), not asserted
    assert codes.get(429, 0) > 0 and bodies == {"rate-limited"}, codes
    assert all(x and int(x) >= 1 for x in retry_after), retry_after
    assert not any(c >= 500 for c in codes), codes
    assert m.status()["height"] >= h0 + 2, "the honest chain stopped"
    wait_for(lambda: v.status()["height"] >= m.status()["height"] - 1, timeout=120, what="V keeping up with M")
    # the trusted local client is not limited by the attacker's bucket
    assert v.post("/blocks", json={"nope": 1}).status_code == 422
    figures("junk-flood", posts=300, seconds=round(flood_s, 1), codes=codes, status_p99_s=round(s.p99(), 3),
            status_max_s=round(max(s.lat, default=float("nan")), 3), status_errors=s.errors,
            honest_blocks_during=m.status()["height"] - h0, load=os.getloadavg()[0])


def test_invalid_block_bans_the_client_not_the_loopback(pair):
    m, v = pair
    bad = tampered_block(m, m.status()["height"] - 1)
    with client_from("127.0.0.3", v) as attacker:
        # sent again while the node answers 503 busy, as a client is told to: M keeps mining, and a stranger's
        # block gives way to M's next block if that comes in while it is judged (node/admission.py)
        for _ in range(50):
            r = attacker.post("/blocks", files={"header": (None, bad.encode()), "records": (None, "[]")})
            if not (r.status_code == 503 and r.json().get("error") == "busy"):
                break
            time.sleep(0.2)
        assert r.status_code == 400, r.text
        for path, kw in (("/blocks", {"json": {"nope": 1}}), ("/peers", {"json": {"url": "http://10.1.1.1:1"}}),
                         ("/certificates", {"json": {}})):
            r = attacker.post(path, **kw)
            assert r.status_code == 403 and r.json()["error"] == "banned", (path, r.text)
            assert int(r.headers["retry-after"]) > 60
        assert attacker.get("/status").status_code == 200           # reads stay open
    banned = {p["url"]: p for p in v.peers() if p["state"] == "banned"}
    assert "127.0.0.3" in banned and banned["127.0.0.3"]["ban_reason"] in INVALID_PROOF, banned
    # the same invalid block from the trusted loopback: refused, but nobody on 127.0.0.1 is banned
    r = v.post("/blocks", files={"header": (None, bad.encode()), "records": (None, "[]")})
    assert r.status_code == 409
    assert "127.0.0.1" not in {p["url"] for p in v.peers()}
    assert m.block(bad.hash) is None
    # 32 distinct invalid blocks at once: at most 16 wait for the validator, the others are told 503 busy
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    key = Ed25519PrivateKey.generate()
    many = [sign_with_ticket(TINY_TEST, replace(bad, timestamp_ms=bad.timestamp_ms + i + 1), key) for i in range(32)]

    def post(h):
        r = v.post("/blocks", files={"header": (None, h.encode()), "records": (None, "[]")})
        return r.status_code, r.json().get("error"), r.headers.get("retry-after")

    with ThreadPoolExecutor(32) as pool:
        answers = list(pool.map(post, many))
    busy = [a for a in answers if a[0] == 503]
    assert busy and all(a[1] == "busy" and a[2] == "1" for a in busy), answers
    assert all(a[0] in (400, 503) for a in answers), answers
    figures("validation-queue", posts=len(many), busy=len(busy), judged=len(answers) - len(busy))


def test_peer_book_cannot_be_filled_by_callers(pair, tmp_path):
    """Introductions of one live host under 50 paths (from 50 addresses, so none is rate-limited), 100
    paths on a host that never answers, 200 announcements naming it as origin, and junk hosts: V keeps
    one entry for the live host, none for the dead one, dials the dead one once, and M (V's partner)
    learns nothing unverified."""
    m, v = pair
    with FakePeer() as live, SilentPeer() as dead:
        st = v.status()
        for i in range(50):                                    # a healthy peer on our chain, under any path
            live.serve_json(f"/p{i}/status", st)
        tip = m.block(str(m.status()["height"]))
        codes: dict[int, int] = {}
        lock = threading.Lock()

        def post(ip: str, path: str, **kw) -> None:
            with client_from(ip, v, timeout=60) as c:
                r = c.post(path, **kw)
            with lock:
                codes[r.status_code] = codes.get(r.status_code, 0) + 1

        t_flood = time.monotonic()
        with Sampler(m, v, every=0.2) as s, ThreadPoolExecutor(8) as pool:
            for i in range(50):
                pool.submit(post, f"127.0.1.{i + 1}", "/peers", json={"url": f"{live.url}/p{i}"})
            for i in range(100):
                pool.submit(post, f"127.0.2.{i + 1}", "/peers", json={"url": f"{dead.url}/x{i}"})
            for i in range(200):
                h = dict(tip["header"], timestamp_ms=tip["header"]["timestamp_ms"] + i + 1)
                pool.submit(post, f"127.0.3.{i % 250 + 1}", "/blocks", json=h,
                            headers={"x-polchain-origin": dead.url})
            junk = ["http://Å", "http://-Infinity", "http://999", "http://a..b", "http://x:0", "http://u:p@h:1"]
            for i, url in enumerate(junk):
                pool.submit(post, f"127.0.4.{i + 1}", "/peers", json={"url": url})
            pool.shutdown(wait=True)
            # the live host's handshake passes (the dead one's time out meanwhile)
            wait_for(lambda: len([p for p in v.peers() if p["url"].startswith(live.url)]) == 1, timeout=60,
                     what="V keeping one entry for the live host")
        book = v.peers()
        live_host = live.url.rsplit(":", 1)[0].replace("http://", "")
        entries_live = [p for p in book if p["url"].startswith(live.url)]
        entries_dead = [p for p in book if p["url"].startswith(dead.url)]
        assert len(entries_live) == 1 and len(entries_dead) == 0, book
        assert not any(u in json.dumps(book) for u in ("Infinity", "999", "a..b", "u:p@")), book
        # one candidate for its 100 paths and 200 announcements, dialled again only after each backoff
        # (RETRY_FIRST, then twice as long: p2p/exchange.py): at most 1 + k dials in RETRY_FIRST * (2^k - 1)
        # seconds however slowly the flood went, against 300 proposals
        elapsed = time.monotonic() - t_flood
        max_dials = 1 + int(math.log2(elapsed / RETRY_FIRST + 1))
        assert dead.accepted <= max_dials, f"the dead host was dialled {dead.accepted} times in {elapsed:.0f} s"
        assert codes.get(422, 0) >= len(junk) and not any(c >= 500 for c in codes), codes
        time.sleep(3)
        assert not any(p["url"].startswith(dead.url) for p in m.peers()), m.peers()
        drift = max((abs(a[0] - b[0]) for _, (a, b) in s.seen), default=None)
    wait_for(lambda: same_tip(m, v) or abs(m.status()["height"] - v.status()["height"]) <= 1, timeout=120,
             what="M and V on one chain")
    figures("peer-book-flood", codes=codes, entries_for_live_host=len(entries_live), live_host=live_host,
            entries_for_dead_host=len(entries_dead), dead_host_connections=dead.accepted, book_size=len(book),
            max_height_drift=drift)


def test_one_silent_peer_holds_nobody_up(nodes):
    """V knows M and a peer S that accepts connections and never answers; 30 announcements naming S (signed
    headers that pass the stand-alone checks) arrive meanwhile. V keeps answering and keeps following M
    (how far behind, in seconds, is a figure)."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from consensus.block import BlockHeader

    with SilentPeer() as silent:
        m = nodes.add("m", "--mine")
        v = nodes.add("v", peers=(m, silent.url))
        nodes.start_all([m, v])
        m.wait_height(2, timeout=120)
        key = Ed25519PrivateKey.generate()
        with Sampler(m, v, every=0.1) as s, client_from("127.0.0.5", v, timeout=60) as attacker:
            h0 = m.status()["height"]
            for _ in range(30):
                top = BlockHeader.from_dict(m.block(str(m.status()["height"]))["header"])
                fake = sign_with_ticket(TINY_TEST, replace(top, height=top.height + 1, parent=top.hash,
                                                                timestamp_ms=int(time.time() * 1000)), key)
                r = attacker.post("/blocks", content=fake.encode(),
                                  headers={"content-type": "application/json", "x-polchain-origin": silent.url})
                assert r.status_code in (202, 409, 429), r.text
                time.sleep(0.5)
            m.wait_height(h0 + 3, timeout=120)
            # S never answers and keeps every connection open: V still follows M to within a block
            wait_for(lambda: v.status()["height"] >= m.status()["height"] - 1, timeout=120,
                     what="V within a block of M")
            grown = m.status()["height"] - h0
        lags = sorted(s.lags())
    figures("silent-peer", blocks=grown, lag_median_s=round(lags[len(lags) // 2], 2) if lags else None,
            lag_max_s=round(lags[-1], 2) if lags else None, silent_connections=silent.accepted,
            status_p99_s=round(s.p99(), 3), status_errors=s.errors, load=os.getloadavg()[0])


def test_peer_book_survives_a_restart(nodes):
    """V learned M from --peer; restarted on another port without --peer, it dials M from its saved book
    and catches up (M cannot call V: it only knows V's old address)."""
    m = nodes.add("m", "--mine")
    v = nodes.add("v", peers=(m,))
    nodes.start_all([m, v])
    wait_for(lambda: v.status()["height"] >= 2 and m.url in {p["url"] for p in v.peers()}, timeout=120,
             what="V following M")
    v.stop()
    saved = json.loads((v.datadir / "peers.json").read_text())
    assert m.url in {p["url"] for p in saved["peers"]}, saved
    h = m.status()["height"]
    m.wait_height(h + 2, timeout=60)
    v2 = NodeProc(v.datadir, *COMMON, name="v2")
    nodes.nodes["v2"] = v2
    v2.start()
    t0 = time.monotonic()
    assert m.url in {p["url"] for p in v2.peers()}
    wait_for(lambda: v2.status()["height"] >= h + 2, timeout=60, what="V back on M's chain after the restart")
    figures("restart", caught_up_s=round(time.monotonic() - t0, 1), blocks=v2.status()["height"] - h)
    assert v2.log_lines(r"peer book: 1 peers from")
    # stopped while polling and being polled: a clean shutdown, no traceback (a CancelledError was logged once)
    for n in (v2, m):
        assert n.stop() == 0
    for n in (v, v2, m):
        assert "Traceback" not in n.log_text(), n.log_text()[-3000:]


def test_concurrent_large_bodies_are_bounded(nodes):
    v = nodes.start("v")
    socks, answers = [], []
    try:
        # 8 uploads of 500 kB (over the 256 KiB "large" mark, under the /blocks cap of twice the largest
        # block) that never finish: 4 are read, 4 refused
        for _ in range(8):
            s = socket.create_connection(("127.0.0.1", v.port))
            s.settimeout(5)
            s.sendall(b"POST /blocks HTTP/1.1\r\nhost: x\r\ncontent-type: application/octet-stream\r\n"
                      b"content-length: 500000\r\n\r\n" + b"x" * 1000)
            socks.append(s)
        got = {s: b"" for s in socks}
        open_ = set(socks)

        def read_ready(wait: float) -> None:
            for s in select.select(list(open_), [], [], wait)[0] if open_ else []:
                try:
                    chunk = s.recv(4096)
                except OSError:
                    chunk = b""
                got[s] += chunk
                if not chunk:
                    open_.discard(s)             # answered and closed

        def is_busy(a: str) -> bool:
            return a.startswith("HTTP/1.1 503") and '"busy"' in a and "retry-after" in a.lower()

        deadline = time.monotonic() + patient(30)
        while sum(is_busy(b.decode(errors="replace")) for b in got.values()) < 4 and time.monotonic() < deadline:
            read_ready(0.5)
        read_ready(0)                            # anything else already there
        answers = [got[s].decode(errors="replace") for s in socks]
        busy = [a for a in answers if is_busy(a)]
        assert len(busy) == 4, answers
        assert answers.count("") == 4, answers   # the other four are being read: no answer on them
        t0 = time.perf_counter()
        assert v.get("/status").status_code == 200     # the node answers meanwhile
        figures("large-bodies", busy=len(busy), status_s=round(time.perf_counter() - t0, 3))
    finally:
        for s in socks:
            s.close()
    # once they are gone, uploads are read again
    wait_for(lambda: v.post("/blocks", content=b"x" * 300_000,
                            headers={"content-type": "application/json"}).status_code == 422, timeout=60,
             what="large uploads accepted again")
