"""Announce and relay: tell peers about new blocks; fetch the blocks peers announce to us.

* Out: the announcer drains its queue and announces only the queued block with
  the most work, to every usable peer, each in its own lane (p2p/lanes.py): a
  peer that never answers delays nobody else, and a newer announcement replaces
  one still waiting for that peer.
* In: ``POST /blocks`` with a header and ``X-Polchain-Origin``. Only an origin in
  the peer book is fetched from (anyone can name any URL; an unknown origin is
  offered to the handshake and the announcement dropped). The announced header's
  stand-alone rules are checked before dialling; then header and records come
  from the origin, every header rule runs against our chain, and only then are
  the records checked against the header (p2p/fetch.py) and the block handed to
  the node's validation lanes in the origin's lane (``NodeLink.admit``: a stranger
  origin gets one slot per network, as a POSTed block does; no room: the block is
  dropped, and sync or the next announcement brings it). Fetches run in the origin's lane, at most
  ``FETCH_PENDING`` waiting per origin and ``MAX_INFLIGHT`` in all, so a silent
  origin holds one worker, not all of them.
"""
from __future__ import annotations

import logging
import queue
import threading
from enum import StrEnum

from consensus import errors
from consensus.block import BlockHeader
from consensus.difficulty import work
from consensus.errors import Stage, Verdict
from consensus.validation import validate_header, validate_header_standalone

from .addresses import peer_key
from .client import NotFound, PeerError
from .context import Ctx, now_ms
from .fetch import fetch_body
from .lanes import Lanes
from .node_link import INVALID, VALID

log = logging.getLogger("polchain.p2p")


class Announcement(StrEnum):
    """What a node answers a peer that announced a header (POST /blocks with X-Polchain-Origin)."""
    FETCHING = "fetching"          # the block is being fetched from the origin
    NOT_FETCHED = "not-fetched"    # the origin is not a known peer, or it is busy


class Fetched(StrEnum):
    """How fetching one block from one peer ended (``Relay._fetch_from``)."""
    DONE = "done"          # judged here (or known already, or not usable now)
    INVALID = "invalid"    # the peer served something invalid (and was punished for it)
    SYNC = "sync"          # the peer is ahead by more than this block: sync from it
    RETRY = "retry"        # try another peer (a bad body)

MAX_INFLIGHT = 256      # blocks being fetched at once
FETCH_WORKERS = 8
FETCH_PENDING = 4       # fetches waiting per origin
GAP_FILL = 32           # missing ancestors of an announced block fetched by hash from its origin, at most


class Relay:
    def __init__(self, ctx: Ctx, propose):
        self.ctx = ctx
        self.propose = propose                 # offer an unknown origin to the handshake (p2p/exchange.py)
        self.queue: queue.Queue = queue.Queue(maxsize=1000)
        self.out = Lanes("announce", workers=min(64, ctx.cfg.max_peers + 4), max_pending=16)
        self.fetches = Lanes("fetch", workers=FETCH_WORKERS, max_pending=FETCH_PENDING)
        self._inflight: set[str] = set()
        self._lock = threading.Lock()
        self.thread = threading.Thread(target=self._announcer, name="announcer", daemon=True)

    def stop(self) -> None:
        try:
            self.queue.put_nowait(None)
        except queue.Full:
            pass
        self.out.close()
        self.fetches.close()

    # -- out -----------------------------------------------------------------------------------
    def announce(self, header: BlockHeader, exclude: str | None = None) -> None:
        try:
            self.queue.put_nowait((header, exclude))
        except queue.Full:
            log.warning("announce queue full; dropping announcement of %s", header.hash[:16])

    def _announcer(self) -> None:
        while not self.ctx.stop.is_set():
            batch = [self.queue.get()]
            while True:
                try:
                    batch.append(self.queue.get_nowait())
                except queue.Empty:
                    break
            if any(b is None for b in batch) or self.ctx.stop.is_set():
                return
            header, exclude = max(batch, key=lambda item: (self._work(item[0]), item[0].height))
            self._announce_to_all(header, exclude)

    def _work(self, header: BlockHeader) -> int:
        """Cumulative work of a block to announce; one relayed before it is stored (fast relay) counts
        its parent's and its own."""
        node = self.ctx.node
        have = node.work(header.hash)
        return have if have is not None else (node.work(header.parent) or 0) + work(header.difficulty)

    def _announce_to_all(self, header: BlockHeader, exclude: str | None) -> None:
        skip = peer_key(exclude) if exclude else None
        targets = [p for p in self.ctx.book.usable() if p.key != skip and p.tip != header.hash]
        for p in targets:
            self.out.submit(p.key, lambda url=p.url: self._announce_one(url, header), coalesce=True)
        log.debug("announcing %s height %d to %d peers", header.hash[:16], header.height, len(targets))

    def _announce_one(self, url: str, header: BlockHeader) -> None:
        try:
            self.ctx.client.announce(url, header, self.ctx.my_url)
            self.ctx.book.ok(url)
        except PeerError as exc:
            log.debug("announce to %s failed: %s", url, exc)
            self.ctx.book.failed(url)

    def relay_record(self, body: dict) -> None:
        """Pass a new mempool record on to every usable peer (its own lane per peer, never coalesced)."""
        for p in self.ctx.book.usable():
            self.out.submit(p.key + "#records", lambda url=p.url: self._send_record(url, body))

    def _send_record(self, url: str, body: dict) -> None:
        try:
            self.ctx.client.send_record(url, body)
        except PeerError:
            self.ctx.book.failed(url)

    # -- in ------------------------------------------------------------------------------------
    def on_announcement(self, header: BlockHeader, origin: str) -> bool:
        """A header announced by ``origin`` (on the API's event loop: must not block). True when fetching."""
        book = self.ctx.book
        if origin is None or peer_key(origin) in (None, book.own_key) or book.is_banned(origin):
            return False
        peer = book.get(origin)
        if peer is None:
            self.propose(origin, "announced")
            return False
        return self.fetch_async(header.hash, [peer.url], header)

    def fetch_async(self, block_hash: str, sources: list[str], announced: BlockHeader | None = None) -> bool:
        with self._lock:
            if block_hash in self._inflight or len(self._inflight) >= MAX_INFLIGHT:
                return False
            self._inflight.add(block_hash)
        if self.fetches.submit(peer_key(sources[0]) or sources[0],
                               lambda: self._fetch_block(block_hash, sources, announced)):
            return True
        self._release(block_hash)
        return False

    def _release(self, block_hash: str) -> None:
        with self._lock:
            self._inflight.discard(block_hash)

    def _fetch_block(self, block_hash: str, sources: list[str], announced: BlockHeader | None) -> None:
        try:
            if announced is not None:
                # a cheap look before dialling anyone; not attributed to the origin (anyone can POST it)
                try:
                    validate_header_standalone(announced, self.ctx.spec, now_ms())
                except errors.BlockError as exc:
                    log.info("dropping announcement of %s: %s", block_hash[:16], exc)
                    return
            for src in sources:
                if self.ctx.stop.is_set() or self.ctx.node.status(block_hash) in (VALID, INVALID):
                    return
                if self.ctx.book.is_banned(src):
                    continue
                if self.ctx.book.waiting(src) and not (announced is not None and src == sources[0]):
                    continue    # in backoff; but an origin that has just announced to us is up
                try:
                    if self._fetch_from(src, block_hash) != Fetched.RETRY:
                        return
                except NotFound:
                    continue
                except PeerError as exc:
                    log.info("fetching %s from %s failed: %s", block_hash[:16], src, exc)
                    self.ctx.book.failed(src)
        finally:
            self._release(block_hash)

    def _fetch_from(self, src: str, block_hash: str, fill: bool = True) -> Fetched:
        """Header, then body, from one peer: done | invalid | sync | retry (try another peer). ``fill``:
        a parent missing here is first fetched by hash from ``src`` (``_fill_gap``)."""
        ctx = self.ctx
        info = ctx.client.block(src, block_hash)
        try:
            header = BlockHeader.from_dict(info.get("header"))
        except errors.Malformed as exc:
            ctx.punish(src, Verdict.INVALID, Stage.HEADER, exc.code)
            return Fetched.INVALID
        if header.hash != block_hash:
            ctx.punish(src, Verdict.INVALID, Stage.HEADER, "wrong-block")
            return Fetched.INVALID
        if ctx.node.status(block_hash) in (VALID, INVALID):
            return Fetched.DONE
        try:
            validate_header(header, ctx.spec, ctx.node.headers(), now_ms())
        except (errors.UnknownParent, LookupError):
            if fill and self._fill_gap(src, header):
                return self._fetch_from(src, block_hash, fill=False)
            ctx.request_sync(src, header.height)     # the peer is ahead by more than this block
            return Fetched.SYNC
        except errors.Ignored as exc:
            log.info("ignoring %s from %s for now: %s", block_hash[:16], src, exc.code)
            return Fetched.DONE
        except errors.InvalidBlock:
            ctx.node.submit_header(header, src)   # records the verdict, bans src
            return Fetched.INVALID
        try:
            block = fetch_body(ctx.client, src, header, info)
        except errors.BadBody as exc:
            log.info("bad body for %s from %s: %s", block_hash[:16], src, exc.code)
            ctx.book.bad_body(src)
            return Fetched.RETRY
        ctx.book.ok(src)
        out = ctx.node.admit(block, src)      # in the origin's lane, like a POSTed block
        if out.status == Verdict.ACCEPTED:
            ctx.book.served_block(src)
        elif out.status == Verdict.BAD_BODY:
            ctx.book.bad_body(src)
            return Fetched.RETRY
        elif out.status == Verdict.IGNORED:
            log.info("%s from %s not judged: %s (%s)", block_hash[:16], src, out.code, out.detail)
        elif out.status == Verdict.ORPHAN:      # its parent's body is not validated yet
            if fill and self._fill_gap(src, header):
                return self._fetch_from(src, block_hash, fill=False)
            ctx.request_sync(src, header.height)
            return Fetched.SYNC
        return Fetched.DONE

    def _fill_gap(self, src: str, header: BlockHeader) -> bool:
        """The parent of an announced block is missing here (or only its header is): fetch the missing
        ancestors by hash from the origin, up to GAP_FILL, and validate them oldest first. Whether the
        block's parent is valid here now.

        Sync reads a peer's *best* chain, so it cannot get a branch the peer is still replaying (after a
        partition heals, a node relays each block of the heavier branch once its work is checked, long
        before that branch carries more work than its tip); an announcement skipped on the way (the
        announcer sends only the queued block with the most work) left every later one parentless
        until the upstream node's tip moved, and each hop then replayed the whole branch in turn
        (issue 20.2). Each ancestor passes the header rules against our chain and is validated in full
        before the next; anything else ends the walk and leaves it to sync."""
        ctx, node = self.ctx, self.ctx.node
        missing: list[tuple[BlockHeader, dict]] = []
        parent = header.parent
        try:
            for _ in range(GAP_FILL):
                st = node.status(parent)
                if st == VALID:
                    break
                if st == INVALID or ctx.stop.is_set():
                    return False
                info = ctx.client.block(src, parent)
                try:
                    h = BlockHeader.from_dict(info.get("header"))
                except errors.Malformed:
                    return False
                if h.hash != parent or h.height != header.height - len(missing) - 1:
                    return False
                missing.append((h, info))
                parent = h.parent
            else:
                return False                  # a longer gap: sync's job
            if not missing:
                return True
            log.info("fetching %d missing ancestor(s) of %s (heights %d..%d) from %s", len(missing),
                     header.hash[:16], missing[-1][0].height, missing[0][0].height, src)
            for h, info in reversed(missing):
                validate_header(h, ctx.spec, node.headers(), now_ms())
                out = node.admit(fetch_body(ctx.client, src, h, info), src)
                if out.status not in (Verdict.ACCEPTED, Verdict.DUPLICATE):
                    return False
                ctx.book.served_block(src)
        except (errors.BlockError, LookupError, PeerError) as exc:
            log.info("filling the gap below %s from %s stopped: %s", header.hash[:16], src, exc)
            return False
        return True
