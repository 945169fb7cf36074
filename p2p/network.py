"""Gossip and sync over HTTP.

* Announce: a node that accepts a block POSTs its header to every peer with
  ``X-Polchain-Origin``; a peer lacking it fetches records and weights from
  the origin, validates, and relays only what validated. Duplicates cost a
  status lookup.
* Poll: every few seconds each peer's ``/status``; a node that only dials out
  (NAT) still learns new tips this way. Peer lists are exchanged (bounded).
* Sync, headers first: from a peer with more work, fetch headers in batches,
  check the header chain (linkage, signatures, difficulty, timestamps, work)
  and store them as header-only, then fetch bodies from several peers in
  parallel within a bounded window and validate them in order.
* Misbehaviour: a provably invalid block or header bans its sender for a
  while; ignore-type outcomes and bad bodies carry no ban.
"""
from __future__ import annotations

import logging
import queue
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from consensus import errors
from consensus.block import BlockHeader

from .client import PeerClient, PeerError
from .peers import PeerBook

log = logging.getLogger("polchain.p2p")

HEADER_BATCH = 200
BODY_WINDOW = 8


class Network:
    def __init__(self, service):
        self.service = service
        s = service.settings
        self.my_url = s.url
        self.book = PeerBook(self.my_url, s.max_peers)
        for url in s.peers:
            self.book.add(url)
        self.client = PeerClient()
        self.poll_interval = s.poll_interval
        self._stop = threading.Event()
        self._announce_q: queue.Queue = queue.Queue(maxsize=1000)
        self._fetchers = ThreadPoolExecutor(max_workers=4, thread_name_prefix="fetch")
        self._inflight: set[str] = set()
        self._inflight_lock = threading.Lock()
        self._sync_lock = threading.Lock()
        self._syncing = False
        self._threads = [threading.Thread(target=self._announcer, name="announcer", daemon=True),
                         threading.Thread(target=self._poller, name="poller", daemon=True)]

    # -- life cycle ---------------------------------------------------------------
    def start(self) -> None:
        for t in self._threads:
            t.start()

    def stop(self) -> None:
        self._stop.set()
        self._announce_q.put(None)
        self._fetchers.shutdown(wait=False, cancel_futures=True)
        for t in self._threads:
            t.join(timeout=5)
        self.client.close()

    # -- queries --------------------------------------------------------------------
    def peer_count(self) -> int:
        return len(self.book.connected())

    def peer_list(self) -> list[dict]:
        return self.book.snapshot()

    def syncing(self) -> bool:
        return self._syncing

    def learn_peer(self, url: str) -> bool:
        return self.book.add(url)

    def penalize(self, peer: str, code: str) -> None:
        if peer in self.book.peers:
            log.warning("banning peer %s for %s", peer, code)
            self.book.ban(peer, code)

    # -- announce ---------------------------------------------------------------------
    def announce(self, header: BlockHeader, exclude: str | None = None) -> None:
        try:
            self._announce_q.put_nowait((header, exclude))
        except queue.Full:
            log.warning("announce queue full; dropping announcement of %s", header.hash[:16])

    def _announcer(self) -> None:
        while not self._stop.is_set():
            item = self._announce_q.get()
            if item is None:
                return
            header, exclude = item
            for p in self.book.usable():
                if p.url == exclude:
                    continue
                try:
                    self.client.announce(p.url, header, self.my_url)
                    self.book.ok(p.url)
                except PeerError as exc:
                    log.debug("announce to %s failed: %s", p.url, exc)
                    self.book.failed(p.url)

    def relay_record(self, record) -> None:
        """Pass a new mempool record (certificate) on to every peer, off the caller's thread."""
        def send():
            for p in self.book.usable():
                try:
                    self.client.send_record(p.url, record.body)
                except PeerError:
                    self.book.failed(p.url)
        try:
            self._fetchers.submit(send)
        except RuntimeError:
            pass

    def on_announcement(self, header: BlockHeader, origin: str) -> None:
        """A peer announced a header we lack: fetch its body in the background."""
        origin = origin.rstrip("/")
        if self.book.is_banned(origin):
            return
        self.book.add(origin)
        self._fetch_async(header.hash, [origin], header)

    def _fetch_async(self, block_hash: str, sources: list[str], header: BlockHeader | None = None) -> bool:
        with self._inflight_lock:
            if block_hash in self._inflight:
                return False
            self._inflight.add(block_hash)
        try:
            self._fetchers.submit(self._fetch_and_submit, block_hash, sources, header)
        except RuntimeError:  # shutting down
            with self._inflight_lock:
                self._inflight.discard(block_hash)
            return False
        return True

    def _fetch_and_submit(self, block_hash: str, sources: list[str], header: BlockHeader | None):
        try:
            for src in sources:
                try:
                    out = self._fetch_from(src, block_hash, header)
                except PeerError as exc:
                    log.info("fetching %s from %s failed: %s", block_hash[:16], src, exc)
                    self.book.failed(src)
                    continue
                if out is not None and out.status == "orphan":
                    self._fetch_async(out_parent(out, self.service), [src])
                if out is not None and out.status != "bad-body":
                    return out
            return None
        finally:
            with self._inflight_lock:
                self._inflight.discard(block_hash)

    def _fetch_from(self, src: str, block_hash: str, header: BlockHeader | None):
        store = self.service.chain.store
        if store.status(block_hash) in ("valid", "invalid"):
            return None
        info = self.client.block(src, block_hash)
        try:
            fetched = BlockHeader.from_dict(info.get("header"))
        except errors.Malformed as exc:
            self.penalize(src, exc.code)
            raise PeerError(f"malformed header: {exc}") from None
        if fetched.hash != block_hash or (header is not None and header.hash != block_hash):
            self.penalize(src, "wrong-block")
            raise PeerError("peer served a different block")
        cap = self.service.spec.limits.max_weights_bytes
        weights = self.client.weights(src, block_hash, cap)
        self.book.ok(src)
        return self.service.submit_remote(fetched, info.get("records") or [], weights, src)

    # -- polling and sync ----------------------------------------------------------------
    def _poller(self) -> None:
        rounds = 0
        while not self._stop.wait(0 if rounds == 0 else self.poll_interval):
            rounds += 1
            for p in self.book.usable():
                try:
                    st = self.client.status(p.url)
                    if st.get("chain_id") != self.service.spec.chain_id:
                        self.book.ban(p.url, "other-chain", 3600)
                        continue
                    self.book.ok(p.url, int(st.get("height", 0)), int(st.get("cumulative_work", 0)))
                except (PeerError, ValueError, TypeError) as exc:
                    log.debug("status of %s failed: %s", p.url, exc)
                    self.book.failed(p.url)
                    continue
                if rounds % 10 == 1:
                    self._exchange_peers(p.url)
                if p.work is not None and p.work > self.service.chain.tip().cumulative_work:
                    self.sync_from(p.url, p.height or 0)
            for parent in self.service.chain.missing_orphan_parents()[:8]:
                peers = [p.url for p in self.book.connected()]
                if peers:
                    self._fetch_async(parent, peers)

    def _exchange_peers(self, url: str) -> None:
        try:
            self.client.introduce(url, self.my_url)
            for info in self.client.peers(url)[:64]:
                u = info.get("url") if isinstance(info, dict) else None
                if isinstance(u, str) and u.startswith(("http://", "https://")) and len(u) < 256:
                    self.book.add(u)
        except PeerError:
            pass

    def sync_from(self, peer: str, target: int) -> None:
        if not self._sync_lock.acquire(blocking=False):
            return
        try:
            self._syncing = target > self.service.chain.tip().height + 1
            self._sync(peer, target)
        except PeerError as exc:
            log.info("sync from %s interrupted: %s", peer, exc)
            self.book.failed(peer)
        finally:
            self._syncing = False
            self._sync_lock.release()

    def _sync(self, peer: str, target: int) -> None:
        chain = self.service.chain
        store = chain.store
        start_height = chain.tip().height
        t0 = time.time()
        # 1. find where the peer's best chain leaves ours: step back until a known parent
        start = max(1, start_height - 10)
        while True:
            batch = self.client.headers(peer, start, HEADER_BATCH)
            if not batch:
                return
            first = BlockHeader.from_dict(batch[0]["header"])
            if store.get(first.parent) is not None or start == 1:
                break
            start = max(1, start - HEADER_BATCH)
        # 2. headers first: validate the header chain before any body
        pending: list[BlockHeader] = []
        while batch:
            for item in batch:
                header = BlockHeader.from_dict(item["header"])
                status = store.status(header.hash)
                if status == "valid":
                    continue
                out = chain.submit(header, item.get("records") or [], None, peer)
                if out.status == "invalid":
                    self.penalize(peer, out.code)
                    return
                if out.status not in ("header-ok", "duplicate"):
                    log.info("sync: header %d from %s not usable: %s", header.height, peer, out.code)
                    return
                pending.append(header)
            last = BlockHeader.from_dict(batch[-1]["header"])
            if len(batch) < HEADER_BATCH:
                break
            batch = self.client.headers(peer, last.height + 1, HEADER_BATCH)
        if not pending:
            return
        log.info("sync: %d headers checked from %s (heights %d..%d); fetching bodies", len(pending), peer,
                 pending[0].height, pending[-1].height)
        # 3. bodies in parallel (bounded window), validated in order
        sources = [peer] + [p.url for p in self.book.connected() if p.url != peer]
        cap = self.service.spec.limits.max_weights_bytes
        with ThreadPoolExecutor(max_workers=min(BODY_WINDOW, 4)) as pool:
            for i in range(0, len(pending), BODY_WINDOW):
                window = pending[i:i + BODY_WINDOW]
                futures = [pool.submit(self._body, sources, h, j, cap) for j, h in enumerate(window)]
                for h, fut in zip(window, futures):
                    records, weights = fut.result()
                    if weights is None:
                        raise PeerError(f"no peer served the body of {h.hash[:16]}")
                    out = self.service.submit_remote(h, records, weights, peer)
                    if out.status == "invalid":
                        self.penalize(peer, out.code)
                        return
                done = min(i + BODY_WINDOW, len(pending))
                rate = done / max(1e-6, time.time() - t0)
                log.info("sync: height %d target %d (%.1f blocks/s)", window[-1].height, target, rate)

    def _body(self, sources: list[str], header: BlockHeader, offset: int, cap: int):
        order = sources[offset % len(sources):] + sources[:offset % len(sources)]
        for src in order:
            try:
                info = self.client.block(src, header.hash)
                return info.get("records") or [], self.client.weights(src, header.hash, cap)
            except PeerError as exc:
                log.debug("body %s from %s: %s", header.hash[:16], src, exc)
        return [], None


def out_parent(out, service) -> str:
    o = service.chain.orphans.get(out.block_hash)
    return o[0].parent if o else out.block_hash
