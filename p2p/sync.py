"""Headers-first sync from a peer with more work (docs/p2p.md, "Headers-first sync").

Find where the peer's best chain leaves ours, fetch its headers in bounded
batches and run the header rules on each through the node (stored header-only),
then fetch the bodies from several peers within a window and validate them in
order (p2p/bodies.py). The fork is searched down to a *validated* parent: a
header-only parent is no anchor (its body is still missing), so a branch whose
headers we already stored is synced from its first unvalidated block instead of
stalling on ``parent-not-validated``.
"""
from __future__ import annotations

import logging
import threading
import time

from consensus import errors
from consensus.block import Block, BlockHeader
from consensus.errors import Stage, Verdict

from .bodies import Bodies
from .client import PeerError, TooLarge
from .context import Ctx
from .node_link import INVALID, VALID

log = logging.getLogger("polchain.p2p")

HEADER_BATCH = 100          # headers per GET /blocks request (halved when a reply passes the size cap)
MAX_SYNC_HEADERS = 500      # headers checked per round before their bodies are fetched
MAX_ASSUME_HEADERS = 20000  # ... while looking for the assume-valid block
SYNC_GAP = 3                # blocks behind before /status says "syncing"
SYNC_RETRY_MAX = 60.0       # longest pause before syncing again from a peer that brought nothing
BEHIND_GRACE_S = 3.0     # a peer ahead for longer than this stops our miner until we have synced


class Syncer:
    def __init__(self, ctx: Ctx, announce):
        self.ctx = ctx
        self.bodies = Bodies(ctx, announce, self)
        self.syncing = False
        self.progress: dict = {}
        self._lock = threading.Lock()
        # peer -> (not before, last delay, the work it claimed when it last brought nothing)
        self._retry: dict[str, tuple[float, float, int]] = {}
        self._batch = HEADER_BATCH
        self._ahead_since: dict[str, float] = {}   # peer -> when we first saw it claim more work than our tip
        self.thread = threading.Thread(target=self._run, name="syncer", daemon=True)

    def stop(self) -> None:
        self.ctx.wake_sync.set()
        self.bodies.stop()

    def _run(self) -> None:
        ctx = self.ctx
        while not ctx.stop.is_set():
            ctx.wake_sync.wait(ctx.cfg.poll_interval)
            ctx.wake_sync.clear()
            if ctx.stop.is_set():
                return
            try:
                self._round()
            except Exception:
                if ctx.stop.is_set():
                    return
                log.exception("sync round failed")

    def _due(self, url: str, now: float) -> bool:
        """Whether to sync from ``url`` now: not in backoff, or it claims more work (our own poll of its
        /status) than when it last brought nothing. After a partition heals, the next hop asks a node
        that is still replaying the heavier branch (its best chain has not moved yet: nothing to get) and
        backs off; when that node's tip moves, the next poll sees the new work and the sync starts then,
        not when the backoff (up to a minute) runs out (issue 20.2)."""
        not_before, _, claimed = self._retry.get(url, (0.0, 0.0, 0))
        if not_before <= now:
            return True
        peer = self.ctx.book.get(url)
        return peer is not None and peer.work is not None and peer.work > claimed

    def reset_backoff(self) -> None:
        """Forget every peer's backoff and sync at once (the store writes again: the syncs that failed
        meanwhile failed on our side, not the peers')."""
        self._retry.clear()
        self.ctx.wake_sync.set()

    def behind(self) -> str | None:
        """A usable peer that claims more work than our tip, two blocks or more above it or one block for
        BEHIND_GRACE_S (a block in flight between two nodes is not "behind"), unless a sync from it brought
        nothing lately (while its backoff runs, 2 s doubling to a minute: a false claim, however it grows,
        pauses our miner for one sync attempt per backoff); None when there is none. While one is, the node
        syncs and does not mine on a tip it knows to be beaten."""
        tip, now = self.ctx.node.tip(), time.monotonic()
        ahead = [p for p in self.ctx.book.usable() if p.work is not None and p.work > tip.work]
        self._ahead_since = {p.url: self._ahead_since.get(p.url, now) for p in ahead}
        for p in ahead:
            not_before, _, claimed = self._retry.get(p.url, (0.0, 0.0, 0))
            if not_before > now or claimed >= p.work:
                continue
            if (p.height or 0) >= tip.height + 2 or now - self._ahead_since[p.url] >= BEHIND_GRACE_S:
                return p.url
        return None

    def _round(self) -> None:
        ctx, now, tried = self.ctx, time.monotonic(), set()
        for url, target in sorted(ctx.take_sync_hints().items(), key=lambda kv: -kv[1]):
            if not ctx.book.is_banned(url) and self._due(url, now):
                tried.add(url)
                self._sync_with_retry(url, target)
        mine = ctx.node.tip().work
        for p in sorted((p for p in ctx.book.usable() if p.work and p.work > mine and p.url not in tried
                         and self._due(p.url, now)), key=lambda p: -p.work)[:3]:
            self._sync_with_retry(p.url, p.height or 0)
            if ctx.node.tip().work >= p.work:
                break

    def _sync_with_retry(self, url: str, target: int) -> None:
        """A sync that brings nothing (no bodies, a stale claim) is not retried with that peer at once:
        2 s, 4 s, ... up to a minute, so an unhelpful peer cannot keep us busy; unless our poll finds it
        claiming more work than it did (``_due``: at most once per poll of it, so still bounded)."""
        before = self.ctx.node.tip().work
        self.sync_from(url, target)
        after = self.ctx.node.tip().work
        peer = self.ctx.book.get(url)
        if after > before or (peer is not None and peer.work is not None and after >= peer.work):
            self._retry.pop(url, None)     # progress, or nothing left to get from it
        else:
            delay = min(SYNC_RETRY_MAX, 2 * self._retry.get(url, (0, 1.0, 0))[1])
            claimed = peer.work if peer is not None and peer.work is not None else 0
            self._retry[url] = (time.monotonic() + delay, delay, claimed)
            if len(self._retry) > 1024:
                self._retry.clear()

    def sync_from(self, peer: str, target: int) -> int:
        """Catch up from ``peer`` (headers first). Returns the number of blocks accepted."""
        if not self._lock.acquire(blocking=False):
            return 0
        try:
            return self._sync(peer, target)
        except PeerError as exc:
            log.info("sync from %s interrupted: %s", peer, exc)
            self.ctx.book.failed(peer)
            return 0
        finally:
            self.syncing = False
            self.progress = {}
            self._lock.release()

    def _sync(self, peer: str, target: int) -> int:
        node, tip, t0 = self.ctx.node, self.ctx.node.tip(), time.monotonic()
        if target - tip.height >= SYNC_GAP:
            self.syncing = True
            log.info("sync: from %s, our height %d, peer's height %d; headers first", peer, tip.height, target)
        self.progress = {"peer": peer, "height": tip.height, "target": target, "start": tip.height}
        self._batch = HEADER_BATCH
        start, batch = self._find_fork(peer, tip.height, target)
        accepted = 0
        while not self.ctx.stop.is_set():
            got = self._collect_headers(peer, start, batch)
            if got is None or not got[0]:
                break
            pending, more = got
            last_work = node.work(pending[-1].header.hash)
            if not more and last_work is not None and last_work <= node.tip().work:
                log.info("sync: %s's headers up to height %d carry no more work than our tip", peer,
                         pending[-1].header.height)
                break
            target = max(target, pending[-1].header.height)
            log.info("sync: %d headers checked from %s (heights %d..%d); fetching bodies", len(pending), peer,
                     pending[0].header.height, pending[-1].header.height)
            n, ok = self.bodies.fetch(peer, pending, target, t0, accepted)
            accepted += n
            if not ok or not more:
                break
            start, batch = pending[-1].header.height + 1, None
        if accepted:
            dt, tip = time.monotonic() - t0, node.tip()
            log.info("sync: done at height %d target %d, %d blocks in %.1fs (%.1f blocks/s) from %s",
                     tip.height, target, accepted, dt, accepted / max(dt, 1e-6), peer)
        return accepted

    def _headers(self, peer: str, start: int) -> list[dict]:
        while True:
            try:
                return self.ctx.client.headers(peer, start, self._batch)
            except TooLarge:
                if self._batch > 10:
                    self._batch //= 2
                    continue
                raise

    def _parse(self, peer: str, item) -> BlockHeader | None:
        try:
            return BlockHeader.from_dict(item.get("header") if isinstance(item, dict) else None)
        except errors.Malformed as exc:
            self.ctx.punish(peer, Verdict.INVALID, Stage.HEADER, exc.code)
            return None

    def _find_fork(self, peer: str, tip_height: int, target: int) -> tuple[int, list[dict]]:
        """The first height of the peer's best chain whose parent we have validated (or know to be invalid),
        and the batch from there."""
        top, back = max(1, min(tip_height, target) - 6), 0
        for _ in range(32):
            start = max(1, top - back)
            batch = self._headers(peer, start)
            if not batch:
                return start, []
            first = self._parse(peer, batch[0])
            if first is None:
                raise PeerError("malformed header")
            if self.ctx.node.status(first.parent) in (VALID, INVALID):
                return start, batch
            if start == 1:
                raise PeerError("the peer's chain does not start at our genesis")
            back = max(8, back * 4)
        raise PeerError("could not find where the peer's chain leaves ours")

    def _collect_headers(self, peer: str, start: int, batch: list[dict] | None):
        """Check the peer's headers from ``start``; (pending blocks (the records as the peer sent them),
        more?) or None (banned)."""
        node, ctx = self.ctx.node, self.ctx
        pending: list[Block] = []
        prev: str | None = None
        limit = MAX_SYNC_HEADERS
        if self.bodies.assume_valid and node.status(self.bodies.assume_valid) != VALID:
            limit = MAX_ASSUME_HEADERS
        while True:
            if batch is None:
                batch = self._headers(peer, start)
            blocks: list[Block] = []
            for i, item in enumerate(batch):
                header = self._parse(peer, item)
                if header is None:
                    return None
                if header.height != start + i or (prev is not None and header.parent != prev):
                    log.info("sync: %s's chain changed under us at height %d; retrying later", peer, start + i)
                    break
                records = item.get("records")
                blocks.append(Block(header, records if isinstance(records, list) else []))
                prev = header.hash
            # the header rules on the whole batch, stored in one transaction; a bad header ends it
            outs = node.submit_headers([b.header for b in blocks], peer)
            for block, out in zip(blocks, outs):
                header = block.header
                if out.status == Verdict.INVALID:
                    ctx.punish(peer, out.status, out.stage, out.code)
                    return None
                if out.status == Verdict.HEADER_OK:          # stored header-only: its body is to fetch
                    pending.append(block)
                elif out.status != Verdict.DUPLICATE:
                    log.info("sync: header %d from %s not usable now: %s %s", header.height, peer, out.code,
                             out.detail)
                    return pending, False
                elif node.status(header.hash) == INVALID:
                    ctx.punish(peer, Verdict.INVALID, Stage.HEADER, "invalid-chain")
                    return None
            if len(blocks) < len(batch):
                return pending, False
            more = len(batch) >= self._batch
            if not more or len(pending) >= limit:
                return pending, more
            start, batch = start + len(batch), None
