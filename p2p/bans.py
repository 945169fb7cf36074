"""Bans: peers (by ``scheme://host:port``) and API clients (by host), bounded, oldest out first.

Kept apart from the peer book so that a banned sender stays banned when the book
is full or it never was in it. A banned peer is not dialled, not learned and its
announcements are dropped; a banned client's writes (POST /blocks, /peers,
/certificates) are refused with 403 ``banned``.
"""
from __future__ import annotations

import threading
import time
from collections import OrderedDict

from .addresses import ban_key

BAN_SECONDS = 600.0
MAX_BANS = 1024


class Bans:
    def __init__(self, max_bans: int = MAX_BANS):
        self.max_bans = max_bans
        self._bans: OrderedDict[str, tuple[float, str]] = OrderedDict()
        self._lock = threading.Lock()

    def ban(self, who: str, reason: str, seconds: float = BAN_SECONDS, until: float | None = None) -> str | None:
        """Ban a peer URL or a client host; returns the key banned (None when ``who`` is neither)."""
        key = ban_key(who)
        if key is None:
            return None
        with self._lock:
            self._bans[key] = (time.time() + seconds if until is None else until, reason)
            self._bans.move_to_end(key)
            while len(self._bans) > self.max_bans:
                self._bans.popitem(last=False)
        return key

    def _entry(self, who: str) -> tuple[float, str] | None:
        key = ban_key(who)
        if key is None:
            return None
        with self._lock:
            b = self._bans.get(key)
            if b is not None and b[0] <= time.time():
                del self._bans[key]
                return None
            return b

    def is_banned(self, who: str) -> bool:
        return self._entry(who) is not None

    def reason(self, who: str) -> str | None:
        b = self._entry(who)
        return b[1] if b else None

    def until(self, who: str) -> float | None:
        b = self._entry(who)
        return b[0] if b else None

    def items(self) -> list[tuple[str, float, str]]:
        """Live bans: (key, until, reason)."""
        now = time.time()
        with self._lock:
            return [(k, until, reason) for k, (until, reason) in self._bans.items() if until > now]
