"""Admission control for the write endpoints: bans, per-client token buckets, a bounded validation queue.

* Every API client (by host as the server saw the connection; by network, IPv4
  /24 or IPv6 /48, outside local networks) has one token bucket per kind of write: ``blocks`` (POST /blocks: full blocks, headers and
  announcements), ``certificates`` and ``peers``. A request without a token is
  answered 429 ``rate-limited`` with ``Retry-After`` before its body is read.
  At most ``MAX_CLIENTS`` buckets are kept (least recently used out first).
* A banned client (it sent a provably invalid block) gets 403 ``banned``.
* Trusted clients (``Settings.trusted_clients``, loopback by default: the
  operator's own tools and miners) are neither rate-limited nor banned. A node
  behind a reverse proxy on the same host sees every client as the proxy's
  address: list nothing as trusted there.
* Known senders are earned, never handshaken: trusted clients, the hosts of ``--peer`` seeds
  (configuration), and hosts that delivered a valid block here (``vouch``; a ban takes it back,
  ``unvouch``). A connected peer is a peer, not a known sender: a handshake costs a port.
* ``LaneQueue``: every block from outside, POSTed or fetched by the relay, waits here for the one
  validator thread. At most ``limit`` blocks wait (the next one is answered 503 ``busy`` at once
  instead of queueing without bound); senders without a record here wait in a small lane of their
  own, one block per network at a time, behind the known ones, the network served longest ago
  first (a newcomer takes the place of a waiting block of a network served more recently). A
  stranger's replay gives way, between two steps, to a known block queued meanwhile that will be
  judged now (its parent is valid here: not an orphan, not a duplicate); its ``should_stop`` is
  ``known_waiting``.
"""
from __future__ import annotations

import heapq
import itertools
import threading
import time
from collections import OrderedDict
from concurrent.futures import Future
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Callable, Iterable

from p2p.addresses import host_of, is_local_network, network_prefix
from p2p.punishment import Sender

MAX_CLIENTS = 4096
KIND_SHARE = {"blocks": 1.0, "certificates": 0.5, "peers": 0.1}   # of the configured rate and burst


class Lane(StrEnum):
    """Which validation lane a block waits in (``LaneQueue``)."""
    KNOWN = "known"          # this node, trusted clients, --peer seeds' hosts, hosts that delivered a valid block
    STRANGER = "stranger"    # everyone else: a small lane, one block per network at a time


class TokenBuckets:
    def __init__(self, rate: float, burst: float, max_clients: int = MAX_CLIENTS):
        self.rate, self.burst, self.max_clients = rate, burst, max_clients
        self._b: OrderedDict[str, tuple[float, float]] = OrderedDict()   # client -> (tokens, at)
        self._lock = threading.Lock()

    def take(self, client: str) -> float:
        """0.0 when a token was taken, else the seconds until one will be there."""
        now = time.monotonic()
        with self._lock:
            tokens, at = self._b.pop(client, (self.burst, now))
            tokens = min(self.burst, tokens + (now - at) * self.rate)
            wait = 0.0
            if tokens >= 1.0:
                tokens -= 1.0
            else:
                wait = (1.0 - tokens) / self.rate if self.rate > 0 else 3600.0
            self._b[client] = (tokens, now)
            while len(self._b) > self.max_clients:
                self._b.popitem(last=False)
            return wait


class Admission:
    def __init__(self, rate: float, burst: float, trusted: tuple[str, ...] | list[str],
                 banned_until: Callable[[str], float | None], configured: Iterable[str] = ()):
        self.trusted = frozenset(trusted)
        self.configured = frozenset(h for h in map(host_of, configured) if h)   # hosts of --peer seeds
        self.banned_until = banned_until
        self.buckets = {kind: TokenBuckets(rate * share, max(1.0, burst * share))
                        for kind, share in KIND_SHARE.items()}
        self.vouched: OrderedDict[str, float] = OrderedDict()   # hosts that delivered a valid block
        self._vouched_lock = threading.Lock()

    def refuse(self, client: str, kind: str) -> tuple[int, str, str, float] | None:
        """None to let ``client`` in, else (HTTP status, error code, detail, retry after seconds)."""
        if client in self.trusted:
            return None
        until = self.banned_until(client)
        if until is not None:
            return 403, "banned", f"{client} is banned for sending an invalid block", max(1.0, until - time.time())
        wait = self.buckets[kind].take(_quota_key(client))
        if wait > 0:
            return 429, "rate-limited", f"too many {kind} requests from {client}; retry in {wait:.1f}s", wait
        return None

    def sender(self, client: str | None) -> Sender:
        """Who ``client`` is for punishment (p2p/punishment.py): this node (None), trusted, or remote."""
        if not client:
            return Sender.OWN
        return Sender.TRUSTED if client in self.trusted else Sender.REMOTE

    def vouch(self, client: str | None) -> None:
        """``client`` (an API client's host or a peer URL) delivered a valid block: a known sender."""
        host = host_of(client)
        if host:
            with self._vouched_lock:
                self.vouched[host] = time.time()
                self.vouched.move_to_end(host)
                while len(self.vouched) > MAX_CLIENTS:
                    self.vouched.popitem(last=False)

    def unvouch(self, client: str | None) -> None:
        """``client`` was banned for an invalid block: its record here is gone (another valid block earns it)."""
        host = host_of(client)
        if host:
            with self._vouched_lock:
                self.vouched.pop(host, None)

    def lane(self, client: str | None) -> Lane:
        """``known`` for this node (None), trusted clients, the hosts of ``--peer`` seeds and hosts with a
        valid block here; else ``stranger``. A handshake makes a peer, not a known sender."""
        if not client:
            return Lane.KNOWN
        host = host_of(client)
        known = host in self.trusted or host in self.configured or host in self.vouched
        return Lane.KNOWN if known else Lane.STRANGER


def _quota_key(client: str) -> str:
    """Rate limits count per network (IPv4 /24, IPv6 /48) outside local networks: 2^64 addresses of
    one /64 are one quota, not 2^64."""
    prefix = network_prefix(client)
    return prefix if prefix is not None and not is_local_network(prefix) else client


class GaveWay(Exception):
    """A stranger's block waiting in the ``LaneQueue`` gave its place to a block of a network served longer
    ago; it was not judged: send it again."""


@dataclass(order=True)
class _Job:
    rank: tuple[int, int, int]          # (0 known | 1 stranger, when its network was last served, arrival)
    fut: Future = field(compare=False)
    fn: Callable = field(compare=False)
    args: tuple = field(compare=False)
    lane: Lane = field(compare=False)
    prefix: str | None = field(compare=False)
    preempts: bool = field(compare=False)     # a known block that will be judged now: strangers give way


NEVER_SERVED = -1


class LaneQueue:
    """The validator for blocks from outside (the API and the relay): one thread, two lanes, a bounded queue.

    A junk block (valid signature, random nonces) costs its sender one signature and this node a
    replay, so senders are not served alike (issue 19). ``known`` senders -- this node, trusted
    clients, ``--peer`` seeds, hosts that delivered a valid block -- are validated first; ``stranger``
    ones share a small lane of ``stranger_limit`` blocks queued or running, at most ``per_prefix`` of
    them from one network (IPv4 /24, IPv6 /48). A flood from many addresses of one network thus costs
    the node one replay at a time, the honest block of a known sender jumps the queue, and everything
    past a bound is answered 503 ``busy`` at once (``try_submit`` returns None).

    Strangers are served by network, the one served longest ago first (a network never served first of
    all), and when their lane is full a newcomer takes the place of the waiting block whose network was
    served most recently, if that was more recently than its own (that block's future raises
    ``GaveWay``): a flood from many addresses of a few networks cannot crowd out a new network (issue 30.3).

    A stranger's job may poll ``known_waiting`` and stop early (the replays do, between two steps:
    ``Chain.submit(should_stop=...)``), so a known block waits one step, not a whole replay. Only a known
    block queued with ``preempts`` counts: one that will be judged now (its parent is valid here), not an
    orphan or a duplicate, which cost a lookup and would make a replay give way for nothing.
    """

    def __init__(self, limit: int, stranger_limit: int | None = None, per_prefix: int = 1,
                 max_networks: int = MAX_CLIENTS):
        self.limit = limit
        self.stranger_limit = stranger_limit if stranger_limit is not None else max(1, limit // 4)
        self.per_prefix = per_prefix
        self.max_networks = max_networks
        self._heap: list[_Job] = []
        self._seq = itertools.count()
        self._serial = itertools.count()
        self._served: OrderedDict[str, int] = OrderedDict()    # network -> serial of its last block served
        self._cv = threading.Condition()
        self._n = self._strangers = 0
        self._known_waiting = 0         # known-lane blocks queued with ``preempts``, not yet running
        self._by_prefix: dict[str, int] = {}
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name="validator-lanes", daemon=True)
        self._thread.start()

    @property
    def depth(self) -> int:
        return self._n

    def known_waiting(self) -> bool:
        """Whether a known sender's block that will be judged now waits in the queue (read without the
        lock: a stale answer costs one step at most)."""
        return self._known_waiting > 0

    def refusal(self, lane: Lane, prefix: str | None) -> str | None:
        """Why a block in ``lane`` from ``prefix`` would be refused now (None: it would be queued)."""
        with self._cv:
            return self._refusal(lane, prefix)

    def _refusal(self, lane: Lane, prefix: str | None) -> str | None:
        if self._stopped:
            return "the node is stopping"
        if self._n >= self.limit:
            return f"{self.limit} blocks are waiting for validation"
        if lane == Lane.STRANGER:
            if prefix is not None and self._by_prefix.get(prefix, 0) >= self.per_prefix:
                return f"one block at a time per network from senders without a record ({prefix})"
            if self._strangers >= self.stranger_limit and self._displaceable(prefix) is None:
                return (f"the lane for senders without a record here is full ({self.stranger_limit} blocks); "
                        "known peers go first")
        return None

    def _last_served(self, prefix: str | None) -> int:
        return self._served.get(prefix, NEVER_SERVED) if prefix is not None else NEVER_SERVED

    def _displaceable(self, prefix: str | None) -> _Job | None:
        """The waiting stranger block whose network was served most recently, if more recently than
        ``prefix``'s (None: no block gives way to it)."""
        waiting = [j for j in self._heap if j.lane == Lane.STRANGER]
        if not waiting:
            return None
        victim = max(waiting, key=lambda j: (self._last_served(j.prefix), j.rank))
        return victim if self._last_served(victim.prefix) > self._last_served(prefix) else None

    def _displace(self, victim: _Job) -> None:
        self._heap.remove(victim)
        heapq.heapify(self._heap)
        self._release(victim)
        victim.fut.set_exception(GaveWay(f"gave way to a block of a network served longer ago than {victim.prefix}; "
                                         "send it again"))

    def try_submit(self, fn: Callable, *args, lane: Lane = Lane.KNOWN, prefix: str | None = None,
                   preempts: bool = False) -> Future | None:
        """Queue ``fn(*args)`` in ``lane`` for network ``prefix``; None when refused. ``preempts``: a known
        block that will be judged now (a stranger's replay in progress gives way to it)."""
        fut: Future = Future()
        with self._cv:
            if self._refusal(lane, prefix) is not None:
                return None
            if lane == Lane.STRANGER and self._strangers >= self.stranger_limit:
                self._displace(self._displaceable(prefix))
            rank = (0, 0, next(self._seq)) if lane == Lane.KNOWN else (1, self._last_served(prefix), next(self._seq))
            job = _Job(rank, fut, fn, args, lane, prefix, preempts and lane == Lane.KNOWN)
            self._n += 1
            if lane == Lane.STRANGER:
                self._strangers += 1
                if prefix is not None:
                    self._by_prefix[prefix] = self._by_prefix.get(prefix, 0) + 1
            if job.preempts:
                self._known_waiting += 1
            heapq.heappush(self._heap, job)
            self._cv.notify()
        return fut

    def _release(self, job: _Job) -> None:
        self._n -= 1
        if job.lane == Lane.STRANGER:
            self._strangers -= 1
            if job.prefix is not None:
                left = self._by_prefix.get(job.prefix, 1) - 1
                if left > 0:
                    self._by_prefix[job.prefix] = left
                else:
                    self._by_prefix.pop(job.prefix, None)

    def _started(self, job: _Job) -> None:
        """Under the lock: ``job`` leaves the heap for the validator."""
        if job.preempts:
            self._known_waiting -= 1
        if job.lane == Lane.STRANGER and job.prefix is not None:
            self._served[job.prefix] = next(self._serial)
            self._served.move_to_end(job.prefix)
            while len(self._served) > self.max_networks:
                self._served.popitem(last=False)

    def _run(self) -> None:
        while True:
            with self._cv:
                while not self._heap and not self._stopped:
                    self._cv.wait()
                if not self._heap:
                    return
                job = heapq.heappop(self._heap)
                self._started(job)
            try:
                if job.fut.set_running_or_notify_cancel():
                    try:
                        job.fut.set_result(job.fn(*job.args))
                    except BaseException as exc:  # noqa: BLE001 - handed to the waiting request
                        job.fut.set_exception(exc)
            finally:
                with self._cv:
                    self._release(job)

    def shutdown(self, timeout: float = 30.0) -> None:
        """Cancel what waits, finish what runs."""
        with self._cv:
            self._stopped = True
            for job in self._heap:
                job.fut.cancel()
                self._release(job)
            self._heap.clear()
            self._known_waiting = 0
            self._cv.notify_all()
        self._thread.join(timeout=timeout)
