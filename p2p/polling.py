"""Polling: every ``poll_interval`` each usable peer's ``/status``, each peer in its own lane.

A node that only dials out still learns new tips this way, and a peer with more
work wakes the syncer. A poll that is still running (a peer that accepts and
never answers, until the client's 5 s deadline) delays only that peer's next
poll. A peer never reached, or whose backoff has just run out, is tried on the
next tick (so a late-starting peer is reached quickly). On first contact and
every ``EXCHANGE_EVERY`` rounds we introduce ourselves and exchange peer lists
(p2p/exchange.py). Each round also asks connected peers for the parents of held
orphans and saves the peer book when it changed (p2p/peerstore.py).
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Callable

from .client import PeerError
from .context import Ctx
from .exchange import Exchange
from .lanes import Lanes

log = logging.getLogger("polchain.p2p")

EXCHANGE_EVERY = 10
ORPHAN_PARENTS = 8


class Poller:
    def __init__(self, ctx: Ctx, exchange: Exchange, fetch_async: Callable[[str, list[str]], bool],
                 save: Callable[[], None]):
        self.ctx, self.exchange, self.fetch_async, self.save = ctx, exchange, fetch_async, save
        self.lanes = Lanes("poll", workers=min(64, ctx.cfg.max_peers + 4), max_pending=0)
        self._down: set[str] = set()    # peers logged unreachable (their next answer is logged too)
        self._down_lock = threading.Lock()
        self.thread = threading.Thread(target=self._run, name="poller", daemon=True)

    def stop(self) -> None:
        self.lanes.close()

    def _run(self) -> None:
        ctx = self.ctx
        tick = min(0.5, ctx.cfg.poll_interval)
        rounds, last_round = 0, 0.0
        while not ctx.stop.wait(0 if rounds == 0 else tick):
            now = time.time()
            full = now - last_round >= ctx.cfg.poll_interval
            if full:
                rounds, last_round = rounds + 1, now
            try:
                for p in ctx.book.usable():
                    if (full or p.failures or p.last_seen is None) and not self.lanes.busy(p.key):
                        self.lanes.submit(p.key, lambda url=p.url, r=(rounds if full else -1): self._poll(url, r))
                if full:
                    self._request_orphan_parents()
                    self.save()
            except Exception:
                if ctx.stop.is_set():
                    return
                log.exception("poll round failed")

    def _poll(self, url: str, rounds: int) -> None:
        ctx = self.ctx
        peer = ctx.book.get(url)
        if peer is None or ctx.stop.is_set():
            return
        first = peer.last_seen is None
        try:
            st = ctx.client.status(url)
            if st.get("chain_id") != ctx.spec.chain_id:
                ctx.book.ban(url, "other-chain", 3600)
                log.warning("peer %s runs another chain (%s); banned", url, str(st.get("chain_id"))[:16])
                return
            height, work, tip = int(st.get("height", 0)), int(st.get("cumulative_work", 0)), st.get("tip")
        except (PeerError, ValueError, TypeError) as exc:
            with self._down_lock:
                first_miss = url not in self._down
                self._down.add(url)
            if first_miss:               # once per outage, not once per retry
                log.warning("peer %s unreachable (%s); retrying with backoff", url, exc)
            else:
                log.debug("status of %s failed: %s", url, exc)
            ctx.book.failed(url)
            return
        with self._down_lock:
            was_down = url in self._down
            self._down.discard(url)
        if was_down:
            log.info("peer %s answers again (height %d)", url, height)
        ctx.book.ok(url, height, work, tip if isinstance(tip, str) else None)
        if first or rounds % EXCHANGE_EVERY == 0:
            self.exchange.exchange(url)
        if work > ctx.node.tip().work:
            ctx.request_sync(url, height)

    def _request_orphan_parents(self) -> None:
        peers = [p.url for p in self.ctx.book.connected()]
        if peers:
            for parent in self.ctx.node.missing_parents()[:ORPHAN_PARENTS]:
                self.fetch_async(parent, peers)
