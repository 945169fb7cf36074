"""The peer book: a bounded list, backoff on failure, bans for misbehaviour.

* Peers come from ``--peer`` (configured: never dropped), from other peers'
  lists (learned), from announcements and introductions. The book holds at most
  ``max_peers``; a new peer may take the place of a learned one that keeps failing.
* A failure (timeout, refused connection, slow or bad body) puts a peer in
  backoff: 1 s, 2 s, 4 s ... up to ``MAX_BACKOFF``; hearing from it again (an
  answer, an announcement, an introduction) clears it. A learned peer failing
  ``DROP_AFTER`` times in a row is forgotten.
* A ban (a provably invalid block or header, another chain) lasts ``BAN_SECONDS``
  and is kept apart from the list, bounded, so a banned sender stays banned even
  when the list is full or it was never in it. Banned peers are not dialled.
"""
from __future__ import annotations

import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from urllib.parse import urlsplit

BAN_SECONDS = 600.0
MAX_BACKOFF = 30.0
DROP_AFTER = 10
MAX_BANS = 1024
MAX_URL = 256


def normalize_url(url) -> str | None:
    """``scheme://host[:port][/path]`` without a trailing slash, or None when not a usable peer URL."""
    if not isinstance(url, str) or len(url) > MAX_URL:
        return None
    url = url.strip().rstrip("/")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018  (raises on a bad port)
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
        return None
    if any(c.isspace() for c in url):
        return None
    return url


@dataclass
class Peer:
    url: str
    source: str = "learned"          # configured | learned | announced | introduced
    failures: int = 0
    next_try: float = 0.0
    last_seen: float | None = None
    height: int | None = None
    work: int | None = None
    tip: str | None = None
    bad_bodies: int = 0
    last_polled: float = 0.0
    added: float = field(default_factory=time.time)

    def state(self, now: float) -> str:
        if self.failures:
            return "backoff"
        return "connected" if self.last_seen else "new"


class PeerBook:
    def __init__(self, own_url: str, max_peers: int = 32, max_bans: int = MAX_BANS):
        self.own_url = (normalize_url(own_url) or own_url).rstrip("/")
        self.max_peers = max_peers
        self.max_bans = max_bans
        self.peers: dict[str, Peer] = {}
        self.bans: OrderedDict[str, tuple[float, str]] = OrderedDict()
        self.lock = threading.Lock()

    # -- membership -------------------------------------------------------------------------
    def add(self, url: str, source: str = "learned") -> bool:
        """Add a peer; False when it is us, known, banned, malformed, or the book is full."""
        url = normalize_url(url)
        if url is None or url == self.own_url:
            return False
        with self.lock:
            if url in self.peers or self._banned(url, time.time()):
                return False
            if len(self.peers) >= self.max_peers and not self._evict_one(source == "configured"):
                return False
            self.peers[url] = Peer(url, source)
            return True

    def _evict_one(self, force: bool) -> bool:
        """Make room: drop the learned peer that failed most (any learned one when ``force``)."""
        cands = [p for p in self.peers.values() if p.source != "configured" and (force or p.failures >= 3)]
        if not cands:
            return False
        worst = max(cands, key=lambda p: (p.failures, -(p.last_seen or 0)))
        del self.peers[worst.url]
        return True

    def touch(self, url: str) -> None:
        """We heard from this peer (it called us): clear its backoff."""
        url = (url or "").rstrip("/")
        with self.lock:
            p = self.peers.get(url)
            if p is not None and p.failures:
                p.failures, p.next_try = 0, 0.0

    def get(self, url: str) -> Peer | None:
        with self.lock:
            return self.peers.get((url or "").rstrip("/"))

    # -- selection ------------------------------------------------------------------------------
    def usable(self) -> list[Peer]:
        """Peers we may dial now: not banned, not waiting out a backoff."""
        now = time.time()
        with self.lock:
            return [p for p in self.peers.values() if not self._banned(p.url, now) and p.next_try <= now]

    def connected(self) -> list[Peer]:
        """Usable peers that answered recently and are not in backoff."""
        now = time.time()
        with self.lock:
            return [p for p in self.peers.values()
                    if not self._banned(p.url, now) and p.failures == 0 and p.last_seen]

    # -- outcomes ------------------------------------------------------------------------------------
    def ok(self, url: str, height: int | None = None, work: int | None = None, tip: str | None = None) -> None:
        with self.lock:
            p = self.peers.get(url.rstrip("/"))
            if p:
                p.failures, p.next_try, p.last_seen = 0, 0.0, time.time()
                if height is not None:
                    p.height, p.work, p.tip = height, work, tip

    def failed(self, url: str) -> None:
        with self.lock:
            p = self.peers.get(url.rstrip("/"))
            if p is None:
                return
            p.failures += 1
            p.next_try = time.time() + min(MAX_BACKOFF, 0.5 * 2 ** min(p.failures, 8))
            if p.failures >= DROP_AFTER and p.source != "configured":
                del self.peers[p.url]

    def bad_body(self, url: str) -> None:
        """A body that did not match its header: not a ban (it may have been corrupted), but a failure."""
        with self.lock:
            p = self.peers.get(url.rstrip("/"))
            if p:
                p.bad_bodies += 1
        self.failed(url)

    # -- bans ----------------------------------------------------------------------------------------
    def ban(self, url: str, reason: str, seconds: float = BAN_SECONDS) -> None:
        url = (url or "").rstrip("/")
        if not url:
            return
        with self.lock:
            self.bans[url] = (time.time() + seconds, reason)
            self.bans.move_to_end(url)
            while len(self.bans) > self.max_bans:
                self.bans.popitem(last=False)

    def _banned(self, url: str, now: float) -> bool:
        b = self.bans.get(url)
        if b is None:
            return False
        if b[0] <= now:
            del self.bans[url]
            return False
        return True

    def is_banned(self, url: str) -> bool:
        with self.lock:
            return self._banned((url or "").rstrip("/"), time.time())

    def ban_reason(self, url: str) -> str | None:
        with self.lock:
            b = self.bans.get((url or "").rstrip("/"))
            return b[1] if b and b[0] > time.time() else None

    # -- reporting -------------------------------------------------------------------------------------
    def snapshot(self) -> list[dict]:
        now = time.time()
        with self.lock:
            out = []
            for p in self.peers.values():
                banned = self._banned(p.url, now)
                out.append({"url": p.url, "state": "banned" if banned else p.state(now), "height": p.height,
                            "failures": p.failures, "banned_until": self.bans[p.url][0] if banned else None,
                            "ban_reason": self.bans[p.url][1] if banned else None, "source": p.source,
                            "bad_bodies": p.bad_bodies, "last_seen": p.last_seen})
            for url, (until, reason) in list(self.bans.items()):
                if url not in self.peers and until > now:
                    out.append({"url": url, "state": "banned", "height": None, "failures": 0,
                                "banned_until": until, "ban_reason": reason, "source": "banned",
                                "bad_bodies": 0, "last_seen": None})
            return out
