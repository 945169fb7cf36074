"""Bans: peers (by ``scheme://host:port``) and API clients (by host), bounded, oldest out first; and
whole networks (IPv4 /24, IPv6 /48) once ``PREFIX_STRIKES`` addresses of one were banned.

A /64 holds 2^64 addresses and a host has 65,535 ports, so bans by address alone cost an attacker
nothing: the third banned address of a network bans the network (``net:a.b.c.0/24``) for the ban's
time, in a list of its own (``MAX_PREFIX_BANS``, so address bans cannot push it out). Loopback,
link-local and private networks (an operator's own testnet) are never banned as a whole.

Kept apart from the peer book so that a banned sender stays banned when the book
is full or it never was in it. A banned peer is not dialled, not learned and its
announcements are dropped; a banned client's writes (POST /blocks, /peers,
/certificates) are refused with 403 ``banned``.
"""
from __future__ import annotations

import threading
import time
from collections import OrderedDict

from .addresses import ban_key, host_of, is_local_network, network_prefix

BAN_SECONDS = 600.0
MAX_BANS = 1024
PREFIX_STRIKES = 3        # banned addresses of one network that ban the network
MAX_PREFIX_BANS = 1024


class Bans:
    def __init__(self, max_bans: int = MAX_BANS):
        self.max_bans = max_bans
        self._bans: OrderedDict[str, tuple[float, str]] = OrderedDict()
        self._prefix_bans: OrderedDict[str, tuple[float, str]] = OrderedDict()
        self._strikes: OrderedDict[str, dict[str, float]] = OrderedDict()   # prefix -> {banned key: until}
        self._lock = threading.Lock()

    def ban(self, who: str, reason: str, seconds: float = BAN_SECONDS, until: float | None = None) -> str | None:
        """Ban a peer URL or a client host (or a ``net:`` prefix, as the peer store reloads it); returns
        the key banned (None when ``who`` is none of them)."""
        if isinstance(who, str) and who.startswith("net:"):
            try:
                local = is_local_network(who)
            except ValueError:
                return None
            if local:
                return None
            with self._lock:
                self._prefix_bans[who] = (time.time() + seconds if until is None else until, reason)
                while len(self._prefix_bans) > MAX_PREFIX_BANS:
                    self._prefix_bans.popitem(last=False)
            return who
        key = ban_key(who)
        if key is None:
            return None
        end = time.time() + seconds if until is None else until
        with self._lock:
            self._bans[key] = (end, reason)
            self._bans.move_to_end(key)
            while len(self._bans) > self.max_bans:
                self._bans.popitem(last=False)
            self._strike(who, key, end, reason)
        return key

    def _strike(self, who: str, key: str, end: float, reason: str) -> None:
        """A ban outside local networks: a peer URL bans its host (every port: one machine), and the
        host is one strike against its network."""
        prefix = network_prefix(who)
        if prefix is None or is_local_network(prefix):
            return
        host = ban_key(host_of(who))
        if host != key:
            self._bans[host] = (end, reason)
        now = time.time()
        strikes = {k: u for k, u in self._strikes.pop(prefix, {}).items() if u > now}
        strikes[host] = end
        self._strikes[prefix] = strikes
        while len(self._strikes) > MAX_PREFIX_BANS:
            self._strikes.popitem(last=False)
        if len(strikes) >= PREFIX_STRIKES:
            self._prefix_bans[prefix] = (max(strikes.values()), f"{len(strikes)} addresses of the network "
                                                                f"banned (last: {reason})")
            self._prefix_bans.move_to_end(prefix)
            while len(self._prefix_bans) > MAX_PREFIX_BANS:
                self._prefix_bans.popitem(last=False)

    def _entry(self, who: str) -> tuple[float, str] | None:
        key = ban_key(who)
        if key is None:
            return None
        prefix = network_prefix(who)
        host = ban_key(host_of(who)) if prefix is not None else None
        now = time.time()
        with self._lock:
            for table, k in ((self._bans, key), (self._bans, host), (self._prefix_bans, prefix)):
                b = table.get(k) if k is not None else None
                if b is not None and b[0] <= now:
                    del table[k]
                    b = None
                if b is not None:
                    return b
            return None

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
            return [(k, until, reason) for table in (self._bans, self._prefix_bans)
                    for k, (until, reason) in table.items() if until > now]
