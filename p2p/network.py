"""Gossip and sync over HTTP: the network as the node sees it.

The parts, each in its own module:

* p2p/relay.py     announce new blocks; fetch announced ones (origins must be known peers)
* p2p/polling.py   poll each peer's /status in its own lane; wake the syncer
* p2p/exchange.py  the handshake every new peer passes; peer exchange
* p2p/sync.py      headers-first sync; p2p/bodies.py the body window and assume-valid
* p2p/fetch.py     the one place a body is downloaded and checked against its header
* p2p/peers.py     the peer book (slots, backoff, eviction), p2p/bans.py, p2p/peerstore.py (on disk)

The node is reached only through ``NodeLink`` (p2p/node_link.py). Misbehaviour:
a provably invalid block or header bans the peer (or API client) that served it
for a while; ignore-type outcomes cost nothing; a body not matching its header is
a failure of the peer that served it, never held against the header.
"""
from __future__ import annotations

import logging

from consensus.block import BlockHeader

from . import peerstore
from .client import PeerClient
from .context import Ctx
from .exchange import Exchange
from .fetch import NoBody  # noqa: F401  (re-exported)
from .node_link import NetConfig, NodeLink
from .peers import PeerBook
from .polling import Poller
from .relay import Relay
from .sync import Syncer

log = logging.getLogger("polchain.p2p")
logging.getLogger("httpx").setLevel(logging.WARNING)  # one INFO line per request otherwise


class Network:
    def __init__(self, node: NodeLink, cfg: NetConfig):
        book = PeerBook(cfg.url, cfg.max_peers)
        for url in cfg.peers:
            if not book.add(url, source="configured"):
                log.warning("ignoring peer %r (malformed, ourselves, or a duplicate)", url)
        if cfg.datadir is not None:
            n = peerstore.load(book, cfg.datadir)
            if n:
                log.info("peer book: %d peers from %s", n, cfg.datadir / peerstore.FILE)
        self.ctx = Ctx(node, cfg, book, PeerClient())
        self.exchange = Exchange(self.ctx)
        self.relay = Relay(self.ctx, self.exchange.propose)
        self.syncer = Syncer(self.ctx, self.relay.announce)
        self.poller = Poller(self.ctx, self.exchange, self.relay.fetch_async, self.save)
        self._threads = [self.relay.thread, self.poller.thread, self.syncer.thread]

    @property
    def book(self) -> PeerBook:
        return self.ctx.book

    @property
    def client(self) -> PeerClient:
        return self.ctx.client

    @client.setter
    def client(self, client: PeerClient) -> None:
        self.ctx.client = client

    # -- life cycle ---------------------------------------------------------------
    def start(self) -> None:
        if self.syncer.bodies.assume_valid:
            log.warning("assume-valid %s: blocks up to it are accepted on header checks alone, "
                        "without replaying their proofs", self.syncer.bodies.assume_valid[:16])
        for t in self._threads:
            t.start()

    def stop(self) -> None:
        self.ctx.stop.set()
        for part in (self.relay, self.poller, self.syncer, self.exchange):
            part.stop()
        for t in self._threads:
            if t.is_alive():
                t.join(timeout=5)
        self.save()
        self.ctx.client.close()

    def save(self) -> None:
        """Write the peer book to the datadir when it changed."""
        if self.ctx.cfg.datadir is None or not self.book.changed.is_set():
            return
        self.book.changed.clear()
        try:
            peerstore.save(self.book, self.ctx.cfg.datadir)
        except OSError as exc:
            log.warning("could not save the peer book: %s", exc)
            self.book.changed.set()

    # -- queries ----------------------------------------------------------------------
    def peer_count(self) -> int:
        return len(self.book.connected())

    def peer_list(self) -> list[dict]:
        return self.book.snapshot()

    def syncing(self) -> bool:
        return self.syncer.syncing

    def behind(self) -> str | None:
        """A peer that claims more work than our tip (Syncer.behind): sync first, mine later."""
        return self.syncer.behind()

    def sync_now(self) -> None:
        """Sync at once, whatever the peers' backoff (the store writes again)."""
        self.syncer.reset_backoff()

    @property
    def sync_progress(self) -> dict:
        return self.syncer.progress

    # -- from the node and its API ---------------------------------------------------------
    def learn_peer(self, url: str) -> str:
        """A peer introduced itself (POST /peers): known | queued (for the handshake) | refused."""
        return self.exchange.propose(url, "introduced")

    def penalize(self, peer: str, code: str) -> None:
        self.ctx.penalize(peer, code)

    def is_banned(self, who: str) -> bool:
        return self.book.is_banned(who)

    def announce(self, header: BlockHeader, exclude: str | None = None) -> None:
        self.relay.announce(header, exclude)

    def relay_record(self, record) -> None:
        self.relay.relay_record(record.body)

    def on_announcement(self, header: BlockHeader, origin: str) -> bool:
        return self.relay.on_announcement(header, origin)

    def sync_from(self, peer: str, target: int) -> int:
        return self.syncer.sync_from(peer, target)
