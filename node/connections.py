"""The API's connection layer: who may hold a connection open, and how long it may take to send a request.

uvicorn alone counted open connections against ``limit_concurrency`` and timed out none that never sent a
request: 260 silent sockets made every client's request 503 (issue 30.1). Here the node accepts
connections itself (``Acceptor``, on the listening socket uvicorn would have served), judges each one
as it is accepted (``ConnectionGate``), and times it while its request comes in (``GatedH11Protocol``,
uvicorn's h11 protocol with deadlines); uvicorn runs the protocol and the app as before:

* **Trusted clients** (``--trusted-clients``, loopback by default) have a pool of their own
  (``ConnectionLimits.trusted``): strangers can never take their slots.
* **Everyone else** shares ``max_connections``, of which ``known_reserve`` (1/8) only **known senders**
  may use (node/admission.py ``Admission.lane``: ``--peer`` seeds' hosts, hosts that delivered a valid
  block). At most ``per_address`` connections per address, and at most ``per_network`` per network
  (IPv4 /24, IPv6 /48) of clients without a record here. Loopback and private networks are an
  operator's own machines (p2p/addresses.py ``is_local_network``): there each address is capped alone,
  unless ``cap_local_networks``.
* A connection over a cap is answered ``503 busy`` and closed at once by the accept loop, before
  anything is read or built for it (no transport, protocol or task: ~17 us of the loop, measured,
  against ~85 us refused from uvicorn's protocol); the loop accepts ``ACCEPT_BATCH`` connections per
  wake-up, so a burst of them interleaves with the requests of those already in.
* **Deadlines**: the first byte of a request within ``first_byte_s`` (5 s) of the connect, its headers
  within ``headers_s`` (10 s) of the connect (of the first byte, for a later request on a kept-alive
  connection), its body within ``request_s`` (30 s) of its headers. A connection past one is closed.
  An idle kept-alive connection is uvicorn's ``timeout_keep_alive`` (5 s).

The gate lives on the event loop (one thread): no lock. Its counters hold one entry per address and
network with a connection open, so they are bounded by the connections themselves (the cache of
networks by ``NETWORKS_CACHED``). docs/security.md, "The connection layer", says why this and not
another server.
"""
from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections import Counter
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Callable, Iterable

from uvicorn.protocols.http.h11_impl import H11Protocol

from p2p.addresses import is_local_network, network_prefix

log = logging.getLogger("polchain.connections")

FD_HEADROOM = 256          # files besides the API's connections: the store, weights, peers' connections, logs
REPORT_EVERY_S = 60.0
ACCEPT_BATCH = 32          # connections accepted per wake-up of the accept loop
NETWORKS_CACHED = 4096     # addresses whose network the gate remembers (then it starts again)
FULL_PAUSE_S = 1.0         # accepting pauses this long when the process is out of files (EMFILE)


@dataclass(frozen=True)
class ConnectionLimits:
    max_connections: int = 512       # clients not trusted, known ones included
    per_network: int = 64            # of clients without a record here, per /24 or /48
    per_address: int = 32            # per address, known or not
    trusted: int = 128               # trusted clients' own pool
    first_byte_s: float = 5.0
    headers_s: float = 10.0
    request_s: float = 30.0

    @property
    def known_reserve(self) -> int:
        """Slots of ``max_connections`` that only known senders may take."""
        return max(1, self.max_connections // 8)

    def files_needed(self) -> int:
        return self.max_connections + self.trusted + FD_HEADROOM


class Kind(StrEnum):
    TRUSTED = "trusted"
    KNOWN = "known"
    STRANGER = "stranger"


@dataclass(frozen=True)
class Slot:
    """One connection's place: who it is and what it counts against."""
    kind: Kind
    address: str
    network: str        # the /24 or /48, or the address itself on a local network (unless capped)


class ConnectionGate:
    """Which connections may stay open (see the module's docstring): ``slot_for`` a new connection, then
    ``refusal`` (None: take it) and ``take``; ``give_back`` when it closes."""

    def __init__(self, limits: ConnectionLimits, trusted: Iterable[str], is_known: Callable[[str], bool],
                 cap_local_networks: bool = False):
        self.limits = limits
        self.trusted = frozenset(trusted)
        self.is_known = is_known
        self.cap_local_networks = cap_local_networks
        self.open: Counter[Kind] = Counter()
        self.by_address: Counter[str] = Counter()
        self.by_network: Counter[str] = Counter()       # connections of strangers only
        self.refused: Counter[str] = Counter()          # since the last report: network -> connections
        self.expired: Counter[str] = Counter()          # since the last report: deadline -> connections
        self._networks: dict[str, str] = {}             # address -> network, at most NETWORKS_CACHED
        self._reported = time.monotonic()

    def slot_for(self, address: str | None) -> Slot:
        address = address or "unknown"
        if address in self.trusted:
            return Slot(Kind.TRUSTED, address, address)
        return Slot(Kind.KNOWN if self.is_known(address) else Kind.STRANGER, address, self._network_of(address))

    def _network_of(self, address: str) -> str:
        """What ``address`` is capped with: its /24 or /48 (``address`` itself on a local network, unless
        capped), cached: parsing it costs ~11 us, against ~17 us for the whole of a refused connection."""
        network = self._networks.get(address)
        if network is None:
            prefix = network_prefix(address)
            local = prefix is None or (is_local_network(prefix) and not self.cap_local_networks)
            network = address if local else prefix
            if len(self._networks) >= NETWORKS_CACHED:
                self._networks.clear()
            self._networks[address] = network
        return network

    def refusal(self, slot: Slot) -> str | None:
        """None to take ``slot``, else why not (one line)."""
        lim = self.limits
        if slot.kind == Kind.TRUSTED:
            return None if self.open[Kind.TRUSTED] < lim.trusted else \
                f"{lim.trusted} connections of trusted clients are open"
        if self.by_address[slot.address] >= lim.per_address:
            return f"{lim.per_address} connections from {slot.address} are open"
        if slot.kind == Kind.STRANGER and self.by_network[slot.network] >= lim.per_network:
            return f"{lim.per_network} connections from {slot.network} are open"
        untrusted = self.open[Kind.KNOWN] + self.open[Kind.STRANGER]
        room = lim.max_connections if slot.kind == Kind.KNOWN else lim.max_connections - lim.known_reserve
        if untrusted >= room:
            return f"{untrusted} connections are open; the rest are kept for known senders" \
                if slot.kind == Kind.STRANGER else f"{untrusted} connections are open"
        return None

    def take(self, slot: Slot) -> None:
        self.open[slot.kind] += 1
        if slot.kind == Kind.TRUSTED:
            return
        self.by_address[slot.address] += 1
        if slot.kind == Kind.STRANGER:
            self.by_network[slot.network] += 1

    def give_back(self, slot: Slot) -> None:
        self.open[slot.kind] -= 1
        if slot.kind == Kind.TRUSTED:
            return
        _decrement(self.by_address, slot.address)
        if slot.kind == Kind.STRANGER:
            _decrement(self.by_network, slot.network)

    def note_refused(self, slot: Slot) -> None:
        self.refused[slot.network] += 1
        self._report()

    def note_expired(self, deadline: str) -> None:
        self.expired[deadline] += 1
        self._report()

    def _report(self) -> None:
        """At most one log line a minute: what was refused and closed since the last one."""
        now = time.monotonic()
        if now - self._reported < REPORT_EVERY_S:
            return
        self._reported = now
        parts = []
        if self.refused:
            worst, n = self.refused.most_common(1)[0]
            parts.append(f"refused {sum(self.refused.values())} over the caps ({n} from {worst})")
        if self.expired:
            parts.append("closed " + ", ".join(f"{n} with {what}" for what, n in self.expired.most_common()))
        if parts:
            log.warning("connections in the last %.0f s: %s; open now: %s", REPORT_EVERY_S, "; ".join(parts),
                        ", ".join(f"{n} {k}" for k, n in sorted(self.open.items()) if n) or "none")
        self.refused.clear()
        self.expired.clear()


def _decrement(counter: Counter, key: str) -> None:
    counter[key] -= 1
    if counter[key] <= 0:
        del counter[key]


def busy_response(reason: str) -> bytes:
    body = ('{"error":"busy","detail":"too many connections: ' + reason.replace('"', "'") + '"}').encode()
    return (b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: 1\r\n"
            b"connection: close\r\ncontent-length: " + str(len(body)).encode() + b"\r\n\r\n" + body)


class GatedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol for a connection the ``Acceptor`` let in (its ``slot``, given back when the
    connection closes), with the request deadlines.

    One deadline at a time: ``first byte`` from the connect, ``headers`` once bytes came (at the connect's
    ``headers_s`` for the first request, the first byte's for a later one), ``body`` once the headers are
    in (uvicorn made a new request cycle), none once the body is in (the app's answer and the keep-alive
    wait are uvicorn's)."""

    def __init__(self, *args, gate: ConnectionGate, slot: Slot, **kwargs):
        super().__init__(*args, **kwargs)
        self.gate = gate
        self.slot = slot
        self.owns_slot = False               # from connection_made on: connection_lost gives it back
        self.deadline: asyncio.TimerHandle | None = None
        self.waiting_for = ""                # what the deadline waits for: first byte, headers, body
        self.headers_by = 0.0                # loop time by which the first request's headers must be in
        self.cycle_seen = None               # the request cycle whose headers were seen last

    def connection_made(self, transport: asyncio.Transport) -> None:
        self.owns_slot = True
        super().connection_made(transport)
        self.headers_by = self.loop.time() + self.gate.limits.headers_s
        self._arm("first byte", self.gate.limits.first_byte_s)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        if self.owns_slot:
            self.owns_slot = False
            self.gate.give_back(self.slot)
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self.waiting_for == "first byte":
            self._arm("headers", self.headers_by - self.loop.time())
        elif self.deadline is None and (self.cycle is None or self.cycle.response_complete):
            self._arm("headers", self.gate.limits.headers_s)          # a later request on this connection
        super().data_received(data)
        if self.cycle is not None and self.cycle is not self.cycle_seen:   # a new request's headers are in
            self.cycle_seen = self.cycle
            self._arm("body", self.gate.limits.request_s)
        if self.waiting_for == "body" and not self.cycle.more_body:
            self._disarm()

    def _arm(self, what: str, seconds: float) -> None:
        self._disarm()
        self.waiting_for = what
        self.deadline = self.loop.call_later(max(0.0, seconds), self._expire)

    def _disarm(self) -> None:
        if self.deadline is not None:
            self.deadline.cancel()
        self.deadline, self.waiting_for = None, ""

    def _expire(self) -> None:
        self.gate.note_expired(f"no {self.waiting_for} in time")
        self.deadline, self.waiting_for = None, ""
        if not self.transport.is_closing():
            self.transport.close()


class Acceptor:
    """The API's accept loop on ``sock`` (bound, not yet listening): each connection is given a slot by the
    ``gate`` or refused at once (``busy_response``, close); a connection let in is handed to
    ``make_protocol(slot)`` through ``loop.connect_accepted_socket``. ``start`` on the running loop,
    ``stop`` before the socket is closed."""

    def __init__(self, sock: socket.socket, gate: ConnectionGate, make_protocol: Callable[[Slot], asyncio.Protocol],
                 backlog: int = 2048):
        self.sock, self.gate, self.make_protocol, self.backlog = sock, gate, make_protocol, backlog
        self.loop: asyncio.AbstractEventLoop | None = None
        self._paused: asyncio.TimerHandle | None = None
        self._full_logged = 0.0

    def start(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.sock.listen(self.backlog)
        self.sock.setblocking(False)
        self.loop.add_reader(self.sock.fileno(), self._on_readable)

    def stop(self) -> None:
        if self.loop is None:
            return
        if self._paused is not None:
            self._paused.cancel()
        self.loop.remove_reader(self.sock.fileno())
        self.loop = None

    def _on_readable(self) -> None:
        for _ in range(ACCEPT_BATCH):
            try:
                conn, addr = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except ConnectionAbortedError:
                continue
            except OSError as exc:          # EMFILE, ENFILE, ENOBUFS: try again in a second
                self._pause(exc)
                return
            self._admit(conn, addr)

    def _admit(self, conn: socket.socket, addr) -> None:
        slot = self.gate.slot_for(addr[0] if isinstance(addr, tuple) and addr else None)
        reason = self.gate.refusal(slot)
        if reason is not None:
            self.gate.note_refused(slot)
            try:
                conn.send(busy_response(reason), socket.MSG_DONTWAIT)
            except OSError:
                pass
            conn.close()
            return
        self.gate.take(slot)
        made: list[GatedH11Protocol] = []

        def protocol() -> asyncio.Protocol:
            made.append(self.make_protocol(slot))
            return made[0]

        def connected(task: asyncio.Task) -> None:
            # the protocol owns the slot once its connection_made ran; before that a failure is ours
            if (task.cancelled() or task.exception() is not None) and not (made and made[0].owns_slot):
                self.gate.give_back(slot)
                conn.close()

        conn.setblocking(False)
        self.loop.create_task(self.loop.connect_accepted_socket(protocol, conn)).add_done_callback(connected)

    def _pause(self, exc: OSError) -> None:
        now = time.monotonic()
        if now - self._full_logged >= REPORT_EVERY_S:
            self._full_logged = now
            log.error("cannot accept API connections (%s): pausing %.0f s (open files: ulimit -n)",
                      exc.strerror or exc, FULL_PAUSE_S)
        self.loop.remove_reader(self.sock.fileno())
        self._paused = self.loop.call_later(FULL_PAUSE_S, self._resume)

    def _resume(self) -> None:
        self._paused = None
        if self.loop is not None:
            self.loop.add_reader(self.sock.fileno(), self._on_readable)


def raise_file_limit(want: int) -> int:
    """Raise the soft limit on open files towards ``want`` (never past the hard limit); the soft limit now."""
    try:
        import resource
    except ImportError:          # pragma: no cover - not POSIX: nothing to raise
        return want
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= want:
        return want if soft == resource.RLIM_INFINITY else soft
    target = want if hard == resource.RLIM_INFINITY else min(want, hard)
    if target <= soft:
        return soft
    resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return target


def fit_to_files(limits: ConnectionLimits, files: int) -> ConnectionLimits:
    """``limits`` with the trusted pool, then ``max_connections``, cut to what ``files`` open files allow."""
    if limits.files_needed() <= files:
        return limits
    trusted = max(8, min(limits.trusted, (files - FD_HEADROOM) // 4))
    most = max(16, files - FD_HEADROOM - trusted)
    return replace(limits, max_connections=min(limits.max_connections, most), trusted=trusted)
