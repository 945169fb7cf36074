"""The peer book: a bounded list, backoff on failure, bans for misbehaviour."""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass

BAN_SECONDS = 600.0
MAX_BACKOFF = 60.0


@dataclass
class Peer:
    url: str
    failures: int = 0
    next_try: float = 0.0
    banned_until: float | None = None
    last_seen: float | None = None
    height: int | None = None
    work: int | None = None
    ban_reason: str | None = None

    def state(self, now: float) -> str:
        if self.banned_until and self.banned_until > now:
            return "banned"
        if self.failures:
            return "backoff"
        return "connected" if self.last_seen else "new"


class PeerBook:
    def __init__(self, own_url: str, max_peers: int = 32):
        self.own_url = own_url.rstrip("/")
        self.max_peers = max_peers
        self.peers: dict[str, Peer] = {}
        self.lock = threading.Lock()

    def add(self, url: str) -> bool:
        url = url.rstrip("/")
        with self.lock:
            if url == self.own_url or url in self.peers or len(self.peers) >= self.max_peers:
                return False
            self.peers[url] = Peer(url)
            return True

    def usable(self) -> list[Peer]:
        now = time.time()
        with self.lock:
            return [p for p in self.peers.values()
                    if not (p.banned_until and p.banned_until > now) and p.next_try <= now]

    def connected(self) -> list[Peer]:
        now = time.time()
        with self.lock:
            return [p for p in self.peers.values() if p.state(now) == "connected"]

    def ok(self, url: str, height: int | None = None, work: int | None = None) -> None:
        with self.lock:
            p = self.peers.get(url.rstrip("/"))
            if p:
                p.failures, p.next_try, p.last_seen = 0, 0.0, time.time()
                if height is not None:
                    p.height, p.work = height, work

    def failed(self, url: str) -> None:
        with self.lock:
            p = self.peers.get(url.rstrip("/"))
            if p:
                p.failures += 1
                p.next_try = time.time() + min(MAX_BACKOFF, 0.5 * 2 ** min(p.failures, 8))

    def ban(self, url: str, reason: str, seconds: float = BAN_SECONDS) -> None:
        with self.lock:
            p = self.peers.get(url.rstrip("/"))
            if p is None:
                return
            p.banned_until, p.ban_reason = time.time() + seconds, reason

    def is_banned(self, url: str) -> bool:
        with self.lock:
            p = self.peers.get(url.rstrip("/"))
            return bool(p and p.banned_until and p.banned_until > time.time())

    def snapshot(self) -> list[dict]:
        now = time.time()
        with self.lock:
            return [{"url": p.url, "state": p.state(now), "height": p.height, "failures": p.failures,
                     "banned_until": p.banned_until if p.state(now) == "banned" else None,
                     "last_seen": p.last_seen} for p in self.peers.values()]
