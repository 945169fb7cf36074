"""Admission control for the write endpoints: bans, per-client token buckets, a bounded validation queue.

* Every API client (by host, as the server saw the connection) has one token
  bucket per kind of write: ``blocks`` (POST /blocks: full blocks, headers and
  announcements), ``certificates`` and ``peers``. A request without a token is
  answered 429 ``rate-limited`` with ``Retry-After`` before its body is read.
  At most ``MAX_CLIENTS`` buckets are kept (least recently used out first).
* A banned client (it sent a provably invalid block) gets 403 ``banned``.
* Trusted clients (``Settings.trusted_clients``, loopback by default: the
  operator's own tools and miners) are neither rate-limited nor banned. A node
  behind a reverse proxy on the same host sees every client as the proxy's
  address: list nothing as trusted there.
* ``BoundedQueue``: at most ``limit`` blocks wait for the validator thread; the
  next one is answered 503 ``busy`` at once instead of queueing without bound.
"""
from __future__ import annotations

import threading
import time
from collections import OrderedDict
from concurrent.futures import Executor, Future
from typing import Callable

MAX_CLIENTS = 4096
KIND_SHARE = {"blocks": 1.0, "certificates": 0.5, "peers": 0.1}   # of the configured rate and burst


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
                 banned_until: Callable[[str], float | None]):
        self.trusted = frozenset(trusted)
        self.banned_until = banned_until
        self.buckets = {kind: TokenBuckets(rate * share, max(1.0, burst * share))
                        for kind, share in KIND_SHARE.items()}

    def refuse(self, client: str, kind: str) -> tuple[int, str, str, float] | None:
        """None to let ``client`` in, else (HTTP status, error code, detail, retry after seconds)."""
        if client in self.trusted:
            return None
        until = self.banned_until(client)
        if until is not None:
            return 403, "banned", f"{client} is banned for sending an invalid block", max(1.0, until - time.time())
        wait = self.buckets[kind].take(client)
        if wait > 0:
            return 429, "rate-limited", f"too many {kind} requests from {client}; retry in {wait:.1f}s", wait
        return None

    def may_ban(self, client: str | None) -> bool:
        return bool(client) and client not in self.trusted


class BoundedQueue:
    """An executor front that refuses work (returns None) once ``limit`` tasks are queued or running."""

    def __init__(self, executor: Executor, limit: int):
        self.executor, self.limit = executor, limit
        self._n = 0
        self._lock = threading.Lock()

    @property
    def depth(self) -> int:
        return self._n

    def try_submit(self, fn: Callable, *args, **kw) -> Future | None:
        with self._lock:
            if self._n >= self.limit:
                return None
            self._n += 1
        try:
            fut = self.executor.submit(fn, *args, **kw)
        except RuntimeError:
            self._done(None)
            return None
        fut.add_done_callback(self._done)
        return fut

    def _done(self, _fut) -> None:
        with self._lock:
            self._n -= 1
