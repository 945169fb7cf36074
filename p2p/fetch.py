"""Block bodies and post-states from peers: the one place that downloads them and checks them.

Under protocol v3 a block's body is its records (``records_root``); a block carries
no weights. ``fetch_body`` downloads the records from one peer and checks only the
commitment, on the raw JSON, before anything is parsed: a mismatch is the peer's
fault (``consensus.errors.BadBody``: a failure, never a ban, never held against
the header), while records that *do* match the root are judged by the node (an
invalid committed record makes the block invalid). A peer that holds the block
header-only (its own sync is behind) lacks the body; it is not lying.
``fetch_from_any`` asks several peers in turn (announcements, sync);
``fetch_state`` gets a block's post-state for snapshot sync, checked against the
header's ``state_hash``.
"""
from __future__ import annotations

import logging
import threading
import time

from consensus import errors
from consensus.block import Block, BlockHeader
from consensus.weights import decode_state, weights_hash

from .client import NotFound, PeerClient, PeerError
from .node_link import HEADER_ONLY, NodeLink
from .peers import PeerBook

log = logging.getLogger("polchain.p2p")


class NoBody(Exception):
    """No peer asked served the records (they are never pruned: the peers lacked the block,
    or failed)."""

    def __init__(self, block_hash: str, failed: list[str]):
        super().__init__(f"no peer served the body of {block_hash[:16]} (failed at {failed or 'none'})")
        self.failed = failed


class Lacking(NotFound):
    """The peer has the block's header only."""


def fetch_body(client: PeerClient, src: str, header: BlockHeader, block_json: dict | None = None) -> Block:
    """The block of ``header`` with the records from ``src``, matching the header's ``records_root``.

    ``block_json``: the peer's ``GET /blocks/{hash}`` answer when already fetched. Raises
    ``errors.BadBody`` (records not matching the header), ``NotFound`` (``Lacking`` when the peer
    has the header only) or ``PeerError``."""
    info = client.block(src, header.hash) if block_json is None else block_json
    if info.get("status") == HEADER_ONLY:
        raise Lacking(f"{src} has {header.hash[:16]} header-only")
    return Block.from_wire(header, info.get("records"))


def fetch_from_any(client: PeerClient, book: PeerBook, sources: list[str], header: BlockHeader, index: int,
                   stop: threading.Event) -> tuple[str, Block]:
    """(source, block) from the first of ``sources`` (rotated by ``index``, peers in backoff last)
    that serves records matching ``header``; raises NoBody when none does."""
    n = len(sources)
    order = sources[index % n:] + sources[:index % n]
    now = time.time()
    fresh = [s for s in order if (p := book.get(s)) is None or p.next_try <= now]
    order = fresh + [s for s in order if s not in fresh]
    failed = []
    for src in order:
        if stop.is_set():
            break
        if book.is_banned(src):
            continue
        try:
            return src, fetch_body(client, src, header)
        except errors.BadBody as exc:
            log.info("bad body for %s from %s: %s", header.hash[:16], src, exc.code)
            book.bad_body(src)
            failed.append(src)
        except NotFound:
            pass                                 # lacks the block, or has its header only: no fault
        except PeerError as exc:
            # slow, unreachable or over a cap: drop it for a while, the next peer gets the work
            log.info("body %s from %s: %s", header.hash[:16], src, exc)
            book.failed(src)
            failed.append(src)
    raise NoBody(header.hash, failed)


def fetch_state(client: PeerClient, book: PeerBook, node: NodeLink, sources: list[str], header: BlockHeader,
                cap: int, stop: threading.Event) -> bool:
    """Snapshot: the post-state of ``header`` from the first peer whose file hashes to the header's
    ``state_hash`` (the header chain above it was checked first), handed to the node to keep."""
    if node.has_state(header.state_hash):
        return True
    for src in sources:
        if stop.is_set() or book.is_banned(src):
            continue
        try:
            data = client.state(src, header.hash, cap)
            ok = weights_hash(decode_state(data)) == header.state_hash
        except (PeerError, errors.BlockError) as exc:
            log.info("state of %s from %s: %s", header.hash[:16], src, exc)
            continue
        if not ok:
            log.info("state of %s from %s does not hash to the header's state_hash", header.hash[:16], src)
            book.bad_body(src)
            continue
        node.put_state(header.state_hash, data)
        log.info("snapshot: post-state of block %d (%s) from %s", header.height, header.hash[:16], src)
        return True
    return False
