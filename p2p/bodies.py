"""Bodies during sync: downloaded ahead of the validator, validated strictly in chain order.

``BODY_WINDOW`` bodies are fetched ahead by ``BODY_WORKERS`` workers, spread over
the sync peer and every connected peer (block *i* goes first to peer *i mod n*;
p2p/fetch.py moves on to the next peer when one is slow, lacks the body or
serves a bad one). Assume-valid, i.e. snapshot sync (``--assume-valid HASH``):
once HASH's post-state has come from a peer and matched its header's
``state_hash``, blocks up to and including HASH on a header chain that passed
the header rules are accepted without replaying their proofs, and the node says
so; without that post-state every block is validated.
"""
from __future__ import annotations

import logging
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor

from consensus.errors import Verdict

from .context import Ctx
from .fetch import NoBody, fetch_from_any, fetch_state

log = logging.getLogger("polchain.p2p")

BODY_WINDOW = 8             # bodies downloaded ahead of the validator
BODY_WORKERS = 4            # parallel body downloads
PROGRESS_EVERY = 2.0        # seconds between sync progress lines


class Bodies:
    def __init__(self, ctx: Ctx, announce, progress_owner):
        self.ctx = ctx
        self.announce = announce
        self.owner = progress_owner          # has ``progress`` (a dict shown in /status)
        av = ctx.cfg.assume_valid
        self.assume_valid: str | None = av.lower() if av else None
        self.pool = ThreadPoolExecutor(max_workers=BODY_WORKERS, thread_name_prefix="body")

    def stop(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)

    def _sources(self, peer: str) -> list[str]:
        return [peer] + [p.url for p in self.ctx.book.connected() if p.url != peer]

    def _fetch(self, sources: list[str], header, index: int):
        return fetch_from_any(self.ctx.client, self.ctx.book, sources, header, index, self.ctx.stop)

    def fetch(self, peer: str, pending: list, target: int, t0: float, done_before: int) -> tuple[int, bool]:
        """Bodies for ``pending`` (blocks whose headers passed, records not yet fetched) in chain order;
        (accepted, go on?)."""
        ctx, accepted = self.ctx, 0
        sources = self._sources(peer)
        hashes = [b.hash for b in pending]
        if self.assume_valid and self.assume_valid in hashes:
            cut = hashes.index(self.assume_valid) + 1
            if fetch_state(ctx.client, ctx.book, ctx.node, sources, pending[cut - 1].header,
                           ctx.spec.limits.max_weights_bytes, ctx.stop):
                n, ok = self._accept_assumed(peer, pending[:cut])
                accepted += n
                if not ok:
                    return accepted, False
                pending = pending[cut:]
            else:
                # nothing was assumed yet: every block, the checkpoint's included, gets validated
                log.warning("snapshot: no peer served the post-state of checkpoint %s; validating from genesis "
                            "instead", self.assume_valid[:16])
                self.assume_valid = None
        window: deque = deque()
        todo = iter(enumerate(pending))
        last_log = time.monotonic()

        def fill() -> None:
            while len(window) < BODY_WINDOW:
                try:
                    i, b = next(todo)
                except StopIteration:
                    return
                window.append((b.header, self.pool.submit(self._fetch, sources, b.header, i)))

        try:
            fill()
            while window and not ctx.stop.is_set():
                header, fut = window.popleft()
                try:
                    src, block = fut.result()
                except NoBody as exc:
                    log.info("sync: %s", exc)
                    return accepted, False
                out = ctx.node.submit(block, src)
                if out.status == Verdict.INVALID:
                    if src != peer:          # the peer whose headers led here answers for them too
                        ctx.punish(peer, out.status, out.stage, out.code)
                    return accepted, False
                if out.status not in (Verdict.ACCEPTED, Verdict.DUPLICATE):
                    log.info("sync: block %d (%s) from %s: %s %s", header.height, header.hash[:16], src,
                             out.status, out.code)
                    return accepted, False
                ctx.book.served_block(src)
                accepted += 1
                now = time.monotonic()
                self.owner.progress.update(height=header.height, target=target)
                if now - last_log >= PROGRESS_EVERY or not window:
                    last_log = now
                    rate = (done_before + accepted) / max(now - t0, 1e-6)
                    log.info("sync: height %d target %d (%.1f blocks/s)", header.height, target, rate)
                fill()
            return accepted, not ctx.stop.is_set()
        finally:
            for _, fut in window:
                fut.cancel()

    def _accept_assumed(self, peer: str, items: list) -> tuple[int, bool]:
        """assume-valid (snapshot sync): blocks up to the checkpoint, accepted on their (already checked)
        headers, once the checkpoint's post-state is stored (fetched and checked against its state_hash)."""
        n = 0
        for block, out in zip(items, self.ctx.node.accept_assumed(items, peer)):
            header = block.header
            if out.status not in (Verdict.ACCEPTED, Verdict.DUPLICATE):
                log.warning("assume-valid: block %d (%s) not accepted: %s %s", header.height, header.hash[:16],
                            out.code, out.detail)
                return n, False
            n += 1
        if items:
            log.warning("assume-valid: accepted %d blocks (heights %d..%d, checkpoint %s) on header checks "
                        "alone; their proofs were not replayed", n, items[0].header.height, items[-1].header.height,
                        self.assume_valid[:16])
            self.announce(items[-1].header)
        return n, True
