"""New peers: the handshake every entry passes before it is in the book, and peer exchange.

Anyone can name a URL (POST /peers, an announcement's origin, a peer's list), so
a named URL is only a *candidate*: it joins the book once its ``GET /status``
answers, within ``handshake_timeout``, with our chain id. Candidates are keyed by
``scheme://host:port`` (50 paths on one host are one candidate), at most
``MAX_CANDIDATES`` wait, ``WORKERS`` handshakes run at once, and a candidate that
failed is not tried again for ``RETRY_FIRST`` seconds, twice as long after each
further failure up to ``RETRY_MAX`` (a peer that introduced itself before its API
was listening, or was busy, gets another chance soon; a dead or foreign URL is
dialled about a dozen times in its first hour, then twice an hour), so junk can
neither fill the book nor make the node dial it over and over. Peer exchange reads only the
entries a peer lists as ``connected`` and passes them through the same handshake,
so unverified entries do not spread.
"""
from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor

from .addresses import peer_url
from .client import PeerError
from .context import Ctx

log = logging.getLogger("polchain.p2p")

MAX_CANDIDATES = 64
WORKERS = 4
RETRY_FIRST = 5.0
RETRY_MAX = 1800.0
MAX_FAILED = 4096
MAX_LEARN = 64          # entries read from one peer's list


class Exchange:
    def __init__(self, ctx: Ctx):
        self.ctx = ctx
        self.pool = ThreadPoolExecutor(max_workers=WORKERS, thread_name_prefix="handshake")
        self._pending: set[str] = set()
        self._failed: OrderedDict[str, tuple[float, float]] = OrderedDict()   # key -> (not before, delay)
        self._lock = threading.Lock()

    def stop(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)

    def propose(self, url, source: str) -> str:
        """Offer a URL: known | queued | refused (malformed, us, banned, failed lately, or too many waiting)."""
        p = peer_url(url)
        book = self.ctx.book
        if p is None or p[0] == book.own_key or book.is_banned(p[0]):
            return "refused"
        key, url = p
        if book.get(key) is not None:
            return "known"
        now = time.time()
        with self._lock:
            if self._failed.get(key, (0.0, 0.0))[0] > now:
                return "refused"
            if key in self._pending:
                return "queued"
            if len(self._pending) >= MAX_CANDIDATES:
                return "refused"
            self._pending.add(key)
        try:
            self.pool.submit(self._handshake, key, url, source)
        except RuntimeError:
            with self._lock:
                self._pending.discard(key)
            return "refused"
        return "queued"

    def _handshake(self, key: str, url: str, source: str) -> None:
        ctx = self.ctx
        try:
            st = ctx.client.status(url, timeout=ctx.cfg.handshake_timeout)
            if st.get("chain_id") != ctx.spec.chain_id:
                raise PeerError(f"another chain ({str(st.get('chain_id'))[:16]})")
            height, work, tip = int(st.get("height", 0)), int(st.get("cumulative_work", 0)), st.get("tip")
        except (PeerError, ValueError, TypeError) as exc:
            log.debug("handshake with %s failed: %s", url, exc)
            self._forget(key, failed=True)
            return
        added = ctx.book.add(url, source, height=height, work=work, tip=tip if isinstance(tip, str) else None)
        self._forget(key, failed=False)
        if added:
            log.info("peer %s added (%s, height %d)", url, source, height)
            if work > ctx.node.tip().work:
                ctx.request_sync(url, height)

    def _forget(self, key: str, failed: bool) -> None:
        with self._lock:
            self._pending.discard(key)
            if not failed:
                self._failed.pop(key, None)
                return
            delay = min(RETRY_MAX, 2 * self._failed.get(key, (0.0, RETRY_FIRST / 2))[1])
            self._failed[key] = (time.time() + delay, delay)
            self._failed.move_to_end(key)
            while len(self._failed) > MAX_FAILED:
                self._failed.popitem(last=False)

    def exchange(self, url: str) -> None:
        """Introduce ourselves to ``url`` and, with discovery on, offer its connected peers to the handshake."""
        try:
            self.ctx.client.introduce(url, self.ctx.my_url)
            if not self.ctx.cfg.discover:
                return
            for info in self.ctx.client.peers(url)[:MAX_LEARN]:
                if isinstance(info, dict) and info.get("state") == "connected":
                    self.propose(info.get("url"), "learned")
        except PeerError as exc:
            log.debug("peer exchange with %s failed: %s", url, exc)
