"""Bans: peers (by ``scheme://host:port``) and API clients (by host); whole networks (IPv4 /24, IPv6 /48)
once ``PREFIX_STRIKES`` addresses of one were banned; wide networks (IPv4 /16, IPv6 /32) once
``WIDE_STRIKES`` networks of one were banned. A ban holds for its term.

A /64 holds 2^64 addresses and a host has 65,535 ports, so bans by address alone cost an attacker
nothing: the third banned address of a network bans the network (``net:a.b.c.0/24``) for the ban's
time; and one /32 holds 65,536 /48s, so the ``WIDE_STRIKES``-th banned network of a /32 (or /16) bans
that (``net:2001:db8::/32``). Loopback, link-local and private networks (an operator's own testnet) are
never banned as a whole.

Each level is a ``BanTable`` of bounded size that never drops a ban in force (issue 30.3: an LRU of
1,024 forgot the first of 1,025 banned /48s). When a table is full, expired bans and bans a wider one
covers make room; failing that, the ban goes one level up: an address's network is banned, a
network's wide network. Only a full table of wide networks (``MAX_WIDE_BANS`` providers banned at
once, or addresses that have no network: DNS names, local networks) turns a new ban away, with a
warning; the bans already there hold. Strikes (banned addresses per network, banned networks per wide
network) are bounded the same way, oldest first: a forgotten strike slows aggregation, never lifts a ban.

Kept apart from the peer book so that a banned sender stays banned when the book
is full or it never was in it. A banned peer is not dialled, not learned and its
announcements are dropped; a banned client's writes (POST /blocks, /peers,
/certificates) are refused with 403 ``banned``.
"""
from __future__ import annotations

import ipaddress
import logging
import threading
import time
from collections import OrderedDict
from typing import NamedTuple

from .addresses import (PREFIX_V4, PREFIX_V6, WIDE_V4, WIDE_V6, ban_key, host_of, is_local_network,
                        network_prefix, wide_network)

log = logging.getLogger("polchain.p2p")

BAN_SECONDS = 600.0
MAX_BANS = 1024           # addresses and peer keys
MAX_PREFIX_BANS = 1024    # networks (/24, /48)
MAX_WIDE_BANS = 1024      # wide networks (/16, /32)
PREFIX_STRIKES = 3        # banned addresses of one network that ban the network
WIDE_STRIKES = 8          # banned networks of one wide network that ban the wide network
MAX_STRIKES = 4096        # networks (and wide networks) whose strikes are remembered


class Ban(NamedTuple):
    until: float
    reason: str
    wider: str | None      # the next level's key that covers this ban (its network, its wide network)


class BanTable:
    """Bans of one level, at most ``cap``; a ban in force is never dropped to make room."""

    def __init__(self, cap: int):
        self.cap = cap
        self._bans: dict[str, Ban] = {}

    def __len__(self) -> int:
        return len(self._bans)

    def get(self, key: str | None, now: float) -> Ban | None:
        ban = self._bans.get(key) if key is not None else None
        if ban is not None and ban.until <= now:
            del self._bans[key]
            return None
        return ban

    def put(self, key: str, ban: Ban, wider: "BanTable | None", now: float) -> bool:
        """Record ``ban`` (a longer one already there stays); False when the table is full of bans in force
        that no ban of ``wider`` covers."""
        old = self._bans.get(key)
        if old is not None and old.until >= ban.until:
            return True
        if old is None and len(self._bans) >= self.cap:
            self._make_room(wider, now)
            if len(self._bans) >= self.cap:
                return False
        self._bans[key] = ban
        return True

    def _make_room(self, wider: "BanTable | None", now: float) -> None:
        """Drop the expired bans, and those a ban of ``wider`` covers for as long."""
        def spent(ban: Ban) -> bool:
            if ban.until <= now:
                return True
            cover = wider.get(ban.wider, now) if wider is not None else None
            return cover is not None and cover.until >= ban.until
        for key in [k for k, b in self._bans.items() if spent(b)]:
            del self._bans[key]

    def items(self, now: float) -> list[tuple[str, Ban]]:
        return [(k, b) for k, b in self._bans.items() if b.until > now]


class Strikes:
    """Per network, the members banned there and until when (members: addresses, or networks of a wide
    network); at most ``max_groups`` networks, the least recently struck forgotten first."""

    def __init__(self, max_groups: int = MAX_STRIKES):
        self.max_groups = max_groups
        self._groups: OrderedDict[str, dict[str, float]] = OrderedDict()

    def add(self, group: str, member: str, until: float, now: float) -> dict[str, float]:
        """One more strike; the group's live strikes."""
        live = {m: u for m, u in self._groups.pop(group, {}).items() if u > now}
        live[member] = max(until, live.get(member, 0.0))
        self._groups[group] = live
        while len(self._groups) > self.max_groups:
            self._groups.popitem(last=False)
        return live

    def clear(self, group: str) -> None:
        self._groups.pop(group, None)


class Bans:
    def __init__(self, max_bans: int = MAX_BANS, max_prefix_bans: int = MAX_PREFIX_BANS,
                 max_wide_bans: int = MAX_WIDE_BANS):
        self.max_bans = max_bans
        self._addresses = BanTable(max_bans)          # peer keys and hosts
        self._networks = BanTable(max_prefix_bans)     # net:a.b.c.0/24, net:x:y:z::/48
        self._wide = BanTable(max_wide_bans)           # net:a.b.0.0/16, net:x:y::/32
        self._strikes = Strikes()                      # network -> banned addresses
        self._wide_strikes = Strikes()                 # wide network -> banned networks
        self._lock = threading.Lock()

    # -- banning ------------------------------------------------------------------------------------------
    def ban(self, who: str, reason: str, seconds: float = BAN_SECONDS, until: float | None = None) -> str | None:
        """Ban a peer URL or a client host (or a ``net:`` network, as the peer store reloads it); returns
        the key banned (None when ``who`` is none of them, or when no table had room for it)."""
        now = time.time()
        end = now + seconds if until is None else until
        if isinstance(who, str) and who.startswith("net:"):
            with self._lock:
                return who if self._ban_prefix(who, end, reason, now) else None
        key = ban_key(who)
        if key is None:
            return None
        network = network_prefix(who)
        with self._lock:
            if network is None or is_local_network(network):
                # a DNS name, or an operator's own machines: this address (or peer port) alone
                return key if self._ban_address(key, None, end, reason, now) else None
            host = ban_key(host_of(who))
            held = self._ban_address(key, network, end, reason, now)
            if host != key:                            # a peer URL bans its host (every port: one machine)
                held = self._ban_address(host, network, end, reason, now) or held
            held = self._strike(network, host, end, reason, now) or held
        return key if held else None

    def _ban_prefix(self, prefix: str, end: float, reason: str, now: float) -> bool:
        """A ``net:`` key from the peer store: a network or a wide network, by its length."""
        try:
            net = ipaddress.ip_network(prefix.removeprefix("net:"))
        except ValueError:
            return False
        if is_local_network(prefix):
            return False
        if net.prefixlen == (PREFIX_V4 if net.version == 4 else PREFIX_V6):
            return self._ban_network(prefix, end, reason, now)
        if net.prefixlen == (WIDE_V4 if net.version == 4 else WIDE_V6):
            return self._ban_wide(prefix, end, reason, now)
        return False

    def _ban_address(self, key: str, network: str | None, end: float, reason: str, now: float) -> bool:
        if self._addresses.put(key, Ban(end, reason, network), self._networks, now):
            return True
        if network is not None:               # the table is full of bans in force: ban the network instead
            return self._ban_network(network, end, f"the ban list is full (last: {reason})", now)
        log.warning("not banning %s (%s): %d address bans in force and it has no network to ban instead",
                    key, reason, len(self._addresses))
        return False

    def _strike(self, network: str, host: str, end: float, reason: str, now: float) -> bool:
        """A banned host outside local networks is one strike against its network."""
        strikes = self._strikes.add(network, host, end, now)
        if len(strikes) < PREFIX_STRIKES:
            return False
        self._strikes.clear(network)
        return self._ban_network(network, max(strikes.values()),
                                 f"{len(strikes)} addresses of the network banned (last: {reason})", now)

    def _ban_network(self, network: str, end: float, reason: str, now: float) -> bool:
        wide = wide_network(network)
        if not self._networks.put(network, Ban(end, reason, wide), self._wide, now):
            if wide is None:
                return False
            return self._ban_wide(wide, end, f"the network ban list is full (last: {reason})", now)
        if wide is not None:
            strikes = self._wide_strikes.add(wide, network, end, now)
            if len(strikes) >= WIDE_STRIKES:
                self._wide_strikes.clear(wide)
                self._ban_wide(wide, max(strikes.values()),
                               f"{len(strikes)} networks of it banned (last: {reason})", now)
        return True

    def _ban_wide(self, wide: str, end: float, reason: str, now: float) -> bool:
        if self._wide.put(wide, Ban(end, reason, None), None, now):
            return True
        log.warning("not banning %s (%s): %d wide-network bans in force", wide, reason, len(self._wide))
        return False

    # -- looking up ----------------------------------------------------------------------------------------
    def _entry(self, who: str) -> Ban | None:
        key = ban_key(who)
        if key is None:
            return None
        network = network_prefix(who)
        host = ban_key(host_of(who))
        wide = wide_network(network) if network is not None else None
        now = time.time()
        with self._lock:
            for table, k in ((self._addresses, key), (self._addresses, host), (self._networks, network),
                             (self._wide, wide)):
                ban = table.get(k, now)
                if ban is not None:
                    return ban
            return None

    def is_banned(self, who: str) -> bool:
        return self._entry(who) is not None

    def reason(self, who: str) -> str | None:
        b = self._entry(who)
        return b.reason if b else None

    def until(self, who: str) -> float | None:
        b = self._entry(who)
        return b.until if b else None

    def items(self) -> list[tuple[str, float, str]]:
        """Live bans: (key, until, reason)."""
        now = time.time()
        with self._lock:
            return [(k, b.until, b.reason) for table in (self._addresses, self._networks, self._wide)
                    for k, b in table.items(now)]

    def held(self) -> int:
        """Bans held, in force or not yet swept (never more than the three tables' caps together)."""
        with self._lock:
            return len(self._addresses) + len(self._networks) + len(self._wide)
