"""The peer book: verified peers in bounded slots, backoff on failure, bans kept apart.

* One entry per ``scheme://host:port`` (p2p/addresses.py), whatever path was named.
* Outbound peers are the ones we chose: ``--peer`` seeds (``configured``: never
  dropped, always admitted) and peers learned from other peers' lists
  (``learned``). Inbound peers came to us: ``introduced`` (POST /peers) or
  ``announced`` (an announcement's origin). Inbound entries may use at most
  ``max_peers - reserved`` slots, so callers can never take the share kept for
  the peers we chose. Every non-configured entry has passed a handshake
  (p2p/exchange.py) before ``add`` is called.
* When the book is full a newcomer may take the place of an unhealthy entry
  (``UNHEALTHY`` failures in a row); an inbound newcomer may also take the place
  of the newest inbound entry of the host with the most inbound entries, when
  that spreads the book over more hosts (one host running many ports cannot hold
  every slot). Entries that served a valid block recently are kept.
* A failure (timeout, refusal, slow or bad body) puts a peer in backoff: 1, 2, 4
  ... ``MAX_BACKOFF`` s; an answer from it clears that. A non-configured peer
  failing ``DROP_AFTER`` times in a row is forgotten.
"""
from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass, field

from .addresses import normalize_url, peer_key, peer_url  # noqa: F401  (normalize_url re-exported)
from .bans import BAN_SECONDS, MAX_BANS, Bans  # noqa: F401

MAX_BACKOFF = 30.0
DROP_AFTER = 10
UNHEALTHY = 3
PROTECT_SECONDS = 600.0     # an entry that served a valid block this recently is not evicted
OUTBOUND = ("configured", "learned")


@dataclass
class Peer:
    url: str
    key: str = ""
    source: str = "learned"          # configured | learned | introduced | announced
    failures: int = 0
    next_try: float = 0.0
    last_seen: float | None = None
    height: int | None = None
    work: int | None = None
    tip: str | None = None
    bad_bodies: int = 0
    last_block: float = 0.0          # when it last served a block that was accepted
    added: float = field(default_factory=time.time)

    @property
    def outbound(self) -> bool:
        return self.source in OUTBOUND

    @property
    def host(self) -> str:
        return self.key.rsplit(":", 1)[0]

    def state(self, now: float) -> str:
        if self.failures:
            return "backoff"
        return "connected" if self.last_seen else "new"


class PeerBook:
    def __init__(self, own_url: str, max_peers: int = 32, max_bans: int = MAX_BANS, reserved: int | None = None):
        self.own_key = peer_key(own_url)
        self.max_peers = max_peers
        self.reserved = max(1, max_peers // 4) if reserved is None else reserved
        self.bans = Bans(max_bans)
        self.peers: dict[str, Peer] = {}     # key -> Peer
        self.lock = threading.Lock()
        self.changed = threading.Event()     # something worth saving (p2p/peerstore.py)

    # -- membership -------------------------------------------------------------------------
    def add(self, url: str, source: str = "learned", *, height: int | None = None, work: int | None = None,
            tip: str | None = None) -> bool:
        """Add a peer; False when it is us, known, banned, malformed, or there is no slot for it."""
        p = peer_url(url)
        if p is None or p[0] == self.own_key or self.bans.is_banned(p[0]):
            return False
        key, url = p
        with self.lock:
            if key in self.peers:
                return False
            if not self._make_room(source, key):
                return False
            now = time.time() if height is not None else None
            self.peers[key] = Peer(url, key, source, last_seen=now, height=height, work=work, tip=tip)
        self.changed.set()
        return True

    def _make_room(self, source: str, key: str) -> bool:
        inbound = [p for p in self.peers.values() if not p.outbound]
        full = len(self.peers) >= self.max_peers
        if source == "configured":      # the operator's choice: always admitted
            if full:
                self._evict(self.peers.values(), force=True)
            return True
        if source in OUTBOUND:
            return not full or self._evict(self.peers.values())
        if len(inbound) < self.max_peers - self.reserved and not full:
            return True
        return self._evict(inbound) or self._evict_for_diversity(inbound, key)

    def _evict(self, cands, force: bool = False) -> bool:
        """Drop the unhealthy non-configured entry that failed most (any unprotected one when ``force``)."""
        now = time.time()
        cands = [p for p in cands if p.source != "configured" and (p.failures >= UNHEALTHY or
                                                                   (force and now - p.last_block > PROTECT_SECONDS))]
        if not cands:
            return False
        worst = max(cands, key=lambda p: (p.failures, -(p.last_seen or 0)))
        del self.peers[worst.key]
        return True

    def _evict_for_diversity(self, inbound: list[Peer], key: str) -> bool:
        now = time.time()
        cands = [p for p in inbound if now - p.last_block > PROTECT_SECONDS]
        if not cands:
            return False
        per_host = Counter(p.host for p in cands)
        host, n = per_host.most_common(1)[0]
        if per_host.get(key.rsplit(":", 1)[0], 0) + 1 >= n:
            return False
        newest = max((p for p in cands if p.host == host), key=lambda p: p.added)
        del self.peers[newest.key]
        return True

    def get(self, url: str) -> Peer | None:
        key = peer_key(url)
        with self.lock:
            return self.peers.get(key) if key else None

    def waiting(self, url: str) -> bool:
        """In the book and waiting out a backoff."""
        p = self.get(url)
        return p is not None and p.next_try > time.time()

    # -- selection ------------------------------------------------------------------------------
    def usable(self) -> list[Peer]:
        """Peers we may dial now: not banned, not waiting out a backoff."""
        now = time.time()
        with self.lock:
            peers = [p for p in self.peers.values() if p.next_try <= now]
        return [p for p in peers if not self.bans.is_banned(p.key)]

    def connected(self) -> list[Peer]:
        """Usable peers that answered recently and are not in backoff."""
        with self.lock:
            peers = [p for p in self.peers.values() if p.failures == 0 and p.last_seen]
        return [p for p in peers if not self.bans.is_banned(p.key)]

    # -- outcomes ------------------------------------------------------------------------------------
    def ok(self, url: str, height: int | None = None, work: int | None = None, tip: str | None = None) -> None:
        p = self.get(url)
        if p is None:
            return
        with self.lock:
            fresh = p.last_seen is None
            p.failures, p.next_try, p.last_seen = 0, 0.0, time.time()
            if height is not None:
                p.height, p.work, p.tip = height, work, tip
        if fresh:
            self.changed.set()

    def served_block(self, url: str) -> None:
        p = self.get(url)
        if p is not None:
            p.last_block = time.time()

    def failed(self, url: str) -> None:
        p = self.get(url)
        if p is None:
            return
        with self.lock:
            p.failures += 1
            p.next_try = time.time() + min(MAX_BACKOFF, 0.5 * 2 ** min(p.failures, 8))
            if p.failures >= DROP_AFTER and p.source != "configured":
                self.peers.pop(p.key, None)
                self.changed.set()

    def bad_body(self, url: str) -> None:
        """A body that did not match its header: not a ban (it may have been corrupted), but a failure."""
        p = self.get(url)
        if p:
            p.bad_bodies += 1
        self.failed(url)

    # -- bans ----------------------------------------------------------------------------------------
    def ban(self, who: str, reason: str, seconds: float = BAN_SECONDS) -> str | None:
        key = self.bans.ban(who, reason, seconds)
        if key is not None:
            self.changed.set()
        return key

    def is_banned(self, who: str) -> bool:
        return self.bans.is_banned(who)

    def ban_reason(self, who: str) -> str | None:
        return self.bans.reason(who)

    # -- reporting and persistence ------------------------------------------------------------------------
    def snapshot(self) -> list[dict]:
        now = time.time()
        with self.lock:
            peers = list(self.peers.values())
        bans = {k: (until, reason) for k, until, reason in self.bans.items()}
        out = []
        for p in peers:
            until, reason = bans.pop(p.key, (None, None))
            out.append({"url": p.url, "state": "banned" if until else p.state(now), "height": p.height,
                        "failures": p.failures, "banned_until": until, "ban_reason": reason, "source": p.source,
                        "bad_bodies": p.bad_bodies, "last_seen": p.last_seen})
        for key, (until, reason) in bans.items():
            out.append({"url": key, "state": "banned", "height": None, "failures": 0, "banned_until": until,
                        "ban_reason": reason, "source": "banned", "bad_bodies": 0, "last_seen": None})
        return out

    def entries(self) -> list[dict]:
        """What is worth keeping across a restart (p2p/peerstore.py)."""
        with self.lock:
            peers = [asdict(p) for p in self.peers.values() if p.last_seen or p.source == "configured"]
        keep = ("url", "source", "last_seen", "height", "work", "tip", "last_block")
        return [{k: p[k] for k in keep} for p in peers]
